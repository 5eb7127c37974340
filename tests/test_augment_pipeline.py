"""Augmentation inside a run: training split only, reproducible, recorded with the run."""

import numpy as np
import pytest
import torch

from merx.config import resolve

AUDIO = [{"name": "gaussian_noise", "p": 0.7}, {"name": "time_stretch", "min_rate": 0.9, "max_rate": 1.1},
         {"name": "gain", "p": 0.5}, {"name": "frequency_mask", "max_width": 3}, {"name": "time_mask", "max_width": 6}]
TEXT = [{"name": "word_delete", "aug_p": 0.1}, {"name": "keyboard", "p": 0.5}]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("augment-cache"))


@pytest.fixture
def experiment(cache_dir, tiny_bert_dir):
    """A tiny experiment: 24 synthetic songs of 2 s, 16 mels, a small CNN, a tiny frozen BERT."""

    def make(augment: bool, seed: int = 0, strategy: str = "precompute", **train):
        return resolve({
            "seed": seed, "task": "classification",
            "data": {"source": {"name": "synthetic", "n_songs": 24, "duration": 2.0, "min_duration": 1.5},
                     "cache_dir": cache_dir},
            "features": {"n_mels": 16, "duration": 1.5, "workers": 1, "crop": "random"},
            "model": {"audio": {"name": "vggish", "channels": [4, 8], "hidden": 16, "out_dim": 8},
                      "text": {"name": "huggingface", "model": tiny_bert_dir, "max_length": 64},
                      "head": {"hidden": [8]}},
            "augment": {"audio": AUDIO, "text": TEXT, "strategy": strategy, "variants": 2} if augment else {},
            "train": {"epochs": 2, "batch_size": 8, "device": "cpu",
                      "early_stopping": {"monitor": "val_macro_f1", "mode": "max"}, **train},
        })

    return make


def datasets_of(cfg, model=None):
    from merx.pipeline import build, datasets, prepare
    from merx.plugins import get_registry

    prepared = prepare(cfg, progress=False)
    model = model or build(cfg, get_registry())
    return datasets(cfg, prepared, model, "cpu"), model


def items(dataset, epoch=1):
    dataset.set_epoch(epoch)
    return [dataset[i] for i in range(len(dataset))]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]
                                        for k in a)


def test_validation_and_test_inputs_are_bit_identical_with_and_without_augmentation(experiment):
    plain, model = datasets_of(experiment(augment=False))
    augmented, _ = datasets_of(experiment(augment=True), model)
    for split in ("validate", "test"):
        for a, b in zip(items(plain[split]), items(augmented[split]), strict=True):
            assert same(a, b), (split, a["song_id"])
    # ... while the training split does change, in audio and in text.
    train_plain, train_aug = items(plain["train"]), items(augmented["train"])
    assert not any(torch.equal(a["mel"], b["mel"]) for a, b in zip(train_plain, train_aug, strict=True))
    assert not all(torch.equal(a["text_pooled"], b["text_pooled"]) for a, b in zip(train_plain, train_aug, strict=True))


def test_same_seed_gives_identical_training_inputs_and_another_seed_different_ones(experiment):
    first, model = datasets_of(experiment(augment=True, seed=0))
    again, _ = datasets_of(experiment(augment=True, seed=0), model)
    other, _ = datasets_of(experiment(augment=True, seed=1), model)
    for epoch in (1, 2):
        a, b, c = items(first["train"], epoch), items(again["train"], epoch), items(other["train"], epoch)
        assert all(same(x, y) for x, y in zip(a, b, strict=True))
        assert not any(torch.equal(x["mel"], z["mel"]) for x, z in zip(a, c, strict=True))
    epoch1, epoch2 = items(first["train"], 1), items(first["train"], 2)
    assert not all(torch.equal(x["mel"], y["mel"]) for x, y in zip(epoch1, epoch2, strict=True))


def test_an_augmented_run_completes_and_records_its_augmentations(experiment, tmp_path):
    from merx.pipeline import run
    from merx.store import RunStore

    cfg = experiment(augment=True, strategy="on_the_fly", num_workers=2)
    store = RunStore(str(tmp_path / "results.db"))
    result = run(cfg, None, store, progress=False)
    assert result.status == "completed" and result.epochs_run == 2
    stored = store.get_run(result.run_id)
    used = {(p["kind"], p["name"]) for p in stored["plugins"]}
    assert {("audio_augmentations", t["name"]) for t in AUDIO} <= used
    assert {("text_augmentations", t["name"]) for t in TEXT} <= used
    assert stored["config"]["augment"] == cfg["augment"]  # the applied list with every parameter
    assert stored["config"]["augment"]["audio"][0] == {"name": "gaussian_noise", "min_snr_db": 15.0,
                                                       "max_snr_db": 40.0, "p": 0.7}
    assert all(np.isfinite(e["train_loss"]) for e in stored["epochs"].values())
