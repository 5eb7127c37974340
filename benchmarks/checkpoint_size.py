"""Bytes a run writes per checkpoint, for an experiment's model: best.pt and last.pt as merx
writes them (frozen towers left out) against the whole state_dict that best.pt held before.

    python benchmarks/checkpoint_size.py experiments/quickstart.toml

Builds the model (pretrained towers loaded), takes one optimizer step on a generated batch so
that Adam's moments exist, then writes the checkpoints into a temporary folder and prints sizes.
No data is read."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    args = parser.parse_args(argv)

    import torch

    from merx.checkpoints import RunCheckpoints, save_checkpoint
    from merx.config import load
    from merx.dry_run import sample_batch
    from merx.pipeline import as_experiment, build
    from merx.plugins import get_registry
    from merx.train import Trainer, loss_fn

    cfg = load(args.experiment)
    exp = as_experiment(cfg)
    model = build(exp, get_registry())
    batch = sample_batch(model, exp, 2)
    batch["target"] = torch.zeros(2, dtype=torch.long) if exp.task == "classification" else torch.zeros(2, 2)
    trainer = Trainer(model, [batch], [batch], exp.train, exp.task, torch.device("cpu"), progress=False)
    loss_fn(exp.task, model(batch), batch["target"]).backward()
    trainer.optimizer.step()
    trainer.history = [{"val_loss": 1.0}]
    with tempfile.TemporaryDirectory() as folder:
        ckpt = RunCheckpoints(folder, extra={"ref_power": 1.0, "config": cfg})
        sizes = {
            "whole state_dict (best.pt before)": os.path.getsize(save_checkpoint(
                {"model": model.state_dict(), "config": cfg, "best_epoch": 1}, Path(folder) / "whole.pt")),
            "best.pt (frozen towers left out)": os.path.getsize(ckpt.save_best(model, 1)),
            "last.pt (+ optimizer, RNG, history)": os.path.getsize(ckpt.save_last(trainer.state_dict())),
        }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"{args.experiment}: {total:,} parameters, {trainable:,} trainable")
    for name, size in sizes.items():
        print(f"  {name:<40} {size / 2**20:8.2f} MiB")


if __name__ == "__main__":
    sys.exit(main())
