"""merx compare on results databases written by real tiny runs, and on hand-made ones whose
statistics are computed by hand."""

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.compare import CompareError, compare, resolve_subjects
from merx.config import apply_sets, config_hash, flatten, resolve
from merx.stats import holm
from merx.store import RunStore

from tiny_experiment import tiny_raw as _tiny_raw


def tiny_raw(bert_dir, cache_dir, task="regression") -> dict:
    return _tiny_raw(bert_dir, cache_dir, task)


def invoke(*args):
    # A wide terminal: rich would otherwise wrap titles at 80 columns.
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def real_db(tmp_path_factory, tiny_bert_dir):
    """run1, run2: the same config with seeds 1 and 2 (a group); run3: seed 1 with another head lr."""
    from merx.pipeline import run

    work = tmp_path_factory.mktemp("compare-real")
    cache = tmp_path_factory.getbasetemp() / "tiny-data-cache"  # shared with the other modules' runs
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # checkpoints go to ./runs
        store = RunStore(work / "results.db")
        for sets in (["seed=1"], ["seed=2"], ["seed=1", "train.lr.head=3e-3"]):
            cfg = resolve(apply_sets(tiny_raw(tiny_bert_dir, cache), sets), "tiny.toml")
            assert run(cfg, "tiny.toml", store, progress=False).status == "completed"
        store.close()
    return work / "results.db"


# -- real runs --------------------------------------------------------------------------------

def test_compare_two_real_runs_shows_exactly_the_differing_keys_and_a_paired_test(real_db):
    result = invoke("compare", "run1", "run3", "--json", "--resamples", 500, "--db", real_db)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["mode"] == "runs"
    assert out["config"]["differing"] == ["train.lr.head"]
    assert out["config"]["keys"] == {"train.lr.head": ["0.001", "0.003"]}
    assert out["provenance"] == {}  # same data, plugins, versions, commit
    store = RunStore(real_db)
    stored = {i: store.get_run(i)["metrics"]["test"] for i in (1, 3)}
    for i in (1, 3):  # the primary regression metric, derived: runs store each dimension's MAE
        stored[i]["va_mae"] = (stored[i]["valence_mae"] + stored[i]["arousal_mae"]) / 2
    for metric, row in out["metrics"].items():
        a, b = stored[1][metric], stored[3][metric]
        assert row["subjects"][0]["mean"] == pytest.approx(a)
        assert row["difference"][1] == pytest.approx(b - a)
    test = out["tests"][0]
    assert (test["a"], test["b"], test["kind"]) == ("run1", "run3", "per-song")
    n = store.get_run(1)["prediction_count"]
    assert test["n_songs"] == n and "skipped" not in test
    assert set(test["bootstrap"]) == {"va_mae", "valence_mae", "arousal_mae", "valence_r2", "arousal_r2",
                                      "quadrant_macro_f1"}
    mae = test["bootstrap"]["valence_mae"]
    assert mae["estimate"] == pytest.approx(out["metrics"]["valence_mae"]["difference"][1])
    assert mae["low"] <= mae["estimate"] <= mae["high"]
    mc = test["mcnemar"]
    assert mc["what"] == "implied quadrant" and mc["only_a"] + mc["only_b"] + mc["both"] + mc["neither"] == n
    assert set(out["baselines"]) == {"mean", "quadrant_centre", "random", "majority"}
    assert out["training"]["epochs_run"][1]["mean"] == 2


