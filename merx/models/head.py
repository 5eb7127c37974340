"""The prediction head on the fused vector."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """For each hidden size: Dropout -> Linear -> ReLU; then Dropout -> Linear(out_dim).

    The default is the notebooks' head: Dropout 0.5 -> Linear(in -> 100) -> ReLU -> Dropout 0.5
    -> Linear(100 -> out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden=(100,), dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        size = in_dim
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(size, int(h)), nn.ReLU(inplace=True)]
            size = int(h)
        layers += [nn.Dropout(dropout), nn.Linear(size, out_dim)]
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
