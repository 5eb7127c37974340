"""Audio augmentations: seeded draws, SpecAugment widths, time stretch vs. duration, workers, variants."""

import numpy as np
import pytest
import soundfile as sf

from merx.augment.audio import mask_bands
from merx.augment.plan import AugmentationError, audio_chains, build_plan
from merx.augment.seeding import generator
from merx.augment.spectrograms import TrainingMelView
from merx.augment.variants import precompute_audio_variants
from merx.config import resolve
from merx.config.settings import AugmentSettings, Experiment, FeatureSettings
from merx.data.songs import Song
from merx.dataset import SongDataset, make_loader
from merx.features.crop import n_frames
from merx.features.mel import MelView, extract_features
from merx.train import worker_init_fn

SR = 22050

POLARITY_PLUGIN = '''
from merx import hookimpl

@hookimpl
def register_audio_augmentations(register):
    register("polarity", polarity)

def polarity(sample_rate: int):
    """Flip the waveform's sign."""
    from merx.augment import waveform
    return waveform(lambda samples, rng: -samples)
'''


def features_cfg(**over):
    return FeatureSettings(**{**dict(n_mels=16, n_fft=1024, hop_length=256, duration=1.0, workers=1), **over})


def audio_items(*tables):
    """The ``[[augment.audio]]`` entries of an experiment listing ``tables``, as validation resolves them."""
    return AugmentSettings.from_table(resolve({"augment": {"audio": list(tables)}})["augment"]).audio


def write_song(path, seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, y.astype(np.float32), SR)
    return str(path)


@pytest.fixture
def songs(tmp_path):
    """Four training songs: three share one audio file (identical content), one differs."""
    shared = write_song(tmp_path / "shared.wav", 1.0)
    other = write_song(tmp_path / "other.wav", 1.4, seed=1)
    return [Song(f"s{i}", "train", "Q1", audio_path=shared) for i in range(3)] + \
        [Song("s3", "train", "Q2", audio_path=other)]


def training_view(songs, feats, tables, tmp_path, seed=0, strategy="on_the_fly", variants=None):
    fs = extract_features(songs, feats, tmp_path / "cache", workers=1, progress=False)
    wave, spec = audio_chains(audio_items(*tables), feats.sample_rate, feats.n_mels, n_frames(feats))
    return TrainingMelView(MelView(fs, feats, 1.0), seed, feats, wave, spec, strategy, variants,
                           {s.id: s.audio_path for s in songs})


# -- SpecAugment ------------------------------------------------------------------------------

@pytest.mark.parametrize("axis,max_width", [(0, 5), (1, 12)])
def test_specaugment_masks_reach_exactly_the_configured_maximum_width_and_never_more(axis, max_width):
    db = np.random.default_rng(0).normal(-40, 10, size=(16, 40)).astype(np.float32)
    widths = set()
    for song in range(300):
        out = mask_bands(db, axis, max_width, 1, "mean", generator(0, "spectrogram", 1, f"song{song}"))
        masked = np.flatnonzero(np.all(out == np.float32(db.mean()), axis=1 - axis))
        if masked.size:
            assert np.array_equal(masked, np.arange(masked[0], masked[-1] + 1)), "one contiguous band"
            untouched = np.ones(db.shape[axis], bool)
            untouched[masked] = False
            assert np.array_equal(np.compress(untouched, out, axis=axis), np.compress(untouched, db, axis=axis))
        widths.add(masked.size)
    assert max(widths) == max_width
    assert widths == set(range(max_width + 1))  # every width 0..max_width occurs, none beyond


def test_masks_wider_than_the_spectrogram_are_rejected_before_training():
    cfg = resolve({"features": {"n_mels": 16}, "augment": {"audio": [{"name": "frequency_mask", "max_width": 20}]}})
    exp = Experiment.from_config(cfg)
    with pytest.raises(AugmentationError, match=r"augment\.audio\[0\] \(frequency_mask\).*wider than.*16 mel bands"):
        build_plan(exp.augment, exp.features)


def test_a_waveform_step_after_a_spectrogram_step_is_an_error():
    with pytest.raises(AugmentationError,
                       match=r"augment\.audio\[1\] \(gain\).*list waveform-level augmentations first"):
        audio_chains(audio_items({"name": "time_mask"}, {"name": "gain"}), SR)