def test_compare_json_names_the_primary_metric_and_gives_raw_and_holm_adjusted_p_values(real_db):
    result = invoke("compare", "run1", "run3", "--json", "--resamples", 400, "--db", real_db)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["primary_metric"] == "va_mae" and out["tested_metrics"][0] == "va_mae"
    test = out["tests"][0]
    primary = test["bootstrap"]["va_mae"]
    assert primary["estimate"] == pytest.approx(out["metrics"]["va_mae"]["difference"][1])
    assert primary["role"] == "primary" and primary["label"] == "primary (confirmatory)"
    assert primary["adjustment"] == "none" and primary["family_size"] == 1
    assert primary["p_value"] is None or 0 < primary["p_value"] <= 1
    assert primary["p_adjusted"] == primary["p_value"]
    # Every other test shown, McNemar's included, is one exploratory family, adjusted by Holm.
    exploratory = [e for m, e in test["bootstrap"].items() if m != "va_mae"] + [test["mcnemar"]]
    raw = [e["p_value"] for e in exploratory]
    size = sum(p is not None for p in raw)
    assert size >= 2 and out["multiple_testing"] == {**out["multiple_testing"], "primary_tests": 1,
                                                       "exploratory_tests": size}
    assert [e["p_adjusted"] for e in exploratory] == pytest.approx(holm(raw))
    for e in exploratory:
        assert e["role"] == "exploratory" and e["adjustment"] == "holm" and e["family_size"] == size
        assert e["label"] == f"exploratory, Holm-adjusted over {size} tests"
        assert e["p_value"] is None or e["p_adjusted"] >= e["p_value"]
        assert e["significant"] == (e["p_adjusted"] is not None and e["p_adjusted"] < 0.05)
    text = invoke("compare", "run1", "run3", "--resamples", 400, "--db", real_db).output
    assert "[primary (confirmatory)] va_mae: run3 - run1" in text
    assert f"[exploratory, Holm-adjusted over {size} tests] valence_mae" in text
    assert "Primary metric va_mae" in text and "va_mae (primary)" in text


def test_primary_option_picks_the_confirmatory_metric_and_refuses_an_unknown_one(real_db):
    out = json.loads(invoke("compare", "run1", "run3", "--json", "--resamples", 200, "--primary", "valence_mae",
                            "--db", real_db).output)
    assert out["primary_metric"] == "valence_mae"
    assert out["tests"][0]["bootstrap"]["valence_mae"]["role"] == "primary"
    assert all(e["role"] == "exploratory" for m, e in out["tests"][0]["bootstrap"].items() if m != "valence_mae")
    bad = invoke("compare", "run1", "run3", "--primary", "macro_f1", "--db", real_db)
    assert bad.exit_code == 2 and "macro_f1 is a classification metric" in bad.output


def test_compare_text_view_and_seed_only_difference(real_db):
    result = invoke("compare", "run1", "run2", "--resamples", 300, "--db", real_db)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "config keys that differ" in text and "seed" in text and "train.lr.head" not in text
    assert "paired bootstrap interval" in text and "McNemar" in text
    assert "test metrics" in text and "quadrant_centre" in text and "wall time" in text
    out = json.loads(invoke("compare", "run1", "run2", "--json", "--metric", "valence_mae", "--resamples", 100,
                            "--db", real_db).output)
    assert out["config"]["differing"] == ["seed"]


def test_compare_all_shows_every_key(real_db):
    out = json.loads(invoke("compare", "run1", "run3", "--all", "--json", "--resamples", 100, "--db", real_db).output)
    cfg = RunStore(real_db).get_run(1)["config"]
    assert set(out["config"]["keys"]) == set(flatten(cfg))
    assert out["config"]["differing"] == ["train.lr.head"]
    assert "torch" in out["provenance"]["versions"]


def test_an_experiment_name_compares_its_groups(real_db):
    out = json.loads(invoke("compare", "tiny", "--json", "--db", real_db).output)
    assert out["mode"] == "groups"
    group, single = out["subjects"]
    assert group["runs"] == ["run1", "run2"] and group["seeds"] == [1, 2] and group["label"].startswith("tiny@")
    assert single["runs"] == ["run3"]
    store = RunStore(real_db)
    values = [store.get_run(i)["metrics"]["test"]["valence_mae"] for i in (1, 2)]
    row = out["metrics"]["valence_mae"]["subjects"][0]
    assert row["mean"] == pytest.approx(np.mean(values)) and row["std"] == pytest.approx(np.std(values, ddof=1))
    assert row["n"] == 2 and row["ci_low"] < row["mean"] < row["ci_high"]
    assert "at least two seeds" in out["tests"][0]["skipped"]
    # the group by its hash prefix, as merx runs shows it
    prefix = group["group_hash"][:8]
    again = json.loads(invoke("compare", f"@{prefix}", "run3", "--json", "--db", real_db).output)
    assert again["subjects"][0]["runs"] == ["run1", "run2"]


