"""Early stopping and best-epoch tracking, with Lightning's semantics.

Two questions, answered as Lightning's ``EarlyStopping`` and ``ModelCheckpoint`` answer them:

* Which epoch is best? The one with the best monitored value (strictly better, no min_delta):
  its weights are the ones restored, its epoch and score the ones reported.
* When to stop? An epoch *improves* when it beats the last improving value by more than
  ``min_delta`` (mode min: ``value < ref - min_delta``; max: ``value > ref + min_delta``).
  After ``patience`` epochs in a row without improvement, stop. ``patience = 0`` never stops.

So with ``min_delta > 0`` a slightly better epoch becomes the best one without resetting the
patience count. A NaN value is never an improvement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the monitored metric epoch by epoch; ``update`` says whether the epoch is the best."""

    monitor: str = "val_loss"
    mode: str = "min"
    patience: int = 10
    min_delta: float = 0.0
    best_score: float = math.nan
    best_epoch: int | None = None
    wait_count: int = 0
    should_stop: bool = False

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"early stopping mode must be 'min' or 'max', got {self.mode!r}")
        self._ref = math.inf if self.mode == "min" else -math.inf  # last value that improved

    def _better(self, value: float, ref: float, delta: float) -> bool:
        if self.mode == "min":
            return value < ref - delta
        return value > ref + delta

    def update(self, epoch: int, value: float) -> bool:
        """Record ``epoch``'s (1-based) monitored value; True when it is the best so far."""
        value = float(value)
        if math.isnan(value):
            is_best = improved = False
        else:
            best = self.best_score if self.best_epoch is not None else self._ref
            is_best = self._better(value, best, 0.0)
            improved = self._better(value, self._ref, self.min_delta)
        if is_best:
            self.best_score, self.best_epoch = value, epoch
        if improved:
            self._ref, self.wait_count = value, 0
        else:
            self.wait_count += 1
            self.should_stop = self.patience > 0 and self.wait_count >= self.patience
        return is_best