# -- audiomentations ----------------------------------------------------------------------------

def test_any_audiomentations_transform_by_name_with_its_parameters():
    wave, _ = audio_chains(audio_items({"name": "audiomentations", "transform": "LowPassFilter",
                                        "params": {"min_cutoff_freq": 500.0, "max_cutoff_freq": 600.0}}), SR)
    t = np.arange(SR) / SR
    y = (np.sin(2 * np.pi * 200 * t) + np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    out = wave(y, generator(0, "waveform", 0, "a"))
    spectrum = np.abs(np.fft.rfft(out))
    assert spectrum[5000] < 0.05 * spectrum[200]  # the 5 kHz tone is filtered out, 200 Hz stays

    with pytest.raises(AugmentationError, match="no waveform transform 'LowPasFilter'.*did you mean 'LowPassFilter'"):
        audio_chains(audio_items({"name": "audiomentations", "transform": "LowPasFilter"}), SR)
    with pytest.raises(AugmentationError, match="entry's own p|augmentation's own p"):
        audio_chains(audio_items({"name": "audiomentations", "transform": "Gain", "params": {"p": 0.5}}), SR)
    with pytest.raises(AugmentationError, match="has no parameter 'min_gain'.*min_gain_db"):
        audio_chains(audio_items({"name": "audiomentations", "transform": "Gain", "params": {"min_gain": 1.0}}), SR)


# -- time stretch and duration ------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_keeps_the_configured_duration_after_cropping(tmp_path, rate):
    feats = features_cfg(duration=1.0, crop="random")
    song = Song("s", "train", "Q1", audio_path=write_song(tmp_path / "s.wav", 1.0))
    view = training_view([song], feats, [{"name": "time_stretch", "min_rate": rate, "max_rate": rate}], tmp_path)
    clean_frames = view.mel_view.feature_set.load_power("s").shape[1]
    stretched = view.power("s", epoch=1)
    assert (stretched.shape[1] > clean_frames) if rate < 1 else (stretched.shape[1] < clean_frames)
    mel = view.get("s", epoch=1)
    assert mel.shape == (feats.n_mels, n_frames(feats))
    if rate > 1:  # shorter than the duration: padded with the floor, as any short clip
        assert np.all(mel[:, stretched.shape[1]:] == -feats.top_db)


# -- seeds and workers --------------------------------------------------------------------------

AUGS = [{"name": "gaussian_noise", "min_snr_db": 10.0, "max_snr_db": 20.0}, {"name": "gain", "p": 0.5},
        {"name": "time_mask", "max_width": 10}]


def test_same_seed_same_augmented_inputs_different_seed_different(tmp_path, songs):
    feats = features_cfg()
    a = training_view(songs, feats, AUGS, tmp_path, seed=0)
    b = training_view(songs, feats, AUGS, tmp_path, seed=0)
    c = training_view(songs, feats, AUGS, tmp_path, seed=1)
    for s in songs:
        assert np.array_equal(a.get(s.id, 1), b.get(s.id, 1))
        assert not np.array_equal(a.get(s.id, 1), c.get(s.id, 1))
        assert not np.array_equal(a.get(s.id, 1), a.get(s.id, 2))  # each epoch draws afresh


def test_two_dataloader_workers_never_repeat_each_others_draws(tmp_path, songs):
    feats = features_cfg()
    view = training_view(songs, feats, AUGS, tmp_path)

    def epoch_inputs(num_workers):
        ds = SongDataset(songs, "classification", view.mel_view, train=True, seed=0, audio_augment=view)
        loader = make_loader(ds, batch_size=1, shuffle=False, num_workers=num_workers, seed=0,
                             worker_init_fn=worker_init_fn)
        return [batch["mel"][0, 0].numpy() for batch in loader]

    parallel = epoch_inputs(2)
    # Songs s0..s2 share their audio: only the draws can tell them apart, and they must.
    for i in range(len(parallel)):
        for j in range(i + 1, len(parallel)):
            assert not np.array_equal(parallel[i], parallel[j]), (i, j)
    # The draws belong to the song, not to the worker: any worker count gives the same inputs.
    assert all(np.array_equal(x, y) for x, y in zip(parallel, epoch_inputs(0), strict=True))


# -- precomputed variants -----------------------------------------------------------------------

def test_precomputed_variants_are_cached_per_seed_and_chosen_per_epoch(tmp_path, songs):
    feats = features_cfg()
    wave, spec = audio_chains(audio_items(*AUGS), SR, feats.n_mels, n_frames(feats))
    cache = tmp_path / "cache"
    first = precompute_audio_variants(songs, wave, feats, cache, seed=0, variants=2)
    assert (first.computed, first.hits) == (8, 0)
    again = precompute_audio_variants(songs, wave, feats, cache, seed=0, variants=2)
    assert (again.computed, again.hits) == (0, 8) and again.paths == first.paths
    other_seed = precompute_audio_variants(songs, wave, feats, cache, seed=1, variants=2)
    assert other_seed.key != first.key and other_seed.computed == 8

    load = np.load
    v0, v1 = (load(p) for p in first.paths["s0"])
    assert not np.array_equal(v0, v1)
    assert not np.array_equal(v0, load(first.paths["s1"][0]))  # same audio, another song: other draws
    assert not np.array_equal(v0, load(other_seed.paths["s0"][0]))

    fs = extract_features(songs, feats, cache, workers=1, progress=False)
    view = TrainingMelView(MelView(fs, feats, 1.0), 0, feats, wave, spec, "precompute", first)
    picked = {tuple(view.power("s0", epoch).ravel()[:5]) for epoch in range(1, 9)}
    assert picked == {tuple(v0.ravel()[:5]), tuple(v1.ravel()[:5])}  # epochs use both variants


def test_a_chain_sent_to_another_process_is_rebuilt_from_its_config_even_with_a_lambda_plugin(tmp_path, songs):
    """Spawned workers (the default features.workers = 0) unpickle the chain: it must rebuild
    itself through the plugin registry, since a lambda cannot be pickled."""
    import pickle

    from merx import plugins

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "polarity.py").write_text(POLARITY_PLUGIN)
    wave, _ = audio_chains(audio_items({"name": "polarity"}, AUGS[0]), SR)
    payload = pickle.dumps(wave)
    plugins.reset()  # as in a fresh process
    copy = pickle.loads(payload)
    assert copy.names() == ["polarity", "gaussian_noise"] and copy.fingerprint() == wave.fingerprint()
    y = np.linspace(-0.5, 0.5, SR, dtype=np.float32)
    assert np.array_equal(copy(y, generator(3, "waveform", 0, "s0")), wave(y, generator(3, "waveform", 0, "s0")))
    assert np.array_equal(copy.steps[0].apply(y, None), -y)