def test_unknown_ids_are_clear_errors(real_db):
    result = invoke("compare", "run1", "run99", "--db", real_db)
    assert result.exit_code == 2
    assert "no run run99" in result.output and "run3, run2, run1" in result.output
    result = invoke("compare", "run1", "tinny", "--db", real_db)
    assert result.exit_code == 2 and "did you mean 'tiny'?" in result.output
    result = invoke("compare", "run1", "--db", real_db)
    assert result.exit_code == 2 and "needs two runs" in result.output


# -- hand-made databases: exact statistics ---------------------------------------------------

def hand_cfg(seed=0, **sets):
    raw = apply_sets({"name": "hand", "task": "regression", "seed": seed}, [f"{k}={v}" for k, v in sets.items()])
    return resolve(raw, "hand.toml")


def record(store, cfg, test_metrics, predictions=(), versions=None):
    rid = store.start_run(experiment=cfg["name"], experiment_file=None, config=cfg, config_hash=config_hash(cfg),
                          group_hash=config_hash(cfg, include_seed=False), seed=cfg["seed"], task=cfg["task"],
                          device="cpu", versions=versions or {"torch": "2.13.0"}, git_commit="abc123")
    store.add_metrics(rid, "test", test_metrics)
    if predictions:
        store.add_predictions(rid, [{**p, "split": "test"} for p in predictions])
    store.finish_run(rid, "completed", best_epoch=1, epochs_run=1)
    return rid


# Six songs: true valence/arousal; run A predicts the centre (implied Q3) for all, run B is close.
SONGS = [("s1", 0.8, 0.8), ("s2", 0.2, 0.8), ("s3", 0.2, 0.2), ("s4", 0.8, 0.2), ("s5", 0.7, 0.9), ("s6", 0.3, 0.1)]
PRED_A = [(0.45, 0.45)] * 6
PRED_B = [(0.7, 0.7), (0.3, 0.7), (0.3, 0.3), (0.7, 0.3), (0.6, 0.8), (0.6, 0.2)]


def quadrant(v, a):
    return ("Q1" if v >= 0.5 else "Q2") if a >= 0.5 else ("Q4" if v >= 0.5 else "Q3")


def predictions(preds):
    return [{"song_id": sid, "true_valence": v, "true_arousal": a, "pred_valence": pv, "pred_arousal": pa,
             "true_quadrant": quadrant(v, a), "pred_quadrant": quadrant(pv, pa)}
            for (sid, v, a), (pv, pa) in zip(SONGS, preds, strict=True)]


