"""A training step without host syncs: each step's loss and gradient norm stay on the device
and are read once per epoch; a non-finite step is still named, and no weight moves after it.

(Kept apart from test_train.py, which is near the 450-line limit; the fixtures are shared.)"""

import math
import sys

import numpy as np
import pytest
import torch
from test_train import CPU, TinyNet, loader, same, snapshot, train_cfg

from merx.train import Trainer, TrainingDiverged


def _steps_loader(n_steps=5, bad=None):
    """``n_steps`` batches of 4 in order; batch ``bad`` (1-based) has a NaN input."""
    torch.manual_seed(1)
    x, y = torch.randn(4 * n_steps, 3), torch.rand(4 * n_steps, 2)
    if bad is not None:
        x[4 * (bad - 1)] = math.nan
    return loader(x, y, 4)


def _weights_before_each_step(trainer):
    """The model's weights as each optimizer step starts (= after the previous step), by step."""
    seen = []
    trainer.optimizer.register_step_pre_hook(lambda *_: seen.append(snapshot(trainer.model)))
    return seen


@pytest.mark.parametrize("what", ["training loss", "gradient norm"])
def test_a_non_finite_step_is_named_at_the_end_and_no_later_step_moves_the_weights(what):
    torch.manual_seed(0)
    model, steps = TinyNet(), {"n": 0}
    if what == "gradient norm":  # finite losses, but step 3's gradient is NaN
        def poison(grad):
            return grad * math.nan if steps["n"] == 3 else grad

        model.head.weight.register_hook(poison)
        model.register_forward_pre_hook(lambda *_: steps.__setitem__("n", steps["n"] + 1))
    train = _steps_loader(bad=3 if what == "training loss" else None)
    trainer = Trainer(model, train, train, train_cfg(grad_clip=1.0, weight_decay=0.1, optimizer="adamw"),
                      "regression", CPU, progress=False)
    seen = _weights_before_each_step(trainer)
    with pytest.raises(TrainingDiverged, match=f"epoch 1, step 3: the {what} is nan") as exc:
        trainer.train_one_epoch(1)
    assert (exc.value.epoch, exc.value.step) == (1, 3) and math.isnan(exc.value.value)
    assert len(seen) == 5  # the epoch ran to its end: the check is read once, after the last step
    # After two good Adam steps, neither step 3 nor the good steps 4 and 5 changed a weight: the
    # model holds exactly the weights step 3 started from (AdamW's momentum and decay would have
    # moved them even with the gradient zeroed).
    assert not same(seen[2], seen[0])
    assert same(snapshot(model), seen[2]) and all(torch.isfinite(p).all() for p in model.parameters())


def _reference_epoch(trainer, max_norm):
    """The per-step loop merx had before (a host read per step, the post-clip norm measured)."""
    model, optimizer = trainer.model, trainer.optimizer
    model.train()
    loss_sum, seen, pre, post = 0.0, 0, [], []
    for batch in trainer.train_loader:
        loss = torch.nn.functional.mse_loss(model(batch), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        pre.append(torch.nn.utils.clip_grad_norm_(trainer.params, max_norm).item())
        post.append(torch.nn.utils.get_total_norm([p.grad for p in trainer.params]).item())
        optimizer.step()
        loss_sum, seen = loss_sum + loss.item() * len(batch["target"]), seen + len(batch["target"])
    return {"train_loss": loss_sum / seen, "grad_norm_pre_clip": np.mean(pre), "grad_norm_pre_clip_max": max(pre),
            "grad_norm_post_clip": np.mean(post), "grad_norm_post_clip_max": max(post)}


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_epoch_metrics_and_weights_equal_the_per_step_reference_loop(grad_clip):
    x, y = torch.randn(22, 3), torch.full((22, 2), 3.0)  # 6 steps, the last one of 2 songs
    trainers = []
    for _ in range(2):
        torch.manual_seed(0)
        trainers.append(Trainer(TinyNet(), loader(x, y, 4), None, train_cfg(grad_clip=grad_clip),
                                "regression", CPU, progress=False))
    merx, ref = trainers
    for epoch in (1, 2, 3):
        got, want = merx.train_one_epoch(epoch), _reference_epoch(ref, grad_clip or math.inf)
        assert got == pytest.approx(want, rel=1e-5)
        assert same(snapshot(merx.model), snapshot(ref.model))  # the put-back of the weights is exact
    assert got["grad_norm_pre_clip_max"] > 0.5 > got["grad_norm_post_clip"] or grad_clip == 0.0


def test_an_epoch_reads_the_device_once_whatever_its_number_of_steps(monkeypatch):
    """What would be a host sync on a GPU, counted on the CPU: every read of a tensor's value
    into Python. The optimizer's step counters are left out: torch keeps them on the host."""
    reads = []

    def counted(name, orig):
        def read(self, *args, **kwargs):
            reads.append((name, sys._getframe(1).f_globals.get("__name__"), self))
            return orig(self, *args, **kwargs)
        return read

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))

    def epoch_reads(n_steps):
        trainer = Trainer(TinyNet(), _steps_loader(n_steps), None, train_cfg(grad_clip=0.5), "regression", CPU,
                          progress=False)
        reads.clear()
        trainer.train_one_epoch(1)
        counters = [s["step"] for s in trainer.optimizer.state.values()]
        return [(name, module) for name, module, t in reads if not any(t is c for c in counters)]

    one, many = epoch_reads(1), epoch_reads(6)
    assert one == many and ("tolist", "merx.train") in one
    assert [r for r in many if r[1] == "merx.train"] == [("tolist", "merx.train")]
    # and the step itself hands back tensors only
    trainer = Trainer(TinyNet(), _steps_loader(1), None, train_cfg(), "regression", CPU, progress=False)
    values, finite = trainer._train_step(next(iter(trainer.train_loader)), torch.tensor(True),
                                         [torch.empty_like(p) for p in trainer.params])
    assert isinstance(values, torch.Tensor) and values.shape == (2,) and isinstance(finite, torch.Tensor)
