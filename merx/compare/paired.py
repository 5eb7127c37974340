"""Is a difference real? Paired tests of one subject against another.

Two runs tested on the same songs get a paired bootstrap interval of each metric difference
(recomputed per song, :func:`song_metric`) and McNemar's test on the (implied) quadrant; two
groups get a t-test across seeds (:mod:`merx.stats`). Each test carries its raw p-value and a
``finding`` (what differs, by how much); whether it is significant depends on every other test
the same ``compare`` call shows, so :mod:`merx.compare.family` writes the verdicts. Not named
``tests.py``: pytest would collect it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from merx.compare.scores import stored_value
from merx.compare.subjects import Subject
from merx.data.songs import QUADRANTS
from merx.metrics import classification_metrics, concordance_cc, higher_is_better, r2_score
from merx.metrics import metric as record
from merx.store.ids import format_run_id


def _q(name) -> float:
    return float(QUADRANTS.index(name)) if name in QUADRANTS else np.nan


def _per_song(preds: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, truth [N, 3] (valence, arousal, quadrant index), prediction [N, 3]."""
    preds = sorted(preds, key=lambda p: p["song_id"])
    nan = float("nan")

    def f(x):
        return nan if x is None else float(x)

    truth = np.array([[f(p["true_valence"]), f(p["true_arousal"]), _q(p["true_quadrant"])] for p in preds])
    pred = np.array([[f(p["pred_valence"]), f(p["pred_arousal"]), _q(p["pred_quadrant"])] for p in preds])
    truth, pred = truth.reshape(-1, 3), pred.reshape(-1, 3)
    return [p["song_id"] for p in preds], truth, pred


def song_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """The metric ``name`` as a function of per-song (truth, prediction) rows from ``_per_song``, or
    None when it cannot be recomputed from predictions (e.g. the loss)."""
    rec = record(name)
    if rec is None or not rec.per_song:
        return None
    if name == "va_mae":
        return lambda truth, pred: float(np.mean(np.abs(truth[:, :2] - pred[:, :2])))
    dims = {"valence": 0, "arousal": 1}
    head, _, kind = name.partition("_")
    if head in dims and kind in ("mae", "mse", "r2", "ccc"):
        i = dims[head]
        fns = {"mae": lambda t, p: float(np.mean(np.abs(t - p))), "mse": lambda t, p: float(np.mean((t - p) ** 2)),
               "r2": r2_score, "ccc": concordance_cc}
        fn = fns[kind]
        return lambda truth, pred: fn(truth[:, i], pred[:, i])
    if name in ("accuracy", "quadrant_accuracy"):
        return lambda truth, pred: float(np.mean(truth[:, 2] == pred[:, 2]))
    keys = {"macro_f1": "macro_f1", "quadrant_macro_f1": "macro_f1", **{f"f1_{q}": f"f1_{q}" for q in QUADRANTS}}
    key = keys.get(name)
    if key is not None:
        return lambda truth, pred: classification_metrics(truth[:, 2].astype(int), pred[:, 2].astype(int))[key]
    return None


def _columns(name: str) -> list[int]:
    """The columns of ``_per_song`` rows that ``name`` reads (valence, arousal, quadrant index)."""
    if name == "va_mae":
        return [0, 1]
    return [0] if name.startswith("valence") else [1] if name.startswith("arousal") else [2]


def _same_songs(a: tuple, b: tuple) -> str | None:
    """None when two runs were tested on the same songs with the same labels, else why not."""
    ids_a, truth_a, _ = a
    ids_b, truth_b, _ = b
    if ids_a != ids_b:
        common = len(set(ids_a) & set(ids_b))
        return f"tested on different songs ({len(ids_a)} and {len(ids_b)}, {common} in common)"
    if not np.allclose(truth_a, truth_b, atol=1e-5, equal_nan=True):
        return "the same song ids carry different true labels (another data version?)"
    return None


