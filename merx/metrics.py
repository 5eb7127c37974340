"""Evaluation metrics for both tasks, on plain numpy arrays.

Regression (valence, arousal in [0, 1]) reports, per dimension, MSE, MAE, R² and Lin's
concordance correlation coefficient (CCC), plus the accuracy and macro-F1 of the quadrants the
predictions imply (thresholds at 0.5, :func:`merx.data.songs.quadrant_of`). Classification
reports accuracy, macro-F1 and the F1 of each quadrant.

Every metric dict is flat ``{name: float}`` so that it can be stored as is. The confusion matrix
is kept out of it: :func:`confusion_matrix` returns it as a nested list (rows = true quadrant,
columns = predicted), to compute from a run's stored predictions when it is wanted.

Undefined values are ``nan``, never a made-up number: R² when the true values are constant,
CCC when both series are constant, and the F1 of a quadrant that is neither true nor predicted
anywhere (macro-F1 then averages over the quadrants that occur, as scikit-learn does).
"""

from __future__ import annotations

import numpy as np

from merx.data.songs import QUADRANTS, quadrant_of

DIMENSIONS = ("valence", "arousal")
_REGRESSION_PER_DIM = ("mse", "mae", "r2", "ccc")


def metric_names(task: str) -> list[str]:
    """The keys that :func:`regression_metrics` / :func:`classification_metrics` return."""
    if task == "regression":
        return [f"{d}_{m}" for d in DIMENSIONS for m in _REGRESSION_PER_DIM] + [
            "quadrant_accuracy", "quadrant_macro_f1"]
    if task == "classification":
        return ["accuracy", "macro_f1"] + [f"f1_{q}" for q in QUADRANTS]
    raise ValueError(f"unknown task {task!r}: expected 'regression' or 'classification'")


# -- regression -----------------------------------------------------------------------------

def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (nan when y_true is constant)."""
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def concordance_cc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient, with population (1/N) moments.

    Unlike Pearson's r it penalises bias and scale: a prediction must lie on the identity line
    to score 1."""
    mt, mp = y_true.mean(), y_pred.mean()
    cov = np.mean((y_true - mt) * (y_pred - mp))
    denom = y_true.var() + y_pred.var() + (mt - mp) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def quadrant_indices(va: np.ndarray) -> np.ndarray:
    """Quadrant index (0..3 for Q1..Q4) implied by each row of valence/arousal ``[N, 2]``."""
    va = np.asarray(va, dtype=float)
    return np.array([QUADRANTS.index(quadrant_of(v, a)) for v, a in va], dtype=int)


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """MSE, MAE, R², CCC per dimension (``valence_mae``, ...) and implied-quadrant scores.

    ``y_true`` and ``y_pred`` are ``[N, 2]`` arrays with columns (valence, arousal)."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.ndim != 2 or y_true.shape[1] != 2 or y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(f"expected two non-empty [N, 2] arrays (valence, arousal), got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    out: dict[str, float] = {}
    for i, dim in enumerate(DIMENSIONS):
        t, p = y_true[:, i], y_pred[:, i]
        out[f"{dim}_mse"] = float(np.mean((t - p) ** 2))
        out[f"{dim}_mae"] = float(np.mean(np.abs(t - p)))
        out[f"{dim}_r2"] = r2_score(t, p)
        out[f"{dim}_ccc"] = concordance_cc(t, p)
    implied = classification_metrics(quadrant_indices(y_true), quadrant_indices(y_pred))
    out["quadrant_accuracy"] = implied["accuracy"]
    out["quadrant_macro_f1"] = implied["macro_f1"]
    return out


# -- classification -------------------------------------------------------------------------

def _as_indices(labels) -> np.ndarray:
    """Quadrant indices from indices 0..3 or names "Q1".."Q4"."""
    arr = np.asarray(labels)
    if arr.dtype.kind in "US":
        unknown = sorted(set(arr.tolist()) - set(QUADRANTS))
        if unknown:
            raise ValueError(f"unknown quadrant names {unknown}: expected {', '.join(QUADRANTS)}")
        return np.array([QUADRANTS.index(q) for q in arr.tolist()], dtype=int)
    arr = arr.astype(int)
    if arr.size and (arr.min() < 0 or arr.max() >= len(QUADRANTS)):
        raise ValueError(f"quadrant indices must lie in 0..{len(QUADRANTS) - 1}, got {arr.min()}..{arr.max()}")
    return arr


def confusion_matrix(true, pred) -> list[list[int]]:
    """4×4 counts: ``m[i][j]`` songs of true quadrant i predicted as j.

    Accepts indices 0..3 or names "Q1".."Q4"."""
    t, p = _as_indices(true), _as_indices(pred)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted labels differ in length: {t.shape} vs {p.shape}")
    m = np.zeros((len(QUADRANTS), len(QUADRANTS)), dtype=int)
    np.add.at(m, (t, p), 1)
    return m.tolist()


def classification_metrics(true_idx, pred_idx) -> dict[str, float]:
    """Accuracy, macro-F1 and per-quadrant F1 (``f1_Q1`` .. ``f1_Q4``).

    Accepts indices 0..3 or names "Q1".."Q4". A quadrant absent from both the truth and the
    predictions has F1 nan and is left out of the macro average; one that is predicted but
    never true (or the reverse) has F1 0 and counts."""
    t, p = _as_indices(true_idx), _as_indices(pred_idx)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"expected two non-empty label arrays of equal length, got {t.shape} and {p.shape}")
    m = np.asarray(confusion_matrix(t, p))
    tp = np.diag(m).astype(float)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    out = {"accuracy": float(tp.sum() / t.size), "macro_f1": float(np.nanmean(f1))}
    out.update({f"f1_{q}": float(f1[i]) for i, q in enumerate(QUADRANTS)})
    return out
