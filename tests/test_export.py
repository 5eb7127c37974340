"""merx export: CSV and JSON round-trips on real tiny runs, and exact comparison tables."""

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.compare import resolve_subjects
from merx.config import apply_sets, config_hash, flatten, resolve
from merx.export import latex_table, markdown_table, read_csv, rows, write_csv
from merx.store import RunStore

from tiny_experiment import tiny_raw as _tiny_raw


def tiny_raw(bert_dir, cache_dir, task) -> dict:
    return _tiny_raw(bert_dir, cache_dir, task, name=f"tiny_{task}", tags=["paper"])


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def real_db(tmp_path_factory, tiny_bert_dir):
    """run1: classification (class probabilities), run2: regression (valence/arousal)."""
    from merx.pipeline import run

    work = tmp_path_factory.mktemp("export-real")
    cache = tmp_path_factory.getbasetemp() / "tiny-data-cache"  # shared with the other modules' runs
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        store = RunStore(work / "results.db")
        for task in ("classification", "regression"):
            run(resolve(tiny_raw(tiny_bert_dir, cache, task), "tiny.toml"), "tiny.toml", store, progress=False)
        store.close()
    return work / "results.db"


def test_predictions_csv_round_trips(real_db, tmp_path):
    out = tmp_path / "p.csv"
    result = invoke("export", "run1", "run2", "--what", "predictions", "--out", out, "--db", real_db)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        back = read_csv(fh)
    store = RunStore(real_db)
    expected = [(f"run{i}", p) for i in (1, 2) for p in store.get_predictions(i)]
    assert len(back) == len(expected) > 0
    for row, (run, p) in zip(back, expected, strict=True):
        assert row["run"] == run and str(row["song_id"]) == p["song_id"] and row["split"] == p["split"]
        for key in ("true_valence", "true_arousal", "pred_valence", "pred_arousal", "true_quadrant", "pred_quadrant"):
            assert row[key] == p[key]  # floats exactly: CSV holds repr()
        probs = [row[f"prob_Q{k}"] for k in range(1, 5)]
        assert probs == (p["probs"] or [None] * 4)
    assert math.fsum(back[0][f"prob_Q{k}"] for k in range(1, 5)) == pytest.approx(1.0)  # classification run


