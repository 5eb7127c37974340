"""Early stopping and best-epoch tracking: Lightning's rules, except that patience 0 is "off".

Two questions, answered as Lightning's ``EarlyStopping`` (``check_finite=True``, no stopping or
divergence thresholds) and ``ModelCheckpoint`` (``save_top_k=1``) answer them:

* Which epoch is best? The one with the best finite monitored value (strictly better, no
  min_delta): its weights are the ones restored, its epoch and score the ones reported.
* When to stop? An epoch *improves* when it beats the last improving value by more than
  ``min_delta`` (mode min: ``value < ref - min_delta``; max: ``value > ref + min_delta``); the
  first finite value always improves. Each epoch that does not improve adds one to
  ``wait_count``, an improving one resets it to 0; training stops when ``wait_count`` reaches
  ``patience``. A monitored value that is NaN or infinite stops training at once, as
  Lightning's ``check_finite`` does (it is neither best nor counted as waiting).

The one difference from Lightning: ``patience = 0`` never stops on a lack of improvement
(Lightning would stop at the first epoch that does not improve); experiment files rely on it
to train for exactly ``epochs``. A non-finite value stops training even then.

So with ``min_delta > 0`` a slightly better epoch becomes the best one without resetting the
patience count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the monitored metric epoch by epoch; ``update`` says whether the epoch is the best.

    ``stop_reason`` says why ``should_stop`` became True (None while training may go on);
    ``stopped_on_non_finite`` tells the two reasons apart."""

    monitor: str = "val_loss"
    mode: str = "min"
    patience: int = 10
    min_delta: float = 0.0
    best_score: float = math.nan
    best_epoch: int | None = None
    wait_count: int = 0
    should_stop: bool = False
    stop_reason: str | None = None
    stopped_on_non_finite: bool = False

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
        if not math.isfinite(value):
            # Without this, -inf would be the best score in mode min, and a metric stuck at NaN
            # would train on to the last epoch for nothing.
            best = (f"the best was {self.best_score:.6g} at epoch {self.best_epoch}" if self.best_epoch is not None
                    else "no epoch had a finite value")
            self.should_stop, self.stopped_on_non_finite = True, True
            self.stop_reason = f"{self.monitor} = {value} at epoch {epoch} is not finite; stopped ({best})"
            return False
        best = self.best_score if self.best_epoch is not None else self._ref
        is_best = self._better(value, best, 0.0)
        if is_best:
            self.best_score, self.best_epoch = value, epoch
        if self._better(value, self._ref, self.min_delta):
            self._ref, self.wait_count = value, 0
        else:
            self.wait_count += 1
            if self.patience > 0 and self.wait_count >= self.patience:
                self.should_stop = True
                self.stop_reason = (f"{self.monitor} did not improve by more than {self.min_delta:g} for "
                                    f"{self.wait_count} epochs in a row (patience {self.patience})")
        return is_best

    def state_dict(self) -> dict:
        """Everything ``update`` has learnt, as plain values (a checkpoint loads it with weights_only)."""
        from dataclasses import asdict

        return {**asdict(self), "ref": self._ref}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key == "ref":
                self._ref = float(value)
            else:
                setattr(self, key, value)
