"""Fixed-length windows of a dB mel spectrogram: which frames to keep, and what pads the rest.

A longer clip is cut to ``n_frames`` by a strategy:

* ``head``: the first frames (what the notebooks did; misses later choruses);
* ``middle``: the centred window (the default, and what ``random`` becomes in evaluation);
* ``max_energy``: the window with the largest mean power, measured on LINEAR power (see
  ``crop``);
* ``random``: a uniformly drawn start from a ``numpy.random.Generator`` (training only).

A shorter clip is padded at the end with exactly ``floor``, the value ``to_db`` clips to
(``-top_db`` relative to the reference): padding reads as silence, never as 0 dB (loud).
``floor`` is a required keyword so no caller can fall back to padding with zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from merx.config.settings import FeatureSettings

STRATEGIES = ("head", "middle", "max_energy", "random")


def n_frames(features: FeatureSettings) -> int:
    """Frames of ``duration`` seconds with centred frames: 30 s at 22050 Hz, hop 512 -> 1292."""
    samples = int(round(features.duration * features.sample_rate))
    return 1 + samples // int(features.hop_length)


def crop(db: np.ndarray, n_frames: int, strategy: str, rng: np.random.Generator | None = None, *,
         floor: float) -> np.ndarray:
    """``db`` ``[n_mels, frames]`` -> float32 ``[n_mels, n_frames]``: a window, or the clip padded with ``floor``.

    ``max_energy`` ranks windows by the mean of ``10 ** (db / 10)`` (linear power, up to the
    reference's constant factor), not by mean dB: energy adds linearly, and a mean of dB would
    rank windows by how quiet their quietest frames are, which depends on the arbitrary floor
    (``top_db``). Ties go to the earliest window. ``random`` needs ``rng``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown crop strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    total = db.shape[-1]
    if total <= n_frames:
        pad = [(0, 0)] * (db.ndim - 1) + [(0, n_frames - total)]
        return np.pad(db.astype(np.float32, copy=False), pad, mode="constant", constant_values=np.float32(floor))
    start = _start(db, n_frames, strategy, rng)
    return np.ascontiguousarray(db[..., start:start + n_frames], dtype=np.float32)


def _start(db: np.ndarray, n: int, strategy: str, rng) -> int:
    spare = db.shape[-1] - n
    if strategy == "head":
        return 0
    if strategy == "middle":
        return spare // 2
    if strategy == "random":
        if rng is None:
            raise ValueError("crop strategy 'random' needs rng (a numpy.random.Generator); "
                             "in evaluation use 'middle'")
        return int(rng.integers(0, spare + 1))
    # max_energy: float64 so that 10**(dB/10) of loud frames neither overflows nor loses the quiet ones.
    frame_power = np.power(10.0, db.astype(np.float64) / 10.0).reshape(-1, db.shape[-1]).sum(axis=0)
    windows = np.lib.stride_tricks.sliding_window_view(frame_power, n).sum(axis=1)
    return int(np.argmax(windows))
