"""The fast kernels: torch.compile falls back on a real compile failure, channels_last and cuDNN
autotuning are applied only on CUDA (their flags checked on the CPU; their speed is benchmarked,
never asserted)."""

import pytest
import torch
from test_train import CPU, TinyNet, loader, same, snapshot, train_cfg
from torch import nn

from merx.kernels import CompiledForward, cudnn_autotune, use_channels_last
from merx.train import Trainer


def _fit(compile_):
    torch.manual_seed(0)
    x, y = torch.randn(24, 3), torch.rand(24, 2)
    model = TinyNet()
    trainer = Trainer(model, loader(x, y, 8), loader(x, y, 8), train_cfg(epochs=3, compile=compile_),
                      "regression", CPU, progress=False)
    return trainer, trainer.fit(), snapshot(model)


def test_a_failing_compile_warns_naming_the_failure_and_trains_as_without_compile(monkeypatch):
    import torch._inductor.config as inductor

    # A real failure of the real backend: inductor finds no C++ compiler to build its CPU kernels.
    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/g++",))
    torch._dynamo.reset()
    with pytest.warns(RuntimeWarning, match=r"train.compile: torch.compile failed \(.*InvalidCxxCompiler.*\); "
                                            r"training without compilation"):
        compiled, fit, weights = _fit(True)
    assert isinstance(compiled.forward, CompiledForward) and "InvalidCxxCompiler" in compiled.forward.failure
    _, plain, plain_weights = _fit(False)
    def timeless(history):
        return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]

    assert timeless(fit.history) == timeless(plain.history)
    assert same(weights, plain_weights)


def test_an_unknown_compile_backend_falls_back_before_any_step():
    model = TinyNet()
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no-such-backend"):
        forward = CompiledForward(model, backend="no-such-backend")
    batch = {"x": torch.randn(2, 3)}
    assert torch.equal(forward(batch), model(batch))


class Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio_tower = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))


def test_channels_last_only_for_the_audio_tower_on_cuda():
    model = Tower()
    weight = model.audio_tower[2].weight
    assert not use_channels_last(model, torch.device("cpu"), True)
    assert not use_channels_last(model, torch.device("cuda"), False)
    assert not weight.is_contiguous(memory_format=torch.channels_last)
    # The format change itself needs no GPU: the weights are re-laid out where they are.
    assert use_channels_last(model, torch.device("cuda"), True)
    assert model.audio_tower[2].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device, deterministic, inside", [("cuda", False, True), ("cuda", True, False),
                                                           ("cpu", False, False)])
def test_cudnn_autotunes_on_cuda_unless_deterministic_and_is_put_back(device, deterministic, inside):
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        with cudnn_autotune(torch.device(device), deterministic):
            assert torch.backends.cudnn.benchmark is inside
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved
