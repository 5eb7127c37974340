"""Mechanisms the results depend on, each pinned by a test that fails without it: evaluation in
eval mode, unscaled gradients under loss scaling, a dB reference from the training split only,
the defaults that fix the notebooks' flaws, early stopping's rules, and deterministic
algorithms that come and go with a fit."""

import copy
import csv
import math
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_train import (
    CPU,
    BiasModel,
    TinyNet,
    fit_recording,
    loader,
    overshoot_cfg,
    overshoot_loaders,
    same,
    snapshot,
    train_cfg,
)

from merx.config import SCHEMA, ConfigError, resolve
from merx.config.settings import Experiment
from merx.devices import CUBLAS_ENV, seed_everything
from merx.early_stopping import EarlyStopping
from merx.train import Trainer, evaluate, loss_fn


class NormDropNet(nn.Module):
    """Linear -> BatchNorm -> Dropout -> Linear: both layers behave differently in training."""

    def __init__(self, n_in=3, n_out=2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(16, n_out)

    def forward(self, batch):
        return self.head(self.body(batch["x"]))

    def parts(self):
        return {"audio": list(self.body.parameters()), "head": list(self.head.parameters())}


# -- evaluation -------------------------------------------------------------------------------

def test_evaluate_is_deterministic_and_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = NormDropNet().train()  # as training leaves it
    data = loader(torch.randn(32, 3) * 3 + 1, torch.rand(32, 2), 8)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    first_metrics, first = evaluate(model, data, "regression", CPU)
    second_metrics, second = evaluate(model, data, "regression", CPU)
    assert first == second and first_metrics == second_metrics  # no dropout noise
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())  # no statistics updated
    assert not model.training


# -- loss scaling -------------------------------------------------------------------------------

def test_loss_scaled_step_records_the_unscaled_norm_and_applies_the_clipped_gradient():
    torch.manual_seed(0)
    model = TinyNet()
    x, y = torch.randn(16, 3), torch.full((16, 2), 50.0)  # far targets: a gradient far above the limit
    clip, scale = 0.05, 2.0**10
    # The same step by hand, without any scaling.
    reference = copy.deepcopy(model)
    loss_fn("regression", reference({"x": x}), y).backward()
    grads = [p.grad.clone() for p in (*reference.audio.parameters(), *reference.head.parameters())]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    assert norm > 100 * clip

    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    trainer = Trainer(model, loader(x, y), loader(x, y), train_cfg(grad_clip=clip, epochs=1), "regression", CPU,
                      progress=False, scaler=scaler)
    backward, applied = [], []
    for p in trainer.params:  # what backward leaves: the scaled gradient
        p.register_post_accumulate_grad_hook(lambda p: backward.append(p.grad.clone()))
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: applied.append([p.grad.clone() for p in trainer.params]))
    m = trainer.fit().history[0]

    assert scaler.is_enabled() and scaler.get_scale() == scale  # the scaled path really ran
    scaled = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in backward])).item()
    assert scaled == pytest.approx(scale * norm, rel=1e-5)
    assert m["grad_norm_pre_clip"] == pytest.approx(norm, rel=1e-5)  # unscaled, before clipping
    assert m["grad_norm_post_clip"] <= clip * (1 + 1e-5)
    assert len(applied) == 1
    for got, want in zip(applied[0], grads, strict=True):  # the hand gradient, clipped to the limit
        torch.testing.assert_close(got, want * clip / (norm + 1e-6), rtol=1e-5, atol=1e-9)


# -- features.ref = "train_max" ------------------------------------------------------------------

def _rewrite(path, gain):
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32")
    sf.write(path, audio * gain, rate, format="MP3")


def test_train_max_reference_ignores_a_loud_test_song(tmp_path):
    """Two copies of one MERGE-layout dataset that differ only in one test song, 20 dB louder in
    the second: the training split's maximum, hence the dB scale, is the same for both."""
    from merx.data.synthetic import SyntheticSpec, generate
    from merx.features.mel import train_max_ref
    from merx.pipeline import prepare

    generate(tmp_path / "original", SyntheticSpec(n_songs=12, duration=1.0, min_duration=1.0))
    quiet = tmp_path / "quiet"
    shutil.copytree(tmp_path / "original", quiet)
    for mp3 in quiet.glob("audio/*/*.mp3"):
        _rewrite(mp3, 0.1)  # -20 dB: room to make one song louder without clipping
    split = quiet / "tvt_dataframes" / "tvt_70_15_15" / "tvt_70_15_15_test_bimodal_complete.csv"
    with open(split, newline="") as fh:
        song, quadrant = next(csv.DictReader(fh)).values()
    loud = tmp_path / "loud"
    shutil.copytree(quiet, loud)
    shutil.copy(tmp_path / "original" / "audio" / quadrant / f"{song}.mp3", loud / "audio" / quadrant)

    def prepared(root):
        return prepare(resolve({
            "data": {"source": {"name": "merge", "root": str(root)}, "cache_dir": str(tmp_path / "cache")},
            "features": {"ref": "train_max", "n_mels": 16, "n_fft": 512, "hop_length": 256, "duration": 1.0,
                         "workers": 1},
            "model": {"modalities": "audio"}}), progress=False)

    a, b = prepared(quiet), prepared(loud)
    assert song in {s.id for s in b.table.split("test")}
    louder = b.features.load_power(song).max() / a.features.load_power(song).max()
    assert 50 < louder < 200  # about 20 dB
    assert b.ref_power == a.ref_power
    everything = train_max_ref(b.features, [s.id for s in b.table.songs])
    assert everything > 10 * b.ref_power  # the leak this test guards against would show


