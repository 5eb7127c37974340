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

:data:`METRICS` is the one place that says what each number means: its task, whether higher is
better, whether it can be recomputed per song (for paired tests), how to print it. Every
consumer (early stopping's monitor and mode, ``merx compare``, sweeps, exports, ``merx runs
--sort``) asks it instead of guessing from the name. The registry needs no numpy: the config
check and the CLI consult it without paying for the numeric stack, so numpy is imported inside
the functions that compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from merx.data.songs import QUADRANTS, quadrant_of

if TYPE_CHECKING:
    import numpy as np

DIMENSIONS = ("valence", "arousal")
_REGRESSION_PER_DIM = ("mse", "mae", "r2", "ccc")


def metric_names(task: str) -> list[str]:
    """The keys that :func:`regression_metrics` / :func:`classification_metrics` return."""
    if task == "regression":
        return [f"{d}_{m}" for d in DIMENSIONS for m in _REGRESSION_PER_DIM] + [
            "va_mae", "quadrant_accuracy", "quadrant_macro_f1"]
    if task == "classification":
        return ["accuracy", "macro_f1"] + [f"f1_{q}" for q in QUADRANTS]
    raise ValueError(f"unknown task {task!r}: expected 'regression' or 'classification'")


# -- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """What one metric is: the task that reports it, its direction, and how to show it."""

    name: str              # bare name, as evaluation returns it: "macro_f1", "valence_mae", "loss"
    task: str              # "classification", "regression" or "any"
    higher_is_better: bool
    per_song: bool         # recomputable from per-song predictions (paired bootstrap); not the loss
    fmt: str               # display format, e.g. ".4f"
    description: str


def _registry() -> dict[str, Metric]:
    out: list[Metric] = [
        Metric("loss", "any", False, False, ".4f",
               "training objective (MSE for regression, cross-entropy for classification)")]
    per_dim = {
        "mse": (False, "mean squared error of {d}"),
        "mae": (False, "mean absolute error of {d}"),
        "r2": (True, "coefficient of determination (R²) of {d}; nan when the truth is constant"),
        "ccc": (True, "Lin's concordance correlation coefficient of {d}; nan when both are constant"),
    }
    for d in DIMENSIONS:
        for kind in _REGRESSION_PER_DIM:
            hib, text = per_dim[kind]
            out.append(Metric(f"{d}_{kind}", "regression", hib, True, ".4f", text.format(d=d)))
    out += [
        Metric("va_mae", "regression", False, True, ".4f",
               "mean of the valence and arousal MAE (per song: the mean of its two absolute errors)"),
        Metric("quadrant_accuracy", "regression", True, True, ".4f",
               "accuracy of the quadrants the predicted valence/arousal imply"),
        Metric("quadrant_macro_f1", "regression", True, True, ".4f",
               "macro-F1 of the quadrants the predicted valence/arousal imply"),
        Metric("accuracy", "classification", True, True, ".4f", "share of songs in the right quadrant"),
        Metric("macro_f1", "classification", True, True, ".4f",
               "F1 averaged over the quadrants that occur"),
    ]
    out += [Metric(f"f1_{q}", "classification", True, True, ".4f", f"F1 of quadrant {q}") for q in QUADRANTS]
    # Timings: shown by compare and sortable in ``merx runs``; less is better, never per song.
    out += [Metric(name, "any", False, False, ".1f", text) for name, text in (
        ("epoch_seconds", "seconds one epoch took, training and validation"),
        ("wall_seconds", "seconds from a run's start to its end"),
        ("data_seconds", "seconds spent loading the data set"),
        ("feature_seconds", "seconds spent extracting or loading features"),
        ("augment_seconds", "seconds spent precomputing augmentations"),
    )]
    return {m.name: m for m in out}


#: Every metric merx computes, by bare name.
METRICS: dict[str, Metric] = _registry()
# Names are matched case-insensitively (``--sort VAL_MACRO_F1``, ``f1_q1``), as they always were.
_BY_LOWER = {k.lower(): m for k, m in METRICS.items()}

#: Prefixes naming the split a number was computed on (epoch history and stored metrics).
_SPLITS = ("train_", "val_", "validate_", "test_")

