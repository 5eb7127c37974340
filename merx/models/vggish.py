"""The seed's "VGGish" audio tower: a VGG-style CNN on the mel spectrogram, trained from scratch.

Not Google's pretrained VGGish: the notebooks borrowed the name for their own small VGG."""

from __future__ import annotations

import torch
from torch import nn

from merx.models.layers import FeatureGate
from merx.models.outputs import TowerOutput

ATTENTION_PLACES = ("none", "hidden", "output")


def _conv(cin: int, cout: int, batchnorm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size=3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class VGGishTower(nn.Module):
    """Conv blocks -> pooled vector (``out_dim``) and time-frequency tokens (``seq_dim``).

    Each block has ``convs_per_block`` 3x3 convs (conv -> BatchNorm -> ReLU); every block but the
    last ends in MaxPool 2x2, the last in AdaptiveAvgPool 1x1. Then Dropout -> Linear(C_last ->
    hidden) -> ReLU -> Dropout -> [gate] -> Linear(hidden -> out_dim). ``attention`` places the
    seed's feature gate: "hidden" on the hidden vector (where the notebooks apply it), "output"
    on the output vector (where the code review describes it), or "none" (MODEL_2).

    The token sequence is the last block's feature map before the average pool, one token per
    (frequency, time) cell: ``[B, H'*W', C_last]``, every token real."""

    def __init__(self, n_mels: int, n_frames: int, channels=(64, 128, 256, 512), convs_per_block: int = 1,
                 batchnorm: bool = True, attention: str = "none", dropout: float = 0.5,
                 hidden: int = 256, out_dim: int = 64, reduction: int = 4):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"vggish: channels must be a non-empty list of positive sizes, got {channels}")
        if convs_per_block < 1:
            raise ValueError(f"vggish: convs_per_block must be at least 1, got {convs_per_block}")
        if attention not in ATTENTION_PLACES:
            raise ValueError(f"vggish: attention must be one of {', '.join(ATTENTION_PLACES)}; "
                             f"got {attention!r}")
        shrink = 2 ** (len(channels) - 1)
        if n_mels < shrink or n_frames < shrink:
            raise ValueError(f"vggish: a {n_mels}x{n_frames} spectrogram is too small for "
                             f"{len(channels)} blocks ({len(channels) - 1} halvings need at least "
                             f"{shrink} mels and frames); use fewer channels or more mels/frames")

        blocks = []
        cin = 1
        for i, cout in enumerate(channels):
            layers = _conv(cin, cout, batchnorm)
            for _ in range(convs_per_block - 1):
                layers += _conv(cout, cout, batchnorm)
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

        hidden_gate = FeatureGate(hidden, reduction) if attention == "hidden" else nn.Identity()
        output_gate = FeatureGate(out_dim, reduction) if attention == "output" else nn.Identity()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            hidden_gate, nn.Linear(hidden, out_dim), output_gate,
        )
        self.out_dim = out_dim
        self.seq_dim = cin

    def forward(self, mel: torch.Tensor) -> TowerOutput:
        fmap = self.features(mel)                     # [B, C, H', W']
        pooled = self.classifier(self.pool(fmap).flatten(1))
        tokens = fmap.flatten(2).transpose(1, 2)      # [B, H'*W', C]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TowerOutput(pooled, tokens, mask)
