"""The tiny experiment that real-run tests share: trains in about two seconds.

24 two-second synthetic songs, a 2-block CNN, a tiny BERT (the ``tiny_bert_dir`` fixture)."""


def tiny_raw(bert_dir, cache_dir, task="regression", name="tiny", **top) -> dict:
    return {
        "name": name, "task": task, "seed": 1, **top,
        "data": {"cache_dir": str(cache_dir),
                 "source": {"name": "synthetic", "n_songs": 24, "duration": 2.0, "min_duration": 1.0}},
        "features": {"n_mels": 16, "n_fft": 512, "hop_length": 256, "duration": 1.0, "workers": 1},
        "model": {"audio": {"name": "vggish", "channels": [4, 8], "hidden": 16, "out_dim": 8},
                  "text": {"name": "huggingface", "model": bert_dir, "max_length": 32},
                  "head": {"hidden": [8]}},
        "train": {"batch_size": 8, "epochs": 2, "early_stopping": {"patience": 0}},
    }


def tiny_toml(bert_dir, cache_dir, task="classification", epochs=2) -> str:
    """The same experiment as an experiment file; its name comes from the file's stem."""
    from merx.config import to_toml

    raw = tiny_raw(bert_dir, cache_dir, task)
    del raw["name"]
    raw["train"]["epochs"] = epochs
    return to_toml(raw)
