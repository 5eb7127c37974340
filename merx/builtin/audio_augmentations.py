"""Built-in audio augmentations: waveform transforms (audiomentations) and SpecAugment masks.

Each factory returns an augmentation object (see ``merx.augment.audio``); merx decides per song
whether it applies, from the entry's ``p``. The random crop is ``features.crop = "random"``."""

from __future__ import annotations

from merx import hookimpl


@hookimpl
def register_audio_augmentations(register):
    register("gaussian_noise", gaussian_noise)
    register("time_stretch", time_stretch)
    register("pitch_shift", pitch_shift)
    register("gain", gain)
    register("audiomentations", audiomentations)
    register("frequency_mask", frequency_mask)
    register("time_mask", time_mask)


def _transform(sample_rate: int, transform: str, **params):
    from merx.augment.audio import AudiomentationsTransform

    return AudiomentationsTransform(transform, params, sample_rate)


def gaussian_noise(sample_rate: int, min_snr_db: float = 15.0, max_snr_db: float = 40.0):
    """Waveform: add white Gaussian noise at a signal-to-noise ratio drawn between min_snr_db and max_snr_db.

    audiomentations' AddGaussianSNR: the noise follows each clip's loudness, so quiet and loud
    songs are disturbed alike (a fixed amplitude would drown quiet ones)."""
    return _transform(sample_rate, "AddGaussianSNR", min_snr_db=min_snr_db, max_snr_db=max_snr_db)


def time_stretch(sample_rate: int, min_rate: float = 0.8, max_rate: float = 1.25,
                 leave_length_unchanged: bool = False, method: str = "signalsmith_stretch"):
    """Waveform: change the tempo by a rate drawn between min_rate and max_rate, keeping the pitch.

    The stretched clip is longer (rate < 1) or shorter; the crop that follows brings it back to
    features.duration (a shorter one is padded with the floor). `leave_length_unchanged` trims or
    pads the signal itself instead. `method`: "signalsmith_stretch" (fast) or
    "librosa_phase_vocoder". audiomentations' TimeStretch."""
    return _transform(sample_rate, "TimeStretch", min_rate=min_rate, max_rate=max_rate,
                      leave_length_unchanged=leave_length_unchanged, method=method)


def pitch_shift(sample_rate: int, min_semitones: float = -4.0, max_semitones: float = 4.0,
                method: str = "signalsmith_stretch"):
    """Waveform: shift the pitch by semitones drawn between min_semitones and max_semitones, keeping the tempo.

    A shift moves energy between mel bands and so changes brightness, a cue of arousal: keep it
    to a few semitones. audiomentations' PitchShift."""
    return _transform(sample_rate, "PitchShift", min_semitones=min_semitones, max_semitones=max_semitones,
                      method=method)


def gain(sample_rate: int, min_gain_db: float = -6.0, max_gain_db: float = 6.0):
    """Waveform: multiply the signal by a gain drawn between min_gain_db and max_gain_db (dB).

    On merx's absolute dB scale this shifts the whole spectrogram (down to the floor). Loudness
    carries arousal (in MERGE and in the synthetic data), so keep the range small: a wide one
    hides a real cue. audiomentations' Gain."""
    return _transform(sample_rate, "Gain", min_gain_db=min_gain_db, max_gain_db=max_gain_db)


def audiomentations(sample_rate: int, transform: str, params: dict = {}):  # noqa: B006 (never mutated)
    """Waveform: any audiomentations transform, by class name, with its parameters.

    `transform`: the class name, e.g. "LowPassFilter", "AddColorNoise", "Shift"; `params`: its
    constructor's arguments as a table, e.g. { min_cutoff_freq = 2000.0 } (not p: set the entry's
    own p). Transforms that read files (AddBackgroundNoise, ApplyImpulseResponse) take their
    folders in params. audiomentations' Spec* transforms do not work here: use frequency_mask and
    time_mask."""
    from merx.augment.audio import AudiomentationsTransform

    return AudiomentationsTransform(transform, params, sample_rate)


def frequency_mask(max_width: int = 8, n_masks: int = 1, fill: str = "mean"):
    """Spectrogram: SpecAugment frequency masking of `n_masks` bands of 0..`max_width` mel bins.

    Each band's width is drawn uniformly from 0 to max_width inclusive (so max_width is reached
    and never exceeded) and its position uniformly where it fits; masked bins get `fill`: "mean"
    (the spectrogram's mean, SpecAugment's choice) or "min" (its quietest value). Applied after
    the crop, in training only."""
    from merx.augment.audio import BandMask

    return BandMask(0, max_width, n_masks, fill)


def time_mask(max_width: int = 32, n_masks: int = 1, fill: str = "mean"):
    """Spectrogram: SpecAugment time masking of `n_masks` spans of 0..`max_width` frames.

    As frequency_mask, along time (frames of hop_length samples: 32 frames = 0.74 s at 22050 Hz,
    hop 512). The width is counted on the cropped spectrogram the model sees."""
    from merx.augment.audio import BandMask

    return BandMask(1, max_width, n_masks, fill)
