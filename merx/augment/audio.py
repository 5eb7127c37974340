"""Audio augmentations: what an audio augmentation plugin returns, and the built-in kinds.

An audio augmentation works at one of two levels, named by its ``level`` attribute:

* ``"waveform"``: ``aug(samples, rng) -> samples``, a mono float32 signal at the configured
  sample rate, before the mel spectrogram is computed (noise, time stretch, pitch shift, gain);
* ``"spectrogram"``: ``aug(db, rng) -> db``, the float32 ``[n_mels, n_frames]`` dB spectrogram
  the model sees, after the crop (SpecAugment masks).

``rng`` is a ``numpy.random.Generator`` seeded by (run seed, epoch or variant, song): draw
everything from it, never from ``random``/``np.random`` (wrap a library that does in
``merx.augment.seeding.seeded_globals(rng)``, as :class:`AudiomentationsTransform` does).
Whether a step runs at all is drawn by merx from the step's ``p``; the augmentation itself
always applies.

The quickest way to write one is :func:`waveform` or :func:`spectrogram` around a function::

    def polarity():
        \"\"\"Flip the waveform's sign.\"\"\"
        from merx.augment import waveform
        return waveform(lambda samples, rng: -samples)

A spectrogram augmentation may define ``check(n_mels, n_frames)`` to reject settings that
cannot fit the configured spectrogram before training starts.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import numpy as np

from merx.augment.seeding import seeded_globals

LEVELS = ("waveform", "spectrogram")
FILLS = ("mean", "min")


class WaveformAugmentation:
    """Base of waveform-level augmentations: ``__call__(samples, rng) -> samples`` (mono float32)."""

    level = "waveform"

    def __call__(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class SpectrogramAugmentation:
    """Base of spectrogram-level augmentations: ``__call__(db, rng) -> db`` (float32 ``[n_mels, n_frames]``)."""

    level = "spectrogram"

    def check(self, n_mels: int, n_frames: int) -> None:
        """Raise ``ValueError`` when the settings cannot fit a spectrogram of this size."""

    def __call__(self, db: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class _WaveformFunction(WaveformAugmentation):
    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, samples, rng):
        return self.fn(samples, rng)


class _SpectrogramFunction(SpectrogramAugmentation):
    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, db, rng):
        return self.fn(db, rng)


def waveform(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> WaveformAugmentation:
    """Make ``fn(samples, rng) -> samples`` a waveform-level augmentation."""
    return _WaveformFunction(fn)


def spectrogram(fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> SpectrogramAugmentation:
    """Make ``fn(db, rng) -> db`` a spectrogram-level augmentation."""
    return _SpectrogramFunction(fn)


def level_of(obj, what: str) -> str:
    """The level of an object an audio augmentation factory returned; a clear error if it has none."""
    level = getattr(obj, "level", None)
    if level not in LEVELS or not callable(obj):
        raise TypeError(f"{what} returned {type(obj).__name__}, which is not an audio augmentation: return "
                        "merx.augment.waveform(fn) or merx.augment.spectrogram(fn), or a callable object with "
                        "level = 'waveform' or 'spectrogram'")
    return level


# -- audiomentations --------------------------------------------------------------------------

class AudiomentationsTransform(WaveformAugmentation):
    """Any audiomentations waveform transform, by class name and constructor parameters.

    The transform is built with ``p=1.0`` (merx draws whether it runs, from the step's ``p``)
    and called with python's and numpy's global generators seeded from the song's ``rng``."""

    def __init__(self, transform: str, params: dict | None, sample_rate: int):
        import audiomentations
        from audiomentations.core.transforms_interface import BaseWaveformTransform

        params = dict(params or {})
        cls = getattr(audiomentations, transform, None)
        names = sorted(n for n in dir(audiomentations)
                       if inspect.isclass(getattr(audiomentations, n))
                       and issubclass(getattr(audiomentations, n), BaseWaveformTransform)
                       and n not in ("Compose", "OneOf", "SomeOf"))
        if cls is None or not inspect.isclass(cls) or transform not in names:
            close = difflib.get_close_matches(transform, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"audiomentations has no waveform transform {transform!r}{hint}; "
                             f"available: {', '.join(names)}")
        if "p" in params:
            raise ValueError("set the probability as the augmentation's own p (next to name), not in params")
        accepted = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "p")]
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ValueError(f"audiomentations.{transform} has no parameter {unknown[0]!r}; "
                             f"its parameters: {', '.join(accepted)}")
        self.name = transform
        self.sample_rate = int(sample_rate)
        self.transform = cls(**params, p=1.0)

    def __call__(self, samples, rng):
        with seeded_globals(rng):
            out = self.transform(samples=np.asarray(samples, dtype=np.float32), sample_rate=self.sample_rate)
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"AudiomentationsTransform({self.transform!r})"