def paired_run_test(store, a: dict, b: dict, metrics: list[str], n_resamples: int = 2000,
                    seed: int = 0) -> dict:
    """Paired tests of run ``b`` against run ``a`` on their per-song test predictions."""
    from merx.stats import mcnemar, paired_bootstrap

    la, lb = format_run_id(a["id"]), format_run_id(b["id"])
    out: dict[str, Any] = {"a": la, "b": lb, "kind": "per-song", "bootstrap": {}, "mcnemar": None}
    pa, pb = _per_song(store.get_predictions(a["id"], "test")), _per_song(store.get_predictions(b["id"], "test"))
    if not pa[0] or not pb[0]:
        out["skipped"] = f"{la if not pa[0] else lb} has no test predictions: no paired test"
        return out
    why = _same_songs(pa, pb)
    if why:
        out["skipped"] = f"{la} and {lb} were {why}: no paired test" if why.startswith("tested") else \
            f"{la} and {lb}: {why}; no paired test"
        return out
    ids, truth, pred_a = pa
    pred_b = pb[2]
    out["n_songs"] = len(ids)
    for m in metrics:
        fn = song_metric(m)
        cols = _columns(m)
        if fn is None or np.isnan(pred_a[:, cols]).any() or np.isnan(pred_b[:, cols]).any():
            continue  # not a per-song metric, or a run of the other task
        res = paired_bootstrap(fn, truth, pred_a, pred_b, n_resamples=n_resamples, seed=seed)
        entry = res.to_dict()
        entry["test"] = "paired bootstrap"
        entry["finding"] = _bootstrap_finding(m, res, la, lb)
        entry["direction"] = _direction(m, res.estimate, lb)
        out["bootstrap"][m] = entry
    implied = a["task"] == "regression" or b["task"] == "regression"
    res = mcnemar(pred_a[:, 2] == truth[:, 2], pred_b[:, 2] == truth[:, 2])
    entry = res.to_dict()
    what = "implied quadrant" if implied else "quadrant"
    entry["what"] = what
    entry["test"] = "McNemar"
    entry["p_undefined"] = None
    if res.only_a + res.only_b == 0:
        entry["finding"] = (f"McNemar on the {what}: no song is right for one run and wrong for the other "
                            f"(both right on {res.both}, both wrong on {res.neither})")
        entry["direction"] = None
    else:
        entry["finding"] = (f"McNemar ({res.method}) on the {what}: {lb} is right on {res.only_b} songs where {la} "
                            f"is wrong, and wrong on {res.only_a} where {la} is right")
        entry["direction"] = None if res.only_a == res.only_b else \
            f"{lb} is {'better' if res.only_b > res.only_a else 'worse'}"
    if len(ids) < 20:
        out["small_sample"] = (f"only {len(ids)} test songs: these intervals and p-values are rough")
    out["mcnemar"] = entry
    return out


def _direction(metric: str, difference: float | None, lb: str) -> str | None:
    """"run3 is better" from the sign of b - a and the metric's direction; what a verdict says
    only once the difference is significant."""
    hib = higher_is_better(metric)
    if difference is None or hib is None or difference == 0:
        return None
    return f"{lb} is {'better' if (difference > 0) == hib else 'worse'}"


def _bootstrap_finding(metric: str, res, la: str, lb: str) -> str:
    if res.estimate is None:
        return f"{metric}: undefined on these songs"
    text = f"{metric}: {lb} - {la} = {res.estimate:+.4f}"
    if res.low is None:
        return text + " (no bootstrap interval: the metric is undefined on most resamples)"
    return text + f", {res.confidence:.0%} paired bootstrap interval [{res.low:+.4f}, {res.high:+.4f}]"


def paired_group_test(a: Subject, b: Subject, metrics: list[str]) -> dict:
    """t-tests across seeds of group ``b`` against group ``a``, per metric."""
    from merx.stats import MIN_SEED_PAIRS, seed_test

    out: dict[str, Any] = {"a": a.label, "b": b.label, "kind": "across seeds", "seed_tests": {}}
    for m in metrics:
        va = {r["seed"]: stored_value(r, m) for r in a.runs}
        vb = {r["seed"]: stored_value(r, m) for r in b.runs}
        res = seed_test(va, vb)
        if res is None:
            continue
        entry = res.to_dict()
        entry["enough_seeds"] = res.enough_seeds
        hib = higher_is_better(m)
        average = ""
        if res.mean_difference is not None and hib is not None and res.mean_difference != 0:
            average = f" ({b.label} {'better' if (res.mean_difference > 0) == hib else 'worse'} on average)"
        entry["finding"] = (f"{m}: {b.label} - {a.label} = {res.mean_difference:+.4f}{average}; {res.test} over "
                            f"{res.n_a} and {res.n_b} seeds")
        entry["direction"] = _direction(m, res.mean_difference, b.label)
        if not res.enough_seeds:
            run_more = f"run --seeds {MIN_SEED_PAIRS} or more"
            entry["too_few"] = (f"too few seed pairs ({res.n_pairs}) for a test; {run_more}" if res.seeds is not None
                                else f"too few seeds ({res.n_a} and {res.n_b}) for a test; {run_more}")
        out["seed_tests"][m] = entry
    if not out["seed_tests"]:
        out["skipped"] = (f"{a.label} and {b.label}: a test across seeds needs at least two seeds on each side "
                          "(merx run FILE --seeds 5)")
    return out
