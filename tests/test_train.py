"""The trainer on real tiny models and DataLoaders: best-state restore, early stopping,
clipping, per-part learning rates, schedules, divergence, AMP, devices and seeding."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from merx.config import SCHEMA, ConfigError
from merx.config.settings import TrainSettings
from merx.devices import amp_settings, seed_everything, select_device, worker_init_fn
from merx.early_stopping import EarlyStopping
from merx.train import Trainer, TrainingDiverged, evaluate

CPU = torch.device("cpu")


# -- fixtures: real datasets, models and configs ----------------------------------------------

def train_cfg(**over) -> TrainSettings:
    """The ``[train]`` settings with SCHEMA's defaults, then ``over`` (nested dicts merge)."""
    def defaults(spec):
        return {k: defaults(v) if isinstance(v, dict) else v.default for k, v in spec.items()}

    def merge(base, extra):
        for k, v in extra.items():
            if isinstance(v, dict):
                merge(base[k], v)
            else:
                base[k] = v
        return base

    return TrainSettings.from_table(merge(defaults(SCHEMA["train"]), over))


class Songs(Dataset):
    def __init__(self, x, target):
        self.x, self.target = x, target

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "target": self.target[i], "song_id": f"s{i}"}


def loader(x, target, batch_size=None, **kw):
    return DataLoader(Songs(x, target), batch_size=batch_size or len(x), **kw)


class BiasModel(nn.Module):
    """Predicts its bias (inputs are zeros): one Adam step moves it by about lr."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 2)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, batch):
        return self.lin(batch["x"])

    def parts(self):
        return {"head": list(self.lin.parameters())}


class TinyNet(nn.Module):
    def __init__(self, n_in=3, n_out=2):
        super().__init__()
        self.audio = nn.Linear(n_in, 8)
        self.head = nn.Linear(8, n_out)

    def forward(self, batch):
        return self.head(torch.relu(self.audio(batch["x"])))

    def parts(self):
        return {"audio": list(self.audio.parameters()), "text": [], "head": list(self.head.parameters())}


def overshoot_loaders():
    """Training pulls the prediction from 0 towards 1; validation wants 0.5. With lr 0.1 the
    validation loss falls for about 5 epochs, then rises: the last epoch is not the best."""
    return (loader(torch.zeros(8, 1), torch.full((8, 2), 1.0)),
            loader(torch.zeros(4, 1), torch.full((4, 2), 0.5)))


def overshoot_cfg(**over):
    base = dict(lr={"head": 0.1}, scheduler={"name": "none"}, epochs=12, grad_clip=0.0,
                early_stopping={"patience": 3})
    return train_cfg(**{**base, **over})


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit_recording(model, train, val, cfg, task="regression"):
    """Fit, keeping each epoch's weights as seen by on_epoch."""
    states = {}
    trainer = Trainer(model, train, val, cfg, task, CPU,
                      on_epoch=lambda epoch, m: states.__setitem__(epoch, snapshot(model)), progress=False)
    return trainer, trainer.fit(), states


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# -- best state, best epoch, early stopping -----------------------------------------------------

def test_restored_weights_are_the_best_epochs_not_the_last():
    model = BiasModel()
    _, result, states = fit_recording(model, *overshoot_loaders(), overshoot_cfg())
    val = [m["val_loss"] for m in result.history]
    assert result.best_epoch == int(np.argmin(val)) + 1
    assert 1 < result.best_epoch < result.epochs_run  # validation got worse after the best epoch
    assert result.best_score == pytest.approx(min(val))
    assert result.stopped_early and result.epochs_run == result.best_epoch + 3
    final = snapshot(model)
    assert same(final, states[result.best_epoch])
    assert not same(final, states[result.epochs_run])
    # and the model really is the best one: re-evaluating gives the best validation loss
    metrics, _ = evaluate(model, overshoot_loaders()[1], "regression", CPU)
    assert metrics["loss"] == pytest.approx(result.best_score, rel=1e-5)


def test_best_epoch_is_the_true_one_not_stop_epoch_minus_patience():
    # min_delta 0.015: epoch 5 beats epoch 4 (0.0108 -> 0.00006) by less than min_delta, so it
    # is the best epoch without resetting patience; training stops at 4 + 3 = 7.
    _, result, states = fit_recording(BiasModel(), *overshoot_loaders(),
                                      overshoot_cfg(early_stopping={"patience": 3, "min_delta": 0.015}))
    val = [m["val_loss"] for m in result.history]
    assert result.best_epoch == int(np.argmin(val)) + 1
    assert result.stopped_early
    assert result.best_epoch != result.epochs_run - 3  # what the notebooks would have printed


