"""The on-disk cache of mel spectrograms: where a file lives, how it is written and checked.

Layout: ``<cache_dir>/mel/<params key>/<sha1 of the audio file's bytes>.npy``, one float32
power mel spectrogram ``[n_mels, frames]`` per distinct audio content. The key holds only what
changes the extracted array (sample rate, FFT size, hop, mel bands); the dB reference, floor,
crop and duration are applied when a file is read, so changing them re-uses the cache. Keying by
content (not path) means a renamed or moved dataset still hits, and an edited file misses.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from merx.config.settings import FeatureSettings

#: The settings that change the extracted array, in key order.
MEL_PARAMS = ("sample_rate", "n_fft", "hop_length", "n_mels")


def mel_params(features: FeatureSettings) -> dict[str, int]:
    """The extraction settings (``MEL_PARAMS``) as plain integers, e.g. for worker processes."""
    return {k: int(getattr(features, k)) for k in MEL_PARAMS}


def mel_params_key(features: FeatureSettings) -> str:
    """Folder name for one set of extraction settings, e.g. ``power-sr22050-fft2048-hop512-mels128``.

    "power" names the recipe (power mel, centred frames, librosa's Slaney mel filters); change
    that prefix if the recipe ever changes so old files are not read as new ones."""
    sr, n_fft, hop, n_mels = mel_params(features).values()
    return f"power-sr{sr}-fft{n_fft}-hop{hop}-mels{n_mels}"


def mel_dir(cache_dir: str | os.PathLike, features: FeatureSettings) -> Path:
    """The folder holding every cached spectrogram extracted with these settings."""
    return Path(cache_dir) / "mel" / mel_params_key(features)


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` so that ``path`` is either absent or complete, never partial.

    The array goes to a temporary file in the same folder, then ``os.replace`` swaps it in (an
    atomic rename on one file system). An interrupted run leaves at most a stray ``.tmp`` file,
    which is never read. No fsync: after a power cut a file could still be empty, and
    ``is_valid`` catches that, so the file is simply recomputed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_valid(path: Path, n_mels: int) -> bool:
    """Whether ``path`` holds a readable float32 ``[n_mels, frames]`` array.

    Reads only the header and memory-maps the data (numpy checks the file is long enough), so
    checking a whole cache costs little; a truncated, empty or foreign file reads as invalid."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    try:
        return arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == n_mels and arr.shape[1] > 0
    finally:
        del arr
