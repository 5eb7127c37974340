"""The spectrogram a TRAINING song shows the model in one epoch, augmentations included.

    power mel  (cached clean | a precomputed waveform variant | waveform chain on the fly)
      -> dB (the run's reference) -> crop/pad to n_frames -> spectrogram chain

Validation and test songs never come here: they go through ``merx.features.mel.MelView`` alone,
so their inputs are bit-identical with and without augmentation. A time stretch changes the
clip's length; the crop/pad that follows gives every epoch the configured duration again.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from merx.augment.chain import Chain
from merx.augment.seeding import generator, pick
from merx.features.cache import mel_params
from merx.features.crop import crop
from merx.features.mel import to_db

if TYPE_CHECKING:
    from merx.config.settings import FeatureSettings


def load_waveform(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``, decoded exactly as the feature stage decodes them."""
    import librosa

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySoundFile failed")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"[\s\S]*audioread")
        y, _ = librosa.load(path, sr=sample_rate, mono=True)
    return y.astype(np.float32, copy=False)


def power_mel(samples: np.ndarray, params: dict) -> np.ndarray:
    """float32 power mel spectrogram ``[n_mels, frames]``: the feature stage's recipe
    (``merx.features.mel``: centred frames, power 2, librosa's Slaney filters), so augmented and
    clean spectrograms share one scale."""
    import librosa

    if samples.size == 0:
        raise ValueError("an augmentation left no samples (an empty signal has no spectrogram)")
    power = librosa.feature.melspectrogram(y=samples, sr=params["sample_rate"], n_fft=params["n_fft"],
                                           hop_length=params["hop_length"], n_mels=params["n_mels"], center=True,
                                           power=2.0)
    return power.astype(np.float32, copy=False)


class TrainingMelView:
    """``get(song_id, epoch)`` -> float32 ``[n_mels, n_frames]`` for a training song.

    ``mel_view`` is the run's ``MelView`` (reference, floor, length, crop strategy). ``waveform``
    runs per ``strategy``: with "precompute", ``variants`` (a ``merx.augment.variants.AudioVariants``)
    holds each song's cached versions and each epoch picks one; with "on_the_fly", the song's
    audio (``audio_paths``) is decoded and transformed afresh. Picklable for DataLoader workers."""

    def __init__(self, mel_view, seed: int, features: FeatureSettings, waveform: Chain | None = None,
                 spectrogram: Chain | None = None, strategy: str = "precompute", variants=None,
                 audio_paths: dict[str, str] | None = None):
        if waveform and strategy == "precompute" and variants is None:
            raise ValueError("waveform augmentations with strategy 'precompute' need the precomputed variants")
        if waveform and strategy == "on_the_fly" and audio_paths is None:
            raise ValueError("waveform augmentations with strategy 'on_the_fly' need the songs' audio paths")
        self.mel_view = mel_view
        self.seed = int(seed)
        self.params = mel_params(features)
        self.waveform = waveform if waveform else None
        self.spectrogram = spectrogram if spectrogram else None
        self.strategy = strategy
        self.variants = variants
        self.audio_paths = audio_paths or {}

    def power(self, song_id: str, epoch: int) -> np.ndarray:
        """The song's full-length power mel spectrogram for ``epoch`` (waveform augmentations applied)."""
        if self.waveform is None:
            return self.mel_view.feature_set.load_power(song_id)
        if self.strategy == "precompute":
            paths = self.variants.paths[song_id]
            return np.load(paths[pick(self.seed, "audio_variant", epoch, song_id, len(paths))], allow_pickle=False)
        samples = load_waveform(self.audio_paths[song_id], self.params["sample_rate"])
        samples = self.waveform(samples, generator(self.seed, "waveform", epoch, song_id))
        return power_mel(np.asarray(samples, dtype=np.float32), self.params)

    def get(self, song_id: str, epoch: int) -> np.ndarray:
        view = self.mel_view
        db = to_db(self.power(song_id, epoch), view.ref_power, view.top_db)
        db = crop(db, view.n_frames, view.strategy, generator(self.seed, "crop", epoch, song_id), floor=view.floor)
        if self.spectrogram is not None:
            db = self.spectrogram(db, generator(self.seed, "spectrogram", epoch, song_id))
        return np.ascontiguousarray(db, dtype=np.float32)