def test_patience_zero_never_stops_early_and_still_restores_the_best():
    model = BiasModel()
    _, result, states = fit_recording(model, *overshoot_loaders(), overshoot_cfg(early_stopping={"patience": 0}))
    assert result.epochs_run == 12 and not result.stopped_early
    assert result.best_epoch < 12 and same(snapshot(model), states[result.best_epoch])


def test_early_stopping_semantics_min_mode():
    es = EarlyStopping("val_loss", "min", patience=2)
    flags = [es.update(e, v) for e, v in enumerate([1.0, 0.9, 0.95, 0.91], start=1)]
    assert flags == [True, True, False, False] and es.should_stop and es.best_epoch == 2


def test_min_delta_improvements_below_it_do_not_reset_patience():
    es = EarlyStopping("val_loss", "min", patience=3, min_delta=0.05)
    for epoch, value in enumerate([1.0, 0.97, 0.96], start=1):
        es.update(epoch, value)
        assert not es.should_stop
    assert es.best_epoch == 3 and es.wait_count == 2  # better, but not by min_delta
    es.update(4, 0.99)
    assert es.should_stop and es.best_epoch == 3
    # an improvement of exactly min_delta is not enough (strict, as in Lightning) ...
    es = EarlyStopping("val_loss", "min", patience=1, min_delta=0.25)
    es.update(1, 1.0)
    es.update(2, 0.75)
    assert es.should_stop
    # ... one beyond it resets the count
    es = EarlyStopping("val_loss", "min", patience=1, min_delta=0.25)
    es.update(1, 1.0)
    es.update(2, 0.7)
    assert not es.should_stop and es.wait_count == 0


def test_early_stopping_max_mode_min_delta_sign():
    es = EarlyStopping("val_macro_f1", "max", patience=2, min_delta=0.01)
    es.update(1, 0.5)
    es.update(2, 0.6)
    es.update(3, 0.59)  # lower is worse in mode max
    assert es.best_epoch == 2 and es.wait_count == 1 and not es.should_stop
    es.update(4, 0.605)  # better, but within min_delta
    assert es.best_epoch == 4 and es.best_score == 0.605 and es.should_stop
    es = EarlyStopping("val_macro_f1", "max", patience=1, min_delta=0.01)
    es.update(1, 0.5)
    es.update(2, 0.52)  # beyond min_delta upwards: an improvement
    assert es.wait_count == 0 and not es.should_stop
    # the first finite value improves whatever min_delta is
    es = EarlyStopping("val_loss", "min", patience=1, min_delta=1e9)
    es.update(1, 5.0)
    assert es.best_epoch == 1 and es.wait_count == 0


def test_unknown_monitor_is_a_clear_error():
    train, val = overshoot_loaders()
    with pytest.raises(ConfigError, match="val_valence_mae") as exc:
        Trainer(BiasModel(), train, val, overshoot_cfg(early_stopping={"monitor": "val_valence_mea"}),
                "regression", CPU, progress=False)
    assert "did you mean" in str(exc.value) and "val_loss" in str(exc.value)
    with pytest.raises(ConfigError, match="val_macro_f1"):
        Trainer(BiasModel(), train, val, overshoot_cfg(early_stopping={"monitor": "val_valence_mae"}),
                "classification", CPU, progress=False)


# -- gradients, optimizer, schedule ---------------------------------------------------------------

def test_pre_clip_norm_is_recorded_and_the_applied_gradient_is_clipped():
    torch.manual_seed(0)
    model = TinyNet()
    x, y = torch.randn(32, 3), torch.full((32, 2), 50.0)  # far targets: big gradients
    trainer = Trainer(model, loader(x, y, 8), loader(x, y, 8),
                      train_cfg(grad_clip=0.05, epochs=2, lr={"audio": 1e-3, "head": 1e-3}),
                      "regression", CPU, progress=False)
    # Independent measurements: the norm as backward leaves it, and as the optimizer sees it.
    sq, raw, applied = [0.0], [], []
    for p in trainer.params:
        p.register_post_accumulate_grad_hook(lambda p: sq.__setitem__(0, sq[0] + p.grad.pow(2).sum().item()))

    def before_step(optimizer, args, kwargs):
        raw.append(math.sqrt(sq[0]))
        sq[0] = 0.0
        applied.append(torch.nn.utils.get_total_norm([p.grad for p in trainer.params]).item())

    trainer.optimizer.register_step_pre_hook(before_step)
    history = trainer.fit().history
    assert len(raw) == 8
    assert max(m["grad_norm_pre_clip_max"] for m in history) == pytest.approx(max(raw), rel=1e-4)
    assert history[0]["grad_norm_pre_clip"] == pytest.approx(np.mean(raw[:4]), rel=1e-4)
    assert min(raw) > 0.05  # the recorded norm exceeds the limit ...
    assert max(applied) <= 0.05 + 1e-6  # ... the applied gradient does not
    assert all(m["grad_norm_post_clip_max"] <= 0.05 + 1e-6 for m in history)
    assert history[0]["grad_norm_post_clip"] == pytest.approx(np.mean(applied[:4]), rel=1e-4)


