"""Trivial predictors to report beside every result.

Each baseline is fitted on the TRAINING labels only and scored on the test songs with the same
metric functions as the models (:mod:`merx.metrics`), so its numbers sit in the same columns.
MERGE removed songs whose valence or arousal fell in 0.4–0.6; with that hole in the middle of
the plane, knowing a song's quadrant almost fixes its valence/arousal, which is why the
``quadrant_centre`` oracle beats the dissertation's models on MAE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from merx.data.songs import HOLE, QUADRANTS
from merx.metrics import classification_metrics, quadrant_indices, regression_metrics


class Targets(NamedTuple):
    """The labels of one split: ``va`` ``[N, 2]`` (valence, arousal) and ``quadrant`` ``[N]`` (0..3).

    ``va`` may be None (or hold NaN) for a classification-only dataset. A plain tuple
    ``(va, quadrant)`` works wherever a ``Targets`` is expected."""

    va: np.ndarray | None
    quadrant: np.ndarray

    @classmethod
    def from_songs(cls, songs) -> Targets:
        """From :class:`merx.data.songs.Song` objects (V/A left out if any song lacks them)."""
        quadrant = np.array([QUADRANTS.index(s.quadrant) for s in songs], dtype=int)
        if all(s.valence is not None and s.arousal is not None for s in songs):
            va = np.array([[s.valence, s.arousal] for s in songs], dtype=float).reshape(-1, 2)
        else:
            va = None
        return cls(va, quadrant)


def _as_targets(t) -> Targets:
    va, quadrant = t
    return Targets(None if va is None else np.asarray(va, dtype=float).reshape(-1, 2),
                   np.asarray(quadrant, dtype=int))


# -- the predictors: (train, test, rng) -> predicted V/A [N, 2] ----------------------------

def mean_va(train: Targets, test: Targets, rng) -> np.ndarray:
    """Mean predictor: the training mean valence/arousal for every song."""
    return np.tile(train.va.mean(axis=0), (len(test.quadrant), 1))


def _quadrant_centres(train: Targets) -> np.ndarray:
    """Training mean V/A of each quadrant ``[4, 2]`` (the overall mean for an empty quadrant)."""
    overall = train.va.mean(axis=0)
    return np.array([train.va[train.quadrant == q].mean(axis=0) if np.any(train.quadrant == q)
                     else overall for q in range(len(QUADRANTS))])


def quadrant_centre_va(train: Targets, test: Targets, rng) -> np.ndarray:
    """ORACLE, not a model: the training mean V/A of each test song's TRUE quadrant.

    It is told the answer to the classification problem. On MERGE it beats every model of the
    dissertation on MAE (valence 0.049, arousal 0.042 vs ~0.11 / ~0.06): because of the hole at
    0.4–0.6, regression there is classification in disguise. Report it as an upper reference
    for what quadrant knowledge alone buys, never as a competitor."""
    return _quadrant_centres(train)[test.quadrant]


def random_va(train: Targets, test: Targets, rng) -> np.ndarray:
    """Uniform valence and arousal over [0, 1] without MERGE's hole (0.4–0.6), seeded."""
    lo, hi = HOLE
    u = rng.uniform(0.0, 1.0 - (hi - lo), size=(len(test.quadrant), 2))
    # [0, lo) stays; [lo, 1 - width) maps to (hi, 1]: reflected so neither end touches the hole.
    return np.where(u < lo, u, 1.0 - (u - lo))


def majority_quadrant(train: Targets) -> int:
    """The most frequent training quadrant (ties go to the lower index)."""
    return int(np.argmax(np.bincount(train.quadrant, minlength=len(QUADRANTS))))


def majority_va(train: Targets, test: Targets, rng) -> np.ndarray:
    """Majority predictor: the training centre of the most frequent training quadrant."""
    centre = _quadrant_centres(train)[majority_quadrant(train)]
    return np.tile(centre, (len(test.quadrant), 1))


REGRESSION: dict[str, Callable] = {
    "mean": mean_va,
    "quadrant_centre": quadrant_centre_va,
    "random": random_va,
    "majority": majority_va,
}


def compute_baselines(train_targets: Targets, test_targets: Targets, task: str, seed: int = 0
                      ) -> dict[str, dict[str, float]]:
    """Score every baseline on the test songs: ``{baseline name: {metric: value}}``.

    Regression: mean, quadrant_centre (an oracle), random, majority, each scored with
    :func:`merx.metrics.regression_metrics`. Classification: majority (the most frequent
    training quadrant) and random (a uniform quadrant, seeded), scored with
    :func:`merx.metrics.classification_metrics`."""
    train, test = _as_targets(train_targets), _as_targets(test_targets)
    if len(train.quadrant) == 0 or len(test.quadrant) == 0:
        raise ValueError("baselines need at least one training and one test song")
    rng = np.random.default_rng(seed)
    if task == "regression":
        if any(t.va is None or np.isnan(t.va).any() for t in (train, test)):
            raise ValueError("regression baselines need valence/arousal labels for every train and test song")
        # One truth per task: the model's quadrant scores use the quadrant its true V/A imply,
        # so the quadrant-centre oracle and the majority baseline must group songs by it too,
        # not by the dataset's label (which can disagree: merx.data.songs.label_notes).
        train, test = (Targets(t.va, quadrant_indices(t.va)) for t in (train, test))
        return {name: regression_metrics(test.va, predict(train, test, rng))
                for name, predict in REGRESSION.items()}
    if task == "classification":
        n = len(test.quadrant)
        return {
            "majority": classification_metrics(test.quadrant, np.full(n, majority_quadrant(train))),
            "random": classification_metrics(test.quadrant, rng.integers(0, len(QUADRANTS), size=n)),
        }
    raise ValueError(f"unknown task {task!r}: expected 'regression' or 'classification'")
