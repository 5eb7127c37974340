"""The feature bank gives the inputs of the per-song path, and a run trained on it the same model."""

import pytest
import torch

from merx.config import resolve

MASKS = [{"name": "frequency_mask", "max_width": 5, "n_masks": 2, "p": 0.8},
         {"name": "time_mask", "max_width": 9, "fill": "min", "p": 0.7},
         {"name": "time_mask", "max_width": 4, "n_masks": 2}]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bank-cache"))


@pytest.fixture
def experiment(cache_dir, tiny_bert_dir):
    """24 synthetic songs of 1-2 s cropped to 1.5 s: some longer than the window, some padded."""

    def make(crop="random", audio=(), text=(), strategy="precompute", **train):
        return resolve({
            "seed": 3, "task": "classification",
            "data": {"source": {"name": "synthetic", "n_songs": 24, "duration": 2.0, "min_duration": 1.0},
                     "cache_dir": cache_dir},
            "features": {"n_mels": 16, "duration": 1.5, "workers": 1, "crop": crop},
            "model": {"audio": {"name": "vggish", "channels": [4, 8], "hidden": 16, "out_dim": 8},
                      "text": {"name": "huggingface", "model": tiny_bert_dir, "max_length": 64},
                      "head": {"hidden": [8]}},
            "augment": {"audio": list(audio), "text": list(text), "strategy": strategy, "variants": 2},
            "train": {"epochs": 2, "batch_size": 5, "device": "cpu", **train},
        })

    return make


def prepared_data(cfg):
    from merx.pipeline import build, datasets, prepare
    from merx.plugins import get_registry
    from merx.train import seed_everything

    seed_everything(0)
    prepared = prepare(cfg, progress=False)
    model = build(cfg, get_registry())
    return datasets(cfg, prepared, model, "cpu"), model


def per_song(dataset, epoch):
    dataset.set_epoch(epoch)
    return {item["song_id"]: item for item in (dataset[i] for i in range(len(dataset)))}


def from_bank(loader, epoch):
    loader.epoch = epoch - 1
    out = {}
    for batch in loader:
        for j, song in enumerate(batch["song_id"]):
            out[song] = {k: v[j] for k, v in batch.items() if torch.is_tensor(v)}
    return out


WAVEFORM = [{"name": "gain", "p": 0.8}, {"name": "time_stretch", "min_rate": 0.8, "max_rate": 1.2}]


@pytest.mark.parametrize("crop, waveform", [("head", False), ("middle", False), ("max_energy", False),
                                            ("random", False), ("middle", True), ("random", True)])
def test_bank_inputs_equal_the_per_song_inputs_for_every_crop_and_mask(experiment, crop, waveform):
    from merx.features.bank import bank_loaders

    # With waveform: precomputed variants (time-stretched: of other lengths), one picked per epoch.
    data, _ = prepared_data(experiment(crop=crop, audio=(WAVEFORM if waveform else []) + MASKS))
    assert data["train"].audio_augment.variants is not None or not waveform
    # Two batch sizes: what a song gets cannot depend on the batch it lands in.
    for batch_size in (5, 24):
        loaders, _ = bank_loaders(data, batch_size, seed=3, device="cpu", setting="auto")
        for split in ("train", "validate", "test"):
            for epoch in (1, 2):
                want, got = per_song(data[split], epoch), from_bank(loaders[split], epoch)
                assert want.keys() == got.keys()
                for song, item in want.items():
                    assert set(item) - {"song_id"} == set(got[song])
                    for key in ("target", "text_pooled"):
                        assert torch.equal(item[key], got[song][key]), (split, song, key)
                    if split == "train":
                        # The masks' fill means are summed in another order: equal within float32 rounding.
                        torch.testing.assert_close(got[song]["mel"], item["mel"], rtol=0, atol=1e-5)
                    else:
                        assert torch.equal(got[song]["mel"], item["mel"]), (split, song)
    # The bank is not trivially equal: masks and random crops differ between epochs.
    train = bank_loaders(data, 5, seed=3, device="cpu", setting="auto")[0]["train"]
    one, two = from_bank(train, 1), from_bank(train, 2)
    assert any(not torch.equal(one[s]["mel"], two[s]["mel"]) for s in one)


