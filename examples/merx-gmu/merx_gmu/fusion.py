"""The gated multimodal unit as a torch module (imported only when merx builds a model)."""

import torch
from torch import nn

from merx.api import TowerOutput


class GatedMultimodalUnit(nn.Module):
    """out = z * tanh(W_a a) + (1 - z) * tanh(W_t t), z = sigmoid(W_z [a; t]), on pooled vectors."""

    # Pooled vectors only: a frozen text tower's token sequences need not be kept.
    needs_sequence = False

    def __init__(self, audio_dim: int, text_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__()
        if dim < 1:
            raise ValueError(f"gmu: dim must be at least 1, got {dim}")
        self.audio = nn.Linear(audio_dim, dim)
        self.text = nn.Linear(text_dim, dim)
        self.gate = nn.Linear(audio_dim + text_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = dim

    def forward(self, audio: TowerOutput, text: TowerOutput) -> torch.Tensor:
        a, t = audio.pooled, text.pooled
        z = torch.sigmoid(self.gate(torch.cat((a, t), dim=1)))
        return self.dropout(z * torch.tanh(self.audio(a)) + (1 - z) * torch.tanh(self.text(t)))