def test_bootstrap_and_mcnemar_match_a_hand_computation(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    record(store, hand_cfg(**{"train.lr.head": 1e-3}), {"valence_mae": 0.2667}, predictions(PRED_A))
    record(store, hand_cfg(**{"train.lr.head": 3e-4, "features.n_mels": 64}), {"valence_mae": 0.1333},
           predictions(PRED_B))
    out = compare(store, resolve_subjects(store, ["run1", "run2"]), metrics=["valence_mae"], n_resamples=20000)
    assert out["config"]["differing"] == ["features.n_mels", "train.lr.head"]
    test = out["tests"][0]
    # valence errors by hand: A .35 .25 .25 .35 .25 .15, B .1 .1 .1 .1 .1 .3
    d = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.3]) - np.array([0.35, 0.25, 0.25, 0.35, 0.25, 0.15])
    boot = test["bootstrap"]["valence_mae"]
    assert boot["estimate"] == pytest.approx(d.mean()) == pytest.approx(0.8 / 6 - 1.6 / 6)
    exact = d[np.array(list(itertools.product(range(6), repeat=6)))].mean(axis=1)  # all 6^6 resamples
    assert (boot["low"], boot["high"]) == pytest.approx(tuple(np.percentile(exact, [2.5, 97.5])), abs=1e-9)
    # p inverts the percentile interval: twice the share of resamples on the far side of 0 (ties
    # at 0, e.g. s6 drawn three times against three 0.15s, count there too).
    exact_p = 2 * np.mean(exact >= -1e-12)
    assert exact_p == pytest.approx(0.0406, abs=1e-4)
    assert boot["p_value"] == pytest.approx(exact_p, abs=0.005)
    # implied quadrants: A right on s3, s6; B right on s1..s5
    mc = test["mcnemar"]
    assert (mc["only_a"], mc["only_b"], mc["both"], mc["neither"]) == (1, 4, 1, 0)
    assert mc["method"] == "exact binomial"
    assert mc["p_value"] == pytest.approx(2 * (math.comb(5, 0) + math.comb(5, 1)) / 2 ** 5) == pytest.approx(0.375)
    # valence_mae and McNemar are exploratory (va_mae is the primary): Holm over the two doubles
    # the smaller p, 0.041 -> 0.081, and the interval that excludes 0 is no longer a finding.
    assert boot["role"] == mc["role"] == "exploratory" and boot["family_size"] == mc["family_size"] == 2
    assert boot["p_adjusted"] == pytest.approx(2 * boot["p_value"]) and mc["p_adjusted"] == pytest.approx(0.375)
    assert boot["excludes_zero"] and not boot["significant"] and "run2 is better" not in boot["verdict"]
    assert "Holm-adjusted p = 0.08" in boot["verdict"] and "not significant" in boot["verdict"]
    assert "p = 0.375" in mc["verdict"] and "not significant" in mc["verdict"]
    primary = test["bootstrap"]["va_mae"]  # recomputed from the predictions though not stored
    assert out["primary_metric"] == "va_mae" and primary["role"] == "primary" and primary["family_size"] == 1
    assert primary["label"] == "primary (confirmatory)" and primary["p_adjusted"] == primary["p_value"]


def test_runs_on_different_test_songs_get_no_paired_test(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    record(store, hand_cfg(), {"valence_mae": 0.3}, predictions(PRED_A))
    record(store, hand_cfg(seed=1), {"valence_mae": 0.2}, predictions(PRED_B)[:5])
    out = compare(store, resolve_subjects(store, ["run1", "run2"]))
    assert "different songs (6 and 5, 5 in common)" in out["tests"][0]["skipped"]
    assert out["provenance"]["data"]["test songs"] == ["6", "5"]


def test_groups_report_mean_std_interval_and_a_paired_test_across_seeds(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    a_values, b_values = [0.5, 0.6, 0.7], [0.55, 0.62, 0.80]
    for seed, value in enumerate(a_values):
        record(store, hand_cfg(seed=seed), {"quadrant_macro_f1": value})
    for seed, value in enumerate(b_values):
        record(store, hand_cfg(seed=seed, **{"model.fusion.name": "audio_attention"}), {"quadrant_macro_f1": value},
               versions={"torch": "2.12.0"})
    subjects = resolve_subjects(store, ["hand"])
    assert [s.ids for s in subjects] == [[1, 2, 3], [4, 5, 6]]
    out = compare(store, subjects)
    assert out["mode"] == "groups"
    assert out["config"]["differing"] == ["model.fusion.name", "model.fusion.reduction"]
    assert out["provenance"]["versions"]["torch"] == ["2.13.0", "2.12.0"]
    a, b = out["metrics"]["quadrant_macro_f1"]["subjects"]
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 df) * s / sqrt(n)
    assert (a["mean"], a["std"], a["ci_low"], a["ci_high"]) == pytest.approx((0.6, 0.1, 0.6 - half, 0.6 + half))
    assert b["mean"] == pytest.approx(np.mean(b_values)) and b["std"] == pytest.approx(np.std(b_values, ddof=1))
    assert out["metrics"]["quadrant_macro_f1"]["difference"][1] == pytest.approx(np.mean(b_values) - 0.6)
    seed_test = out["tests"][0]["seed_tests"]["quadrant_macro_f1"]
    d = np.array(b_values) - np.array(a_values)
    assert seed_test["seeds"] == [0, 1, 2]
    assert seed_test["statistic"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))
    assert "better on average" in seed_test["verdict"]


def test_tags_select_runs_and_unknown_tags_are_named(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    record(store, hand_cfg(), {"valence_mae": 0.3})
    record(store, hand_cfg(**{"train.epochs": 5}), {"valence_mae": 0.2})
    store.tag_run(1, add=["baseline"])
    store.tag_run(2, add=["baseline"])
    assert [s.label for s in resolve_subjects(store, ["tag:baseline"])] == ["run1", "run2"]
    with pytest.raises(CompareError, match="no completed run is tagged 'nope'"):
        resolve_subjects(store, ["tag:nope"])
    with pytest.raises(CompareError, match="at least 4 hex digits"):
        resolve_subjects(store, ["@ab"])


# -- browsing: tags, notes, runs filters and sorting ----------------------------------------------

def test_tag_note_and_runs_filters_through_the_cli(tmp_path):
    db = tmp_path / "hand.db"
    store = RunStore(db)
    for seed, mae in enumerate([0.30, 0.10, 0.20]):
        record(store, hand_cfg(seed=seed), {"valence_mae": mae, "arousal_mae": mae, "quadrant_macro_f1": 1 - mae})
    other = record(store, hand_cfg(**{"name": "other", "train.epochs": 3}), {"valence_mae": 0.05})
    store.update_run(other, started_at="2020-01-01T10:00:00.000+00:00")

    assert invoke("tag", "run2", "baseline", "best", "--db", db).output.strip() == "run2 tags: baseline, best"
    assert invoke("tag", "run2", "best", "--remove", "--db", db).output.strip() == "run2 tags: baseline"
    assert invoke("tag", "run3", "baseline", "--db", db).exit_code == 0
    assert invoke("note", "run2", "lr too high", "--db", db).output.strip() == "run2: lr too high"
    assert invoke("note", "run2", "--db", db).output.strip() == "run2: lr too high"
    assert RunStore(db).get_run(2)["note"] == "lr too high"
    assert invoke("note", "run3", "--db", db).output.strip() == "run3 has no note"
    bad = invoke("tag", "run9", "x", "--db", db)
    assert bad.exit_code == 2 and "no run run9" in bad.output

    def ids(*args):
        result = invoke("runs", "--json", "--db", db, *args)
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.output)]

    assert ids() == [4, 3, 2, 1]
    assert ids("--tag", "baseline") == [3, 2]
    assert ids("--experiment", "hand", "--sort", "valence_mae") == [2, 3, 1]  # an error: lowest first
    assert ids("--sort", "quadrant_macro_f1") == [2, 3, 1, 4]  # a score: highest first, none last
    assert ids("--sort", "valence_mae", "--descending", "--limit", "2") == [1, 3]
    assert ids("--until", "2020-01-01") == [4] and ids("--since", "2020-01-02") == [3, 2, 1]
    assert ids("--since", "1d") == [3, 2, 1]
    group = RunStore(db).get_run(1)["group_hash"]
    assert ids("--group", group[:6]) == [3, 2, 1]
    text = invoke("runs", "--sort", "valence_mae", "--db", db).output
    assert "best valence_mae first" in text and "baseline — lr too high" in text
    bad = invoke("runs", "--since", "last tuesday", "--db", db)
    assert bad.exit_code == 2 and "is not a date" in bad.output


# -- the primary metric, multiple testing, degenerate seed tests ------------------------------

