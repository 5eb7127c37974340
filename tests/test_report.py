"""merx report: PNG plots and an HTML page for real tiny runs, a group of seeds, and a
hand-made classification run."""

import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from merx.cli import cli
from merx.config import apply_sets, config_hash, resolve
from merx.store import RunStore

from tiny_experiment import tiny_raw as _tiny_raw


def tiny_raw(bert_dir, cache_dir) -> dict:
    return _tiny_raw(bert_dir, cache_dir, "regression")


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def real_db(tmp_path_factory, tiny_bert_dir):
    """run1, run2: one regression config with seeds 1 and 2."""
    from merx.pipeline import run

    work = tmp_path_factory.mktemp("report-real")
    cache = tmp_path_factory.getbasetemp() / "tiny-data-cache"  # shared with the other modules' runs
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        store = RunStore(work / "results.db")
        for seed in (1, 2):
            cfg = resolve(apply_sets(tiny_raw(tiny_bert_dir, cache), [f"seed={seed}"]), "tiny.toml")
            run(cfg, "tiny.toml", store, progress=False)
        store.close()
    return work / "results.db"


def assert_png(path, min_size=(300, 200)):
    assert path.exists(), path
    with Image.open(path) as im:
        im.verify()  # a truncated or corrupt file raises
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 10  # not a blank canvas


def test_report_of_a_real_run(real_db, tmp_path):
    out = tmp_path / "rep"
    result = invoke("report", "run1", "--out", out, "--db", real_db)
    assert result.exit_code == 0, result.output
    for name in ("learning_curves", "confusion_matrix", "va_scatter"):
        assert_png(out / f"{name}.png")
    import matplotlib.image

    assert matplotlib.image.imread(out / "va_scatter.png").ndim == 3
    page = (out / "index.html").read_text()
    assert set(re.findall(r'<img src="([^"]+)"', page)) == {"learning_curves.png", "confusion_matrix.png",
                                                            "va_scatter.png"}
    assert "run1 tiny" in page and "quadrant_centre" in page and "valence_mae" in page
    assert "[train.early_stopping]" in page  # the config
    assert "index.html" in result.output


def test_report_of_a_group_of_seeds(real_db, tmp_path):
    out = tmp_path / "group"
    result = invoke("report", "tiny", "--out", out, "--db", real_db)
    assert result.exit_code == 0, result.output
    for name in ("learning_curves", "confusion_matrix", "va_scatter"):
        assert_png(out / f"{name}.png")
    page = (out / "index.html").read_text()
    assert "2 runs (seeds 1, 2)" in page and "run1 (seed 1, completed), run2 (seed 2, completed)" in page
    assert "mean ± std" in page


def test_report_of_a_classification_run_and_errors(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    cfg = resolve({"name": "cls", "task": "classification",
                   "train": {"early_stopping": {"monitor": "val_macro_f1", "mode": "max"}}}, "cls.toml")
    rid = store.start_run(experiment="cls", experiment_file=None, config=cfg, config_hash=config_hash(cfg),
                          group_hash=config_hash(cfg, include_seed=False), seed=0, task="classification",
                          device="cpu", versions={}, git_commit=None)
    for epoch, (loss, f1) in enumerate([(1.3, 0.3), (1.1, 0.45), (1.0, 0.5)], start=1):
        store.add_epoch(rid, epoch, {"train_loss": loss, "val_loss": loss + 0.1, "val_macro_f1": f1,
                                     "lr_audio": 1e-3, "lr_head": 1e-3, "grad_norm_pre_clip": 2.0 / epoch})
    quadrants = ["Q1", "Q2", "Q3", "Q4"] * 3
    store.add_predictions(rid, [{"song_id": f"s{i}", "split": "test", "true_quadrant": q,
                                 "pred_quadrant": quadrants[(i + (i % 3 == 0)) % 12], "probs": [0.25] * 4}
                                for i, q in enumerate(quadrants)])
    store.add_metrics(rid, "test", {"accuracy": 0.5, "macro_f1": 0.5})
    store.finish_run(rid, "completed", best_epoch=3, epochs_run=3)
    out = tmp_path / "cls"
    result = invoke("report", "run1", "--out", out, "--db", tmp_path / "hand.db")
    assert result.exit_code == 0, result.output
    assert_png(out / "learning_curves.png")
    assert_png(out / "confusion_matrix.png")
    assert not (out / "va_scatter.png").exists()
    assert "no valence/arousal predictions" in (out / "index.html").read_text()

    result = invoke("report", "run7", "--db", tmp_path / "hand.db")
    assert result.exit_code == 2 and "no run run7" in result.output