# -- defaults ------------------------------------------------------------------------------------

def test_the_defaults_that_fix_the_notebooks_flaws():
    exp = Experiment.from_config(resolve({}))
    expected = {"features.ref": "fixed", "features.top_db": 80.0, "features.crop": "middle",
                "train.grad_clip": 1.0, "data.on_overlap": "error", "train.deterministic": False}
    for key, value in expected.items():
        section, name = key.split(".")
        assert SCHEMA[section][name].default == value, key
        assert getattr(getattr(exp, section), name) == value, key


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


# -- determinism -----------------------------------------------------------------------------

def torch_flags():
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark, os.environ.get(CUBLAS_ENV))


@pytest.fixture
def benchmark_on(monkeypatch):
    """cuDNN benchmarking on, as a user may have it: it must come back on, not to torch's default."""
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    yield
    torch.backends.cudnn.benchmark = saved


def _fit(deterministic, on_epoch=None, model=None, epochs=2):
    x, y = torch.randn(8, 3), torch.rand(8, 2)
    trainer = Trainer(model or TinyNet(), loader(x, y, 4), loader(x, y), train_cfg(epochs=epochs,
                      deterministic=deterministic), "regression", CPU, on_epoch=on_epoch, progress=False)
    return trainer.fit()


def test_deterministic_sets_the_torch_flags_for_the_fit_and_restores_them(benchmark_on):
    before = torch_flags()
    assert before == (False, False, True, None)
    seen = []
    _fit(True, on_epoch=lambda epoch, m: seen.append(torch_flags()))
    assert seen == [(True, True, False, ":4096:8")] * 2
    assert torch_flags() == before
    # also when the fit ends in an exception
    with pytest.raises(KeyboardInterrupt):
        _fit(True, on_epoch=lambda epoch, m: (_ for _ in ()).throw(KeyboardInterrupt))
    assert torch_flags() == before
    # off (the default), nothing changes
    seen.clear()
    _fit(False, on_epoch=lambda epoch, m: seen.append(torch_flags()))
    assert seen == [before] * 2


def test_deterministic_keeps_a_deterministic_cublas_setting_already_there(benchmark_on, monkeypatch):
    monkeypatch.setenv(CUBLAS_ENV, ":16:8")
    seen = []
    _fit(True, on_epoch=lambda epoch, m: seen.append(os.environ.get(CUBLAS_ENV)), epochs=1)
    assert seen == [":16:8"] and os.environ[CUBLAS_ENV] == ":16:8"


class PutModel(TinyNet):
    """Uses Tensor.put_, which has no deterministic implementation even on the CPU."""

    def forward(self, batch):
        out = super().forward(batch)
        return out + torch.zeros_like(out).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))


def test_an_operation_without_a_deterministic_kernel_names_the_setting(benchmark_on):
    with pytest.raises(ConfigError, match="put_ has no deterministic implementation") as exc:
        _fit(True, model=PutModel())
    assert exc.value.key == "train.deterministic"
    assert torch_flags() == (False, False, True, None)
    assert _fit(False, model=PutModel()).epochs_run == 2  # fine without the setting


def _cpu_fit(seed):
    seed_everything(seed)
    model = NormDropNet()
    x, y = torch.randn(48, 3), torch.rand(48, 2)
    train = loader(x, y, 8, shuffle=True, generator=torch.Generator().manual_seed(seed))
    cfg = train_cfg(epochs=3, lr={"audio": 0.01, "head": 0.01}, early_stopping={"patience": 0})
    result = Trainer(model, train, loader(x, y, 16), cfg, "regression", CPU, progress=False).fit()
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in result.history], snapshot(model)


def test_cpu_runs_repeat_without_the_deterministic_setting():
    assert not torch.are_deterministic_algorithms_enabled()
    (h1, s1), (h2, s2) = _cpu_fit(3), _cpu_fit(3)
    assert h1 == h2 and same(s1, s2)
    h3, s3 = _cpu_fit(4)
    assert not same(s1, s3) and not np.allclose(h1[-1]["train_loss"], h3[-1]["train_loss"])