#: The metrics ``merx compare``, sweeps and exports show and test by default, per task.
HEADLINE = {
    "classification": ("accuracy", "macro_f1"),
    "regression": ("valence_mae", "arousal_mae", "valence_r2", "arousal_r2", "quadrant_macro_f1"),
}
#: The one metric per task a run is judged by: ``merx compare``'s confirmatory test (``--primary``
#: picks another), a sweep's best cell and a report's curve when the run early-stops on the loss.
#: Fixed per task, not read from a run's config: a primary chosen after seeing the runs, or
#: differing between them, would not be pre-specified. Regression uses the mean of the valence
#: and arousal MAE rather than their CCC: a mean over songs, so every bootstrap resample is a
#: plain average, defined on every draw and on the labels' own scale; CCC is a ratio of moments
#: of the whole set, undefined when a resample's values are constant and skewed on small sets.
PRIMARY = {"classification": "macro_f1", "regression": "va_mae"}


def metric(name: str) -> Metric | None:
    """The record of ``name``, bare (``macro_f1``) or with a split (``val_macro_f1``,
    ``test_valence_mae``, ``train_loss``); None when merx does not compute it."""
    key = name.lower()
    if key in _BY_LOWER:
        return _BY_LOWER[key]
    for prefix in _SPLITS:
        if key.startswith(prefix) and key[len(prefix):] in _BY_LOWER:
            return _BY_LOWER[key[len(prefix):]]
    return None


def higher_is_better(name: str) -> bool | None:
    """True for scores (F1, accuracy, R², CCC), False for errors, losses and timings, None if unknown."""
    m = metric(name)
    return None if m is None else m.higher_is_better


def mode_for(name: str) -> str | None:
    """Early stopping's ``mode`` for watching ``name``: "max" or "min"; None if unknown."""
    m = metric(name)
    return None if m is None else ("max" if m.higher_is_better else "min")


def metrics_for(task: str) -> list[Metric]:
    """The records of the metrics evaluation reports for ``task`` (besides the loss), in
    :func:`metric_names` order."""
    if task not in ("regression", "classification"):
        raise ValueError(f"unknown task {task!r}: expected 'regression' or 'classification'")
    return [m for m in METRICS.values() if m.task == task]


def monitors(task: str) -> list[str]:
    """The validation metrics early stopping can watch for ``task`` (``train.early_stopping.monitor``)."""
    return ["val_loss"] + [f"val_{m.name}" for m in metrics_for(task)]


def headline_metrics(task: str) -> list[str]:
    """The metrics shown and tested by default for ``task``."""
    return list(HEADLINE[task])


# -- regression -----------------------------------------------------------------------------

def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (nan when y_true is constant)."""
    import numpy as np

    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def concordance_cc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient, with population (1/N) moments.

    Unlike Pearson's r it penalises bias and scale: a prediction must lie on the identity line
    to score 1."""
    import numpy as np

    mt, mp = y_true.mean(), y_pred.mean()
    cov = np.mean((y_true - mt) * (y_pred - mp))
    denom = y_true.var() + y_pred.var() + (mt - mp) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def quadrant_indices(va: np.ndarray) -> np.ndarray:
    """Quadrant index (0..3 for Q1..Q4) implied by each row of valence/arousal ``[N, 2]``."""
    import numpy as np

    va = np.asarray(va, dtype=float)
    return np.array([QUADRANTS.index(quadrant_of(v, a)) for v, a in va], dtype=int)


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """MSE, MAE, R², CCC per dimension (``valence_mae``, ...) and implied-quadrant scores.

    ``y_true`` and ``y_pred`` are ``[N, 2]`` arrays with columns (valence, arousal)."""
    import numpy as np

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
    out["va_mae"] = (out["valence_mae"] + out["arousal_mae"]) / 2
    implied = classification_metrics(quadrant_indices(y_true), quadrant_indices(y_pred))
    out["quadrant_accuracy"] = implied["accuracy"]
    out["quadrant_macro_f1"] = implied["macro_f1"]
    return out


# -- classification -------------------------------------------------------------------------

def _as_indices(labels) -> np.ndarray:
    """Quadrant indices from indices 0..3 or names "Q1".."Q4"."""
    import numpy as np

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
    import numpy as np

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
    import numpy as np

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
