"""What towers return and fusions receive (public API for plugin authors)."""

from __future__ import annotations

from typing import Any, NamedTuple


class TowerOutput(NamedTuple):
    """A tower's output for a batch.

    pooled:   ``[batch, dim]`` — one vector per song (used by concat-style fusions).
    sequence: ``[batch, tokens, seq_dim]`` — per-token features (used by attention fusions):
              time-frequency patches for audio, word pieces for text.
    mask:     ``[batch, tokens]`` bool, True where the token is real (False = padding).
    """

    pooled: Any
    sequence: Any
    mask: Any