BROKEN_MASK_PLUGIN = '''
from merx import hookimpl

@hookimpl
def register_audio_augmentations(register):
    register("broken_mask", broken_mask)

def broken_mask():
    """A spectrogram mask with a bug: it indexes past the last mel band."""
    from merx.augment import spectrogram
    return spectrogram(lambda db, rng: db[db.shape[0] + 5, :])
'''


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_augmentation_failing_in_training_is_one_line_naming_it_even_from_a_worker(tmp_path, songs, num_workers):
    from merx.errors import PluginRuntimeError
    from merx.plugins import get_registry

    (tmp_path / "plugins").mkdir()
    plugin = tmp_path / "plugins" / "broken_mask.py"
    plugin.write_text(BROKEN_MASK_PLUGIN)
    get_registry(reload=True)
    view = training_view(songs, features_cfg(), [{"name": "broken_mask"}], tmp_path)
    ds = SongDataset(songs, "classification", view.mel_view, train=True, seed=0, audio_augment=view)
    loader = make_loader(ds, batch_size=2, shuffle=False, num_workers=num_workers, seed=0)
    with pytest.raises(PluginRuntimeError) as info:
        list(loader)
    assert str(info.value) == (f"audio augmentation 'broken_mask' (local: {plugin}) failed while augmenting a "
                               f"training song: IndexError: index 21 is out of bounds for axis 0 with size 16")
