"""Mechanisms the results depend on, each pinned by a test that fails without it: early
stopping's rules."""

import math

import pytest
import torch
from test_train import (
    CPU,
    BiasModel,
    fit_recording,
    loader,
    overshoot_cfg,
    overshoot_loaders,
    same,
    snapshot,
)

from merx.early_stopping import EarlyStopping
from merx.train import Trainer

# -- early stopping: Lightning's rules, patience 0 = off, non-finite values stop -------------------

def test_patience_counts_consecutive_non_improving_epochs_and_stops_when_it_is_reached():
    # Lightning's rule: wait_count >= patience. An improvement resets the count.
    values = [1.0, 1.1, 1.2, 0.9, 1.0, 1.0, 1.0, 0.5]
    es = EarlyStopping("val_loss", "min", patience=3)
    waits = []
    for epoch, v in enumerate(values, start=1):
        es.update(epoch, v)
        waits.append(es.wait_count)
        if es.should_stop:
            break
    assert waits == [0, 1, 2, 0, 1, 2, 3] and epoch == 7  # two waits then a reset; three waits stop
    assert es.best_epoch == 4 and "3 epochs in a row" in es.stop_reason
    # patience 1 stops at the first epoch that does not improve (Lightning's patience 0) ...
    es = EarlyStopping("val_loss", "min", patience=1)
    es.update(1, 1.0)
    es.update(2, 1.0)  # equal is not better
    assert es.should_stop and es.wait_count == 1
    # ... and patience 0 never stops for a lack of improvement, however long (unlike Lightning)
    es = EarlyStopping("val_loss", "min", patience=0)
    for epoch in range(1, 101):
        es.update(epoch, 1.0 + epoch)
    assert not es.should_stop and es.wait_count == 99 and es.stop_reason is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_non_finite_monitored_value_stops_at_once(mode, bad):
    es = EarlyStopping("val_valence_ccc", mode, patience=0)  # even with early stopping off
    es.update(1, 0.5)
    assert es.update(2, bad) is False  # never the best: -inf in mode min would otherwise be
    assert es.should_stop and es.stopped_on_non_finite and es.best_epoch == 1 and es.best_score == 0.5
    assert es.wait_count == 0  # not counted as waiting, as in Lightning
    assert f"val_valence_ccc = {bad} at epoch 2 is not finite" in es.stop_reason
    assert "best was 0.5 at epoch 1" in es.stop_reason


class EpochLoader:
    """A validation loader whose targets change from epoch to epoch (``targets[i]`` in pass i)."""

    def __init__(self, targets):
        self.targets, self.passes = targets, 0

    def __iter__(self):
        target = self.targets[min(self.passes, len(self.targets) - 1)]
        self.passes += 1
        yield from loader(torch.zeros(len(target), 1), target)


def test_fit_stops_when_the_monitored_value_turns_non_finite_and_keeps_the_best_epoch():
    # Validation valence varies for two epochs, then is constant: R² is nan from epoch 3 on.
    varied = torch.tensor([[0.2, 0.5], [0.8, 0.5], [0.6, 0.5], [0.9, 0.5]])
    val = EpochLoader([varied, varied, torch.full((4, 2), 0.5)])
    cfg = overshoot_cfg(early_stopping={"monitor": "val_valence_r2", "mode": "max", "patience": 0})
    model = BiasModel()
    _, result, states = fit_recording(model, overshoot_loaders()[0], val, cfg)
    assert result.epochs_run == 3 and result.stopped_early
    assert math.isnan(result.history[-1]["val_valence_r2"]) and math.isfinite(result.history[-1]["val_loss"])
    assert result.best_epoch == 2 and same(snapshot(model), states[2])
    assert "val_valence_r2 = nan at epoch 3 is not finite" in result.stop_reason
    assert result.notes == [result.stop_reason] and not result.no_finite_monitor


def test_no_finite_monitored_value_ever_is_said_not_silent():
    # Constant validation truth: R² is nan from the first epoch, so no epoch can be the best.
    train, _ = overshoot_loaders()
    cfg = overshoot_cfg(early_stopping={"monitor": "val_valence_r2", "mode": "max", "patience": 3})
    model = BiasModel()
    trainer = Trainer(model, train, loader(torch.zeros(4, 1), torch.full((4, 2), 0.5)), cfg, "regression", CPU,
                      progress=False)
    with pytest.warns(RuntimeWarning, match="no epoch had a finite val_valence_r2"):
        result = trainer.fit()
    assert result.best_epoch is None and result.no_finite_monitor and result.epochs_run == 1
    assert len(result.notes) == 2 and "is not finite" in result.notes[0]
    assert "keeps the weights of the last epoch (1)" in result.notes[1]
    assert model.lin.bias.abs().sum() > 0  # trained for one epoch: the last weights, as the note says


