"""Layers shared by towers, fusions and plugins: masked averaging and the seed's feature gate.

``masked_mean`` is public (``merx.api.masked_mean``); the built-in fusions and towers use both.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x [B, T, D]`` over the tokens where ``mask [B, T]`` is True (all if None)."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    # clamp: a row without any real token gives zeros instead of NaN.
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class FeatureGate(nn.Module):
    """The seed notebooks' "AttentionModule": ``x * sigmoid(MLP(x))``, one weight per feature.

    MLP = Linear(dim -> dim // reduction) -> ReLU -> Linear(-> dim). It re-weights the features
    of one vector; it does not attend over tokens."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        if reduction < 1 or dim // reduction < 1:
            raise ValueError(f"feature gate: reduction {reduction} must be between 1 and the "
                             f"vector size {dim}")
        self.attention = nn.Sequential(
            nn.Linear(dim, dim // reduction), nn.ReLU(), nn.Linear(dim // reduction, dim), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