def test_json_exports_equal_the_store(real_db, tmp_path):
    store = RunStore(real_db)
    for what in ("runs", "metrics", "baselines", "epochs", "predictions"):
        out = tmp_path / f"{what}.json"
        assert invoke("export", "--what", what, "--format", "json", "--out", out, "--db", real_db).exit_code == 0
        back = json.loads(out.read_text())
        assert back == json.loads(json.dumps(rows(store, what, [1, 2]))), what
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert [r["run"] for r in runs] == ["run1", "run2"] and runs[0]["tags"] == ["paper"]
    assert runs[1]["test.valence_mae"] == store.get_run(2)["metrics"]["test"]["valence_mae"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {(m["split"], m["metric"]): m["value"] for m in metrics if m["run"] == "run1"} == {
        (split, k): v for split, ms in store.get_run(1)["metrics"].items() for k, v in ms.items()}


def test_runs_csv_holds_flat_config_and_metrics(real_db, tmp_path):
    text = invoke("export", "--experiment", "tiny_regression", "--db", real_db).output  # stdout, csv
    (row,) = read_csv(io.StringIO(text))
    run = RunStore(real_db).get_run(2)
    assert row["run"] == "run2" and str(row["config_hash"]) == run["config_hash"] and row["tags"] == ["paper"]
    for key, value in flatten(run["config"]).items():
        assert row[f"config.{key}"] == (None if value == "" else value), key  # CSV: empty is empty
    for metric, value in run["metrics"]["test"].items():
        assert row[f"test.{metric}"] == value
    assert "tiny_classification" not in text


def test_csv_writer_and_reader_agree_on_types():
    records = [{"a": 1, "b": 0.1 + 0.2, "c": None, "d": [1, "x"], "e": "Q1", "f": True, "h": "007"},
               {"a": 2, "g": 1e-300, "h": "-0.5"}]
    buf = io.StringIO()
    write_csv(records, buf)
    buf.seek(0)
    assert read_csv(buf) == [{**records[0], "g": None}, {"a": 2, "b": None, "c": None, "d": None, "e": None,
                                                        "f": None, "h": -0.5, "g": 1e-300}]


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_quoted_and_read_back():
    # OWASP's CSV injection: a cell starting with = + - @ tab or CR is a formula to Excel,
    # LibreOffice and Google Sheets. Text gets a leading ', numbers stay numbers.
    records = [{"note": '=HYPERLINK("http://evil","x")', "a": "+cmd", "b": "-2+3", "c": "@SUM(A1)",
                "d": "\tx", "e": "\r=y", "f": "'=already quoted", "g": "'plain", "h": "-0.5",
                "value": -0.25, "n": -3, "k": "'"},
               {"=key": "x"}]
    buf = io.StringIO()
    write_csv(records, buf)
    text = buf.getvalue()
    head, first, second = list(csv.reader(io.StringIO(text)))
    cell = dict(zip(head, first, strict=True))
    assert cell["note"] == '\'=HYPERLINK("http://evil","x")'
    assert (cell["a"], cell["b"], cell["c"], cell["d"], cell["e"]) == ("'+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "'\r=y")
    assert cell["f"] == "''=already quoted"  # so that reading back strips exactly one quote
    assert (cell["g"], cell["k"]) == ("'plain", "'")  # nothing to neutralise: as written
    assert (cell["h"], cell["value"], cell["n"]) == ("-0.5", "-0.25", "-3")  # numbers, not formulas
    assert "'=key" in head
    buf.seek(0)
    back = read_csv(buf)
    assert back[0] == {**records[0], "h": -0.5, "=key": None}  # "-0.5" reads as a number, as before
    assert back[1]["=key"] == "x"


# -- comparison tables on hand-made groups --------------------------------------------------------

def record(store, cfg, metrics):
    rid = store.start_run(experiment=cfg["name"], experiment_file=None, config=cfg, config_hash=config_hash(cfg),
                          group_hash=config_hash(cfg, include_seed=False), seed=cfg["seed"], task=cfg["task"],
                          device="cpu", versions={}, git_commit=None)
    store.add_metrics(rid, "test", metrics)
    store.finish_run(rid, "completed")


@pytest.fixture
def groups_db(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    for fusion, maes in (("concat", [0.10, 0.12, 0.14]), ("audio_attention", [0.20, 0.22, 0.24])):
        for seed, mae in enumerate(maes):
            cfg = resolve(apply_sets({"name": "fus", "seed": seed}, [f"model.fusion.name={fusion}"]), "fus.toml")
            record(store, cfg, {"valence_mae": mae, "quadrant_macro_f1": 0.5 + mae})
    return store


def test_markdown_table_is_exact(groups_db):
    subjects = resolve_subjects(groups_db, ["fus"])
    labels = [s.label for s in subjects]
    text = markdown_table(subjects, ["valence_mae", "quadrant_macro_f1"], digits=3)
    assert text == (
        "| model | runs | model.fusion.name | model.fusion.reduction | valence_mae | quadrant_macro_f1 |\n"
        "|---|---|---|---|---:|---:|\n"
        f"| {labels[0]} | 3 | concat | — | **0.120 ± 0.020** | 0.620 ± 0.020 |\n"
        f"| {labels[1]} | 3 | audio_attention | 4 | 0.220 ± 0.020 | **0.720 ± 0.020** |\n")


def test_latex_table_escapes_and_bolds_the_best(groups_db, tmp_path):
    out = tmp_path / "t.tex"
    result = invoke("export", "fus", "--format", "latex", "--metric", "valence_mae", "--out", out,
                    "--db", tmp_path / "hand.db")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == r"\begin{tabular}{lrllr}" and lines[1] == r"\toprule"
    assert lines[2] == r"model & runs & model.fusion.name & model.fusion.reduction & valence\_mae \\"
    assert lines[4].endswith(r"& 3 & concat & — & $\mathbf{0.1200 \pm 0.0200}$ \\")
    assert lines[5].endswith(r"& 3 & audio\_attention & 4 & $0.2200 \pm 0.0200$ \\")
    assert lines[-1] == r"\end{tabular}"
    assert latex_table(resolve_subjects(groups_db, ["fus"]))  # default columns work too
    bad = invoke("export", "fus", "--format", "markdown", "--metric", "nope", "--db", tmp_path / "hand.db")
    assert bad.exit_code == 2 and "no test metric 'nope'" in bad.output