def two_groups(store, a_values, b_values, metric="va_mae"):
    """Group "hand" with seeds 0.. scoring ``a_values``, and one with another fusion scoring
    ``b_values``; a va_mae value is stored as equal valence and arousal MAE."""
    def stored(v):
        return {"valence_mae": v, "arousal_mae": v} if metric == "va_mae" else {metric: v}

    for seed, value in enumerate(a_values):
        record(store, hand_cfg(seed=seed), stored(value))
    for seed, value in enumerate(b_values):
        record(store, hand_cfg(seed=seed, **{"model.fusion.name": "audio_attention"}), stored(value))


def test_seed_pairs_that_all_differ_by_the_same_amount_give_p_null_not_zero(tmp_path):
    db = tmp_path / "hand.db"
    # 0.2 - 0.1 and 0.3 - 0.2 differ in the last bit: scipy would call that t = 1e15, p = 0.
    two_groups(RunStore(db), [0.1, 0.1, 0.2], [0.2, 0.2, 0.3])
    result = invoke("compare", "hand", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["tests"][0]["seed_tests"]["va_mae"]
    assert entry["p_value"] is None and entry["p_adjusted"] is None and entry["statistic"] is None
    assert "p undefined: every seed pair differs by exactly +0.1" in entry["verdict"]
    assert entry["significant"] is False and "p = 0" not in entry["verdict"]


def test_two_seed_pairs_are_never_called_significant(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    # b is worse by 0.100 and 0.101: a paired t-test with one degree of freedom gives p ~ 0.006.
    two_groups(store, [0.20, 0.30], [0.30, 0.401])
    out = compare(store, resolve_subjects(store, ["hand"]))
    entry = out["tests"][0]["seed_tests"]["va_mae"]
    assert entry["role"] == "primary" and entry["p_value"] < 0.05 and entry["p_adjusted"] == entry["p_value"]
    assert entry["significant"] is False and not entry["enough_seeds"]
    assert "too few seed pairs (2) for a test; run --seeds 3 or more" in entry["verdict"]
    assert f"p = {entry['p_value']:.3f}" in entry["verdict"] and "significant" not in entry["verdict"]
    # the same differences over three seeds are a test
    store = RunStore(tmp_path / "three.db")
    two_groups(store, [0.20, 0.30, 0.25], [0.30, 0.401, 0.35])
    entry = compare(store, resolve_subjects(store, ["hand"]))["tests"][0]["seed_tests"]["va_mae"]
    assert entry["significant"] is True and "significant at the 5% level" in entry["verdict"]
    assert "worse" in entry["verdict"]


def test_primary_can_be_chosen_and_unknown_ones_are_named(tmp_path):
    store = RunStore(tmp_path / "hand.db")
    for i, preds in enumerate((PRED_A, PRED_B, PRED_B[::-1])):
        record(store, hand_cfg(**{"train.epochs": i + 1}), {"valence_mae": 0.2}, predictions(preds))
    subjects = resolve_subjects(store, ["run1", "run2", "run3"])
    out = compare(store, subjects, primary="TEST_valence_mae", n_resamples=500)
    assert out["primary_metric"] == "valence_mae"
    first, second = out["tests"]
    # one primary test per pair: the two form their own family, Holm-adjusted
    entries = [t["bootstrap"]["valence_mae"] for t in (first, second)]
    assert [e["role"] for e in entries] == ["primary"] * 2 and entries[0]["family_size"] == 2
    assert entries[0]["label"] == "primary (confirmatory), Holm-adjusted over the 2 pairs"
    assert [e["p_adjusted"] for e in entries] == pytest.approx(holm([e["p_value"] for e in entries]))
    assert set(first["bootstrap"]) == {"valence_mae"}  # va_mae is tested only as the primary
    assert first["mcnemar"]["role"] == "exploratory" and first["mcnemar"]["family_size"] == 2
    assert out["multiple_testing"]["primary_tests"] == 2
    with pytest.raises(CompareError, match="macro_f1' as the primary.*classification metric.*one of va_mae"):
        compare(store, subjects, primary="macro_f1")
    with pytest.raises(CompareError, match="'nope' as the primary metric; for regression runs choose one of"):
        compare(store, subjects, primary="nope")