def test_bank_crops_without_masks_are_bit_identical(experiment):
    from merx.features.bank import bank_loaders

    data, _ = prepared_data(experiment(crop="random"))
    train = bank_loaders(data, 7, seed=3, device="cpu", setting=False)[0]["train"]
    for epoch in (1, 3):
        want, got = per_song(data["train"], epoch), from_bank(train, epoch)
        assert all(torch.equal(want[s]["mel"], got[s]["mel"]) for s in want)
    lengths = {int(n) for n in train.bank.lengths}
    assert min(lengths) < train.bank.n_frames < max(lengths)  # both padded and cropped songs were compared


def train_with(cfg, loaders, model):
    from merx.config.settings import Experiment
    from merx.train import Trainer, evaluate

    exp = Experiment.from_config(cfg)
    torch.manual_seed(11)  # the same dropout draws for both paths
    trainer = Trainer(model, loaders["train"], loaders["validate"], exp.train, exp.task, torch.device("cpu"),
                      progress=False)
    fit = trainer.fit()
    test, predictions = evaluate(model, loaders["test"], exp.task, torch.device("cpu"))
    return fit, test, predictions


def test_a_run_on_the_bank_trains_the_model_of_the_dataloader_path(experiment):
    import copy

    from merx.dataset import make_loader
    from merx.features.bank import bank_loaders

    cfg = experiment(crop="random", audio=MASKS, epochs=3)
    data, model = prepared_data(cfg)
    twin = copy.deepcopy(model)
    per_song_loaders = {split: make_loader(ds, 5, shuffle=split == "train", num_workers=0, seed=3)
                        for split, ds in data.items()}
    bank = bank_loaders(data, 5, seed=3, device="cpu", setting="auto")[0]
    fit_a, test_a, pred_a = train_with(cfg, per_song_loaders, model)
    fit_b, test_b, pred_b = train_with(cfg, bank, twin)
    assert fit_a.best_epoch == fit_b.best_epoch and fit_a.epochs_run == fit_b.epochs_run == 3
    for a, b in zip(fit_a.history, fit_b.history, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm_pre_clip", "val_macro_f1"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert test_a == pytest.approx(test_b, rel=1e-4, abs=1e-6)
    assert [p["pred_quadrant"] for p in pred_a] == [p["pred_quadrant"] for p in pred_b]
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_the_run_chooses_the_bank_unless_inputs_need_per_song_work(experiment):
    from merx.dataset import EpochLoader
    from merx.features.bank import BankLoader
    from merx.pipeline import loaders

    cases = [({"audio": MASKS}, BankLoader, "feature bank in memory"),
             ({"audio": WAVEFORM + MASKS}, BankLoader, "feature bank in memory"),
             ({"audio": [{"name": "gain"}], "strategy": "on_the_fly"}, EpochLoader, "waveform augmentation"),
             ({"text": [{"name": "word_delete", "aug_p": 0.1}]}, EpochLoader, "text augmentation")]
    for options, kind, words in cases:
        cfg = experiment(**options)
        data, _ = prepared_data(cfg)
        chosen, path = loaders(cfg, data, torch.device("cpu"))
        assert all(isinstance(loader, kind) for loader in chosen.values()), options
        assert words in path


def test_frozen_lyrics_are_encoded_once_across_runs(experiment, cache_dir):
    from pathlib import Path

    prepared_data(experiment())
    cached = list((Path(cache_dir) / "text").rglob("*.pt"))
    assert len(cached) >= 20  # one file per distinct lyrics text of every split


def test_data_on_device_takes_auto_true_or_false_and_says_so_otherwise(experiment):
    from merx.config import ConfigError

    for value in ("auto", True, False):
        assert experiment(data_on_device=value)["train"]["data_on_device"] == value
    with pytest.raises(ConfigError, match=r"must be one of 'auto', true, false, got 'yes'"):
        experiment(data_on_device="yes")
    with pytest.raises(ConfigError, match=r"expected a string or true or false, got 1"):
        experiment(data_on_device=1)


def test_a_run_says_which_path_its_inputs_take(experiment, tmp_path):
    from rich.console import Console

    from merx.pipeline import run
    from merx.store import RunStore

    console = Console(record=True, width=200)
    store = RunStore(str(tmp_path / "results.db"))
    try:
        result = run(experiment(epochs=1), None, store, progress=False, console=console)
    finally:
        store.close()
    assert result.status == "completed"
    assert "inputs: feature bank in memory (" in console.export_text()
