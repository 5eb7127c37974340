"""Training-only augmentation of audio and lyrics: pluggable, reproducible, recorded.

Configured as ordered lists in the experiment file; each entry names a plugin, its settings
and the probability ``p`` (default 1) that it applies to a song::

    [[augment.audio]]
    name = "time_stretch"          # waveform level (audiomentations)
    min_rate = 0.9
    max_rate = 1.1
    p = 0.5

    [[augment.audio]]
    name = "audiomentations"       # any audiomentations waveform transform, by class name
    transform = "LowPassFilter"
    params = { min_cutoff_freq = 2000.0, max_cutoff_freq = 6000.0 }
    p = 0.3

    [[augment.audio]]
    name = "frequency_mask"        # spectrogram level (SpecAugment), after the crop
    max_width = 8

    [[augment.text]]
    name = "word_delete"           # nlpaug
    aug_p = 0.05

Rules the engine keeps, whatever the plugin:

* only training songs are augmented; validation and test inputs are bit-identical with and
  without ``[augment]``;
* every draw comes from a generator seeded by (run seed, epoch or variant, song)
  (``merx.augment.seeding``): a run repeats exactly, for any ``train.num_workers``, and
  DataLoader workers never repeat each other's draws;
* waveform steps run before the mel spectrogram, spectrogram steps after the crop; within a
  level the listed order is kept (a waveform step listed after a spectrogram step is an error);
* ``augment.strategy``: waveform steps are either precomputed as ``augment.variants`` versions
  per training song into the feature cache ("precompute", the default: cheap epochs, reusable)
  or applied in the data loader every epoch ("on_the_fly": fresh draws, an extraction per song
  per epoch). Text is precomputed as ``augment.variants`` versions; with a frozen text tower
  each version is encoded once. See ``merx.augment.variants`` for the trade-off;
* the random crop stays the feature setting ``features.crop = "random"`` (not a plugin: a
  crop is always needed, and one setting chooses which); it is drawn per (seed, epoch, song)
  in training and is the middle window in evaluation;
* the resolved ``[augment]`` list is part of the run's stored config, and the plugins used are
  recorded with the run.

Adding an augmentation (a file in ``./plugins/``, or an installed package's ``merx`` entry point)::

    from merx import hookimpl

    @hookimpl
    def register_audio_augmentations(register):
        register("polarity", polarity)

    def polarity(sample_rate: int):
        \"\"\"Flip the waveform's sign.\"\"\"
        from merx.augment import waveform
        return waveform(lambda samples, rng: -samples)

``waveform(fn)`` / ``spectrogram(fn)`` wrap ``fn(x, rng) -> x``; ``sample_rate`` is passed by
merx when the factory asks for it; other parameters are settings (``[[augment.audio]]`` keys).
A text augmentation returns any callable ``(text, rng) -> text`` from a factory registered in
``register_text_augmentations``. Draw only from ``rng`` (a ``numpy.random.Generator``); wrap a
library that uses the global generators in ``merx.augment.seeding.seeded_globals(rng)``.
Factories run in the main process before training (raise there to reject a setting), and again
in spawned worker processes, so they should be cheap and free of side effects.
"""

from merx.augment.audio import SpectrogramAugmentation, WaveformAugmentation, spectrogram, waveform

__all__ = ["SpectrogramAugmentation", "WaveformAugmentation", "spectrogram", "waveform"]
