"""Parameter counts per part of a model, for ``merx run --dry-run``."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

PARTS = (("audio", "audio_tower"), ("text", "text_tower"), ("fusion", "fusion"), ("head", "head"))


class ParamRow(NamedTuple):
    part: str        # audio, text, fusion, head, or total
    module: str      # the part's class name ("" for the total)
    total: int
    trainable: int


def _count(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def parameter_counts(model: nn.Module) -> list[ParamRow]:
    """One row per part present in the model (audio, text, fusion, head), then the total.

    A model without those parts (any other module) gets a single row for itself and the total."""
    rows = []
    for part, attr in PARTS:
        module = getattr(model, attr, None)
        if isinstance(module, nn.Module):
            rows.append(ParamRow(part, type(module).__name__, *_count(module)))
    if not rows:
        rows.append(ParamRow("model", type(model).__name__, *_count(model)))
    # Counted over the whole model, so a parameter shared by two parts counts once.
    rows.append(ParamRow("total", "", *_count(model)))
    return rows