# -- SpecAugment ------------------------------------------------------------------------------

def mask_bands(db: np.ndarray, axis: int, max_width: int, n_masks: int, fill: str,
               rng: np.random.Generator) -> np.ndarray:
    """SpecAugment masking: ``n_masks`` times, set a band of ``w`` rows (axis 0) or columns (axis 1)
    to ``fill``, ``w`` drawn uniformly from 0..``max_width`` INCLUSIVE and the band's start
    uniformly among the positions where it fits.

    ``fill``: "mean" (the spectrogram's mean, which is what SpecAugment's zero means on
    mean-normalised features) or "min" (its quietest value). Returns a new array."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    size = db.shape[axis]
    if max_width > size:
        raise ValueError(f"max_width {max_width} exceeds the spectrogram's {size} {'bands' if axis == 0 else 'frames'}")
    # The mean in float64, as the feature bank takes it on the device (merx.features.bank), so
    # both paths fill with the same float32 value whatever order each sums in.
    value = np.float32(db.mean(dtype=np.float64) if fill == "mean" else db.min())
    out = np.array(db, dtype=np.float32, copy=True)
    for start, width in draw_bands(size, max_width, n_masks, rng):
        index = [slice(None)] * db.ndim
        index[axis] = slice(start, start + width)
        out[tuple(index)] = value
    return out


def draw_bands(size: int, max_width: int, n_masks: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The ``(start, width)`` of each of ``n_masks`` bands over ``size`` rows or columns, in the
    order :func:`mask_bands` draws them: the one sequence of draws both the per-song path and
    the feature bank (which applies the bands batched on the device) use."""
    bands = []
    for _ in range(n_masks):
        width = int(rng.integers(0, max_width + 1))
        bands.append((int(rng.integers(0, size - width + 1)), width))
    return bands


class BandMask(SpectrogramAugmentation):
    """SpecAugment frequency (axis 0) or time (axis 1) masking; see :func:`mask_bands`."""

    AXES = {0: "mel bands", 1: "frames"}

    def __init__(self, axis: int, max_width: int, n_masks: int = 1, fill: str = "mean"):
        if axis not in self.AXES:
            raise ValueError(f"axis must be 0 (frequency) or 1 (time), got {axis}")
        if max_width < 0 or n_masks < 0:
            raise ValueError(f"max_width and n_masks must not be negative, got {max_width} and {n_masks}")
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
        self.axis, self.max_width, self.n_masks, self.fill = axis, int(max_width), int(n_masks), fill

    def check(self, n_mels: int, n_frames: int) -> None:
        size = (n_mels, n_frames)[self.axis]
        if self.max_width > size:
            raise ValueError(f"max_width {self.max_width} is wider than the spectrogram's {size} "
                             f"{self.AXES[self.axis]} (features.n_mels / features.duration)")

    def __call__(self, db, rng):
        return mask_bands(db, self.axis, self.max_width, self.n_masks, self.fill, rng)
