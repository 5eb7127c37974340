"""The optimizer (one parameter group per part of the model, each with its learning rate) and its scheduler."""

from __future__ import annotations

import torch

from merx.config import LR_PARTS
from merx.config.settings import LearningRates, SchedulerSettings


def build_optimizer(model: torch.nn.Module, lr: LearningRates, optimizer: str = "adam",
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam or AdamW with one parameter group per non-empty part, each with its own lr."""
    parts = model.parts()
    unknown = sorted(set(parts) - set(LR_PARTS))
    if unknown:
        raise ValueError(f"model.parts() has unknown parts {unknown}; use {', '.join(LR_PARTS)}")
    groups = [{"name": part, "params": list(parts[part]), "lr": lr.of(part)}
              for part in LR_PARTS if parts.get(part)]
    if not groups:
        raise ValueError("model.parts() lists no trainable parameters: there is nothing to train")
    # A trainable parameter outside every part would silently never change.
    grouped = {id(p) for g in groups for p in g["params"]}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
    if missing:
        raise ValueError(f"{len(missing)} trainable parameters are in no part of model.parts() "
                         f"(e.g. {', '.join(missing[:3])}): add them to a part, or freeze them "
                         "with requires_grad_(False)")
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {optimizer!r}: expected {' or '.join(optimizers)}")
    return optimizers[optimizer](groups, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, scheduler: SchedulerSettings, epochs: int):
    """StepLR, CosineAnnealingLR over all ``epochs``, or None; stepped once per epoch."""
    if scheduler.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=scheduler.step_size, gamma=scheduler.gamma)
    if scheduler.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if scheduler.name == "none":
        return None
    raise ValueError(f"unknown scheduler {scheduler.name!r}: expected step, cosine or none")