def test_clipping_off_records_the_norm_unchanged():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.full((16, 2), 50.0)
    trainer = Trainer(TinyNet(), loader(x, y, 8), loader(x, y, 8), train_cfg(grad_clip=0.0, epochs=1),
                      "regression", CPU, progress=False)
    m = trainer.fit().history[0]
    assert m["grad_norm_pre_clip"] > 1.0 and m["grad_norm_post_clip"] == pytest.approx(m["grad_norm_pre_clip"])


def test_per_part_learning_rates_reach_the_optimizer():
    model = TinyNet()
    x, y = torch.randn(8, 3), torch.rand(8, 2)
    cfg = train_cfg(lr={"audio": 0.01, "text": 0.5, "fusion": 0.3, "head": 0.002}, optimizer="adamw",
                    weight_decay=0.1, epochs=1)
    trainer = Trainer(model, loader(x, y), loader(x, y), cfg, "regression", CPU, progress=False)
    groups = trainer.optimizer.param_groups
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("audio", 0.01, 0.1), ("head", 0.002, 0.1)]
    assert groups[0]["params"] == list(model.audio.parameters())
    assert groups[1]["params"] == list(model.head.parameters())
    m = trainer.fit().history[0]
    assert m["lr_audio"] == 0.01 and m["lr_head"] == 0.002 and "lr_text" not in m


def test_parameters_outside_every_part_are_an_error():
    model = TinyNet()
    model.parts = lambda: {"head": list(model.head.parameters())}
    x, y = torch.randn(4, 3), torch.rand(4, 2)
    with pytest.raises(ValueError, match="audio.weight"):
        Trainer(model, loader(x, y), loader(x, y), train_cfg(), "regression", CPU, progress=False)
    model.parts = lambda: {"tail": list(model.parameters())}
    with pytest.raises(ValueError, match="tail"):
        Trainer(model, loader(x, y), loader(x, y), train_cfg(), "regression", CPU, progress=False)


def test_step_lr_halves_at_step_size_and_cosine_anneals():
    x, y = torch.randn(4, 3), torch.rand(4, 2)
    cfg = train_cfg(epochs=5, lr={"head": 0.01}, scheduler={"name": "step", "step_size": 2, "gamma": 0.5},
                    early_stopping={"patience": 0})
    history = Trainer(TinyNet(), loader(x, y), loader(x, y), cfg, "regression", CPU, progress=False).fit().history
    assert [m["lr_head"] for m in history] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
    cfg = train_cfg(epochs=4, lr={"head": 0.01}, scheduler={"name": "cosine"}, early_stopping={"patience": 0})
    history = Trainer(TinyNet(), loader(x, y), loader(x, y), cfg, "regression", CPU, progress=False).fit().history
    assert [m["lr_head"] for m in history] == pytest.approx([0.01 * (1 + math.cos(math.pi * k / 4)) / 2
                                                             for k in range(4)])


# -- failure paths ------------------------------------------------------------------------------

def test_nan_loss_raises_training_diverged_after_reporting_finished_epochs():
    model = BiasModel()
    reported = []

    def on_epoch(epoch, metrics):
        reported.append(epoch)
        if epoch == 2:  # weights go bad after epoch 2: epoch 3's first step sees a NaN loss
            with torch.no_grad():
                model.lin.bias.fill_(float("nan"))

    trainer = Trainer(model, *overshoot_loaders(), overshoot_cfg(), "regression", CPU, on_epoch=on_epoch,
                      progress=False)
    with pytest.raises(TrainingDiverged, match="epoch 3, step 1") as exc:
        trainer.fit()
    assert exc.value.epoch == 3 and exc.value.step == 1
    assert "learning rate" in str(exc.value) and "grad_clip" in str(exc.value)
    assert reported == [1, 2] and len(trainer.history) == 2
    # the model is left at its best epoch (2), not with NaN weights
    assert torch.isfinite(model.lin.bias).all() and trainer.early_stopping.best_epoch == 2


