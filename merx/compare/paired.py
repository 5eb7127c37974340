"""Is a difference real? Paired tests of one subject against another.

Two runs tested on the same songs get a paired bootstrap interval of each metric difference
(recomputed per song, :func:`song_metric`) and McNemar's test on the (implied) quadrant; two
groups get a t-test across seeds (:mod:`merx.stats`). Not named ``tests.py``: pytest would
collect it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from merx.compare.subjects import Subject
from merx.data.songs import QUADRANTS
from merx.metrics import METRICS, classification_metrics, concordance_cc, higher_is_better, r2_score
from merx.store import format_run_id


def _q(name) -> float:
    return float(QUADRANTS.index(name)) if name in QUADRANTS else np.nan


def _per_song(preds: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, truth [N, 3] (valence, arousal, quadrant index), prediction [N, 3]."""
    preds = sorted(preds, key=lambda p: p["song_id"])
    nan = float("nan")

    def f(x):
        return nan if x is None else float(x)

    truth = np.array([[f(p["true_valence"]), f(p["true_arousal"]), _q(p["true_quadrant"])] for p in preds]).reshape(-1, 3)
    pred = np.array([[f(p["pred_valence"]), f(p["pred_arousal"]), _q(p["pred_quadrant"])] for p in preds]).reshape(-1, 3)
    return [p["song_id"] for p in preds], truth, pred


def song_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """The metric ``name`` as a function of per-song (truth, prediction) rows from ``_per_song``, or
    None when it cannot be recomputed from predictions (e.g. the loss)."""
    record = METRICS.get(name)
    if record is None or not record.per_song:
        return None
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
    key = {"macro_f1": "macro_f1", "quadrant_macro_f1": "macro_f1", **{f"f1_{q}": f"f1_{q}" for q in QUADRANTS}}.get(name)
    if key is not None:
        return lambda truth, pred: classification_metrics(truth[:, 2].astype(int), pred[:, 2].astype(int))[key]
    return None


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
    from merx.stats import mcnemar, paired_bootstrap, plain_p

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
        col = 0 if m.startswith("valence") else 1 if m.startswith("arousal") else 2
        if fn is None or np.isnan(pred_a[:, col]).any() or np.isnan(pred_b[:, col]).any():
            continue  # not a per-song metric, or a run of the other task
        res = paired_bootstrap(fn, truth, pred_a, pred_b, n_resamples=n_resamples, seed=seed)
        entry = res.to_dict()
        entry["verdict"] = _bootstrap_verdict(m, res, la, lb)
        out["bootstrap"][m] = entry
    implied = a["task"] == "regression" or b["task"] == "regression"
    res = mcnemar(pred_a[:, 2] == truth[:, 2], pred_b[:, 2] == truth[:, 2])
    entry = res.to_dict()
    what = "implied quadrant" if implied else "quadrant"
    entry["what"] = what
    if res.only_a + res.only_b == 0:
        entry["verdict"] = (f"McNemar on the {what}: no song is right for one run and wrong for the other "
                            f"(both right on {res.both}, both wrong on {res.neither}): no evidence of a difference.")
    else:
        entry["verdict"] = (f"McNemar ({res.method}) on the {what}: {lb} is right on {res.only_b} songs where {la} "
                            f"is wrong, and wrong on {res.only_a} where {la} is right; {plain_p(res.p_value)}.")
    if len(ids) < 20:
        out["small_sample"] = (f"only {len(ids)} test songs: these intervals and p-values are rough")
    out["mcnemar"] = entry
    return out


def _bootstrap_verdict(metric: str, res, la: str, lb: str) -> str:
    if res.estimate is None or res.low is None:
        return f"{metric}: undefined on these songs"
    pct = f"{res.confidence:.0%}"
    text = (f"{metric}: {lb} - {la} = {res.estimate:+.4f}, {pct} paired bootstrap interval "
            f"[{res.low:+.4f}, {res.high:+.4f}]")
    hib = higher_is_better(metric)
    if not res.excludes_zero:
        return text + ": the interval contains 0, no clear difference"
    better = (res.low > 0) == bool(hib) if hib is not None else None
    who = "" if better is None else f", {lb} is {'better' if better else 'worse'}"
    return text + f": the interval excludes 0{who}"


def paired_group_test(a: Subject, b: Subject, metrics: list[str]) -> dict:
    """t-tests across seeds of group ``b`` against group ``a``, per metric."""
    from merx.stats import plain_p, seed_test

    out: dict[str, Any] = {"a": a.label, "b": b.label, "kind": "across seeds", "seed_tests": {}}
    for m in metrics:
        va = {r["seed"]: ((r.get("metrics") or {}).get("test") or {}).get(m) for r in a.runs}
        vb = {r["seed"]: ((r.get("metrics") or {}).get("test") or {}).get(m) for r in b.runs}
        res = seed_test(va, vb)
        if res is None:
            continue
        entry = res.to_dict()
        hib = higher_is_better(m)
        direction = ""
        if res.mean_difference is not None and hib is not None and res.mean_difference != 0:
            direction = f" ({b.label} {'better' if (res.mean_difference > 0) == hib else 'worse'} on average)"
        entry["verdict"] = (f"{m}: {b.label} - {a.label} = {res.mean_difference:+.4f}{direction}; {res.test} over "
                            f"{res.n_a} and {res.n_b} seeds, {plain_p(res.p_value)}")
        out["seed_tests"][m] = entry
    if not out["seed_tests"]:
        out["skipped"] = (f"{a.label} and {b.label}: a test across seeds needs at least two seeds on each side "
                          "(merx run FILE --seeds 5)")
    return out
