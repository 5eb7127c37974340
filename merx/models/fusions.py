"""The built-in fusions: two tower outputs -> one vector for the head."""

from __future__ import annotations

import torch
from torch import nn

from merx.models.layers import FeatureGate, masked_mean
from merx.models.outputs import TowerOutput

# masked_mean lived here first: merx.api (and plugins written against 0.1) import it from this module.
__all__ = ["AudioAttentionFusion", "CombinedAttentionFusion", "ConcatFusion", "CrossAttentionFusion", "masked_mean"]


class ConcatFusion(nn.Module):
    """MODEL_2: the two pooled vectors side by side."""

    needs_sequence = False

    def __init__(self, audio_dim: int, text_dim: int):
        super().__init__()
        self.out_dim = audio_dim + text_dim

    def forward(self, audio: TowerOutput, text: TowerOutput) -> torch.Tensor:
        return torch.cat((audio.pooled, text.pooled), dim=1)


class AudioAttentionFusion(nn.Module):
    """The feature gate on the audio pooled vector, then concatenation with the text vector."""

    needs_sequence = False

    def __init__(self, audio_dim: int, text_dim: int, reduction: int = 4):
        super().__init__()
        self.gate = FeatureGate(audio_dim, reduction)
        self.out_dim = audio_dim + text_dim

    def forward(self, audio: TowerOutput, text: TowerOutput) -> torch.Tensor:
        return torch.cat((self.gate(audio.pooled), text.pooled), dim=1)


class CombinedAttentionFusion(nn.Module):
    """The review's "Alternative 2": the feature gate on the concatenated vector, so the weight
    of each audio feature can depend on the lyrics and vice versa."""

    needs_sequence = False

    def __init__(self, audio_dim: int, text_dim: int, reduction: int = 4):
        super().__init__()
        self.gate = FeatureGate(audio_dim + text_dim, reduction)
        self.out_dim = audio_dim + text_dim

    def forward(self, audio: TowerOutput, text: TowerOutput) -> torch.Tensor:
        return self.gate(torch.cat((audio.pooled, text.pooled), dim=1))


class _CrossBlock(nn.Module):
    """Queries of one modality attend to the tokens of the other; residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, queries, keys, key_mask) -> torch.Tensor:
        attended, _ = self.attention(queries, keys, keys, need_weights=False,
                                     key_padding_mask=None if key_mask is None else ~key_mask)
        return self.norm(queries + attended)


class CrossAttentionFusion(nn.Module):
    """Bidirectional cross-attention between audio time-frequency tokens and text tokens.

    Both token sequences are projected to ``dim``. Audio tokens attend to text tokens and text
    tokens attend to audio tokens (padding excluded through ``key_padding_mask``); each result
    is averaged over its own real tokens. With ``pooled`` (the default) the two towers' pooled
    vectors, projected to ``dim``, are appended: they keep the towers' own summaries (the
    [CLS] vector, the audio tower's dense layers) in play, which otherwise receive no gradient.
    out_dim = 4 * dim with pooled, 2 * dim without."""

    needs_sequence = True

    def __init__(self, audio_seq_dim: int, text_seq_dim: int, audio_dim: int, text_dim: int,
                 dim: int = 128, heads: int = 4, dropout: float = 0.1, pooled: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"cross_attention: dim {dim} must be divisible by heads {heads}")
        self.audio_tokens = nn.Linear(audio_seq_dim, dim)
        self.text_tokens = nn.Linear(text_seq_dim, dim)
        self.audio_to_text = _CrossBlock(dim, heads, dropout)
        self.text_to_audio = _CrossBlock(dim, heads, dropout)
        self.pooled = pooled
        if pooled:
            self.audio_pooled = nn.Linear(audio_dim, dim)
            self.text_pooled = nn.Linear(text_dim, dim)
        self.out_dim = (4 if pooled else 2) * dim

    def forward(self, audio: TowerOutput, text: TowerOutput) -> torch.Tensor:
        if audio.sequence is None or text.sequence is None:
            raise ValueError("cross_attention needs both towers' token sequences; got None "
                             "(frozen text embeddings must be computed with keep_sequence=True)")
        a = self.audio_tokens(audio.sequence)
        t = self.text_tokens(text.sequence)
        a_mask = None if audio.mask is None else audio.mask.bool()
        t_mask = None if text.mask is None else text.mask.bool()
        parts = [masked_mean(self.audio_to_text(a, t, t_mask), a_mask),
                 masked_mean(self.text_to_audio(t, a, a_mask), t_mask)]
        if self.pooled:
            parts += [self.audio_pooled(audio.pooled), self.text_pooled(text.pooled)]
        return torch.cat(parts, dim=1)