def test_keyboard_interrupt_propagates_with_the_best_weights_restored():
    model = BiasModel()
    states = {}

    def on_epoch(epoch, metrics):
        states[epoch] = snapshot(model)
        if epoch == 7:
            raise KeyboardInterrupt

    trainer = Trainer(model, *overshoot_loaders(), overshoot_cfg(), "regression", CPU, on_epoch=on_epoch,
                      progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    best = trainer.early_stopping.best_epoch
    assert 1 < best < 7 and same(snapshot(model), states[best]) and not same(snapshot(model), states[7])


# -- AMP and devices --------------------------------------------------------------------------

def test_amp_is_off_on_cpu_and_training_still_runs():
    assert amp_settings(CPU, True) == (False, torch.float32)
    assert amp_settings(CPU, False) == (False, torch.float32)
    x, y = torch.randn(8, 3), torch.rand(8, 2)
    trainer = Trainer(TinyNet(), loader(x, y, 4), loader(x, y, 4), train_cfg(amp=True, epochs=2),
                      "regression", CPU, progress=True)  # the rich bar too, once
    assert not trainer.amp and not trainer.scaler.is_enabled()
    result = trainer.fit()
    assert result.epochs_run == 2 and all(math.isfinite(m["train_loss"]) for m in result.history)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_select_device_without_cuda():
    with pytest.raises(ConfigError, match="train.device") as exc:
        select_device("cuda")
    assert "cpu" in str(exc.value) and "CUDA" in str(exc.value)
    with pytest.raises(ConfigError, match="CUDA"):
        select_device("cuda:1")
    if not torch.backends.mps.is_available():
        assert select_device("auto") == CPU
        with pytest.raises(ConfigError, match="mps"):
            select_device("mps")
    assert select_device("cpu") == CPU
    with pytest.raises(ConfigError, match="unknown device"):
        select_device("tpu7")


# -- seeding ----------------------------------------------------------------------------------

def _seeded_fit(seed):
    seed_everything(seed)
    model = TinyNet()
    x, y = torch.randn(24, 3), torch.rand(24, 2)
    train = loader(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
    cfg = train_cfg(epochs=3, early_stopping={"patience": 0})
    result = Trainer(model, train, loader(x, y, 8), cfg, "regression", CPU, progress=False).fit()
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in result.history], snapshot(model)


def test_seeding_makes_two_fits_identical():
    h1, s1 = _seeded_fit(7)
    h2, s2 = _seeded_fit(7)
    h3, s3 = _seeded_fit(8)
    assert h1 == h2 and same(s1, s2)
    assert h1 != h3 and not same(s1, s3)


class Draws(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([np.random.random(), random.random()])


def test_worker_seeds_derive_from_seed_and_worker_id():
    def draws(seed):
        dl = DataLoader(Draws(), batch_size=2, num_workers=2, worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(seed))
        return torch.cat(list(dl)).numpy()

    a, b, c = draws(3), draws(3), draws(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # batches 0, 2 come from worker 0 and 1, 3 from worker 1: the workers draw different numbers
    assert not np.array_equal(a[0:2], a[2:4])


# -- classification and evaluation ----------------------------------------------------------

def test_classification_training_and_predictions():
    torch.manual_seed(0)
    labels = torch.arange(40) % 4
    x = torch.nn.functional.one_hot(labels, 4).float() * 3 + 0.1 * torch.randn(40, 4)
    cfg = train_cfg(epochs=30, lr={"audio": 0.05, "head": 0.05},
                    early_stopping={"monitor": "val_macro_f1", "mode": "max", "patience": 5})
    model = TinyNet(n_in=4, n_out=4)
    result = Trainer(model, loader(x, labels, 8, shuffle=True), loader(x, labels), cfg, "classification", CPU,
                     progress=False).fit()
    assert result.best_score == pytest.approx(1.0)
    assert {"val_accuracy", "val_macro_f1", "val_f1_Q4", "val_loss"} <= set(result.history[0])
    metrics, preds = evaluate(model, loader(x, labels, 16), "classification", CPU)
    assert metrics["accuracy"] == 1.0 and len(preds) == 40
    assert preds[5] == {**preds[5], "song_id": "s5", "true_quadrant": "Q2", "pred_quadrant": "Q2"}
    assert sum(preds[5]["probs"]) == pytest.approx(1.0) and len(preds[5]["probs"]) == 4


def test_evaluate_regression_records_per_song():
    model = BiasModel()
    with torch.no_grad():
        model.lin.bias.copy_(torch.tensor([0.7, 0.2]))  # always predicts Q4
    target = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    metrics, preds = evaluate(model, loader(torch.zeros(2, 1), target, 1), "regression", CPU)
    assert metrics["loss"] == pytest.approx(((0.2**2 + 0.1**2) + (0.5**2 + 0.6**2)) / 4)
    assert metrics["valence_mae"] == pytest.approx((0.2 + 0.5) / 2)
    assert metrics["quadrant_accuracy"] == 0.5
    assert preds[1] == pytest.approx({"song_id": "s1", "true_valence": 0.2, "true_arousal": 0.8,
                                      "pred_valence": 0.7, "pred_arousal": 0.2,
                                      "true_quadrant": "Q2", "pred_quadrant": "Q4"})
