"""The fast kernels a training run may use: memory format, cuDNN autotuning, torch.compile.

What is on by default rests on measurements: on an H200, the MODEL_3-shaped step took 20.6 ms
in fp32, 14.5 ms with channels_last and ``cudnn.benchmark`` together, 12.2 ms with bf16 autocast
(issue 12's table; ``benchmarks/README.md``). So on CUDA the audio tower runs channels_last
(``train.channels_last``) and cuDNN picks its kernels by timing them (``cudnn.benchmark``, not
with ``train.deterministic``, which needs cuDNN's fixed choices), and autocast is bf16 where the
GPU has it (``merx.devices.amp_settings``). On a CPU none of them applies. ``torch.compile``
(``train.compile``) is off by default: on a CPU it made the quickstart's step 20-30 % faster but
took minutes to compile, more than a whole quickstart run saves (``benchmarks/README.md``); on
a GPU it is untimed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def use_channels_last(model: torch.nn.Module, device: torch.device, enabled: bool) -> bool:
    """Put the audio tower's weights in channels_last on CUDA (cuDNN's convolutions then run
    NHWC kernels, and their outputs follow the weights' format). Whether it did."""
    tower = getattr(model, "audio_tower", None)
    if not enabled or tower is None or torch.device(device).type != "cuda":
        return False
    tower.to(memory_format=torch.channels_last)
    return True


@contextmanager
def cudnn_autotune(device: torch.device, deterministic: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on, inside, for a CUDA fit that is not deterministic
    (a batch's shapes are the same every step, so cuDNN times its kernels once per shape); put
    back as it was afterwards."""
    if torch.device(device).type != "cuda" or deterministic:
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class CompiledForward:
    """``forward(batch)``: the model through ``torch.compile``, or the model itself once
    compiling failed, with one warning naming the failure (``failure`` keeps it).

    Compilation happens at the first call (and again for a new shape or for eval mode), so
    that is where a failure shows; a failure in the model's own code then fails again, eagerly,
    with its own error."""

    def __init__(self, model: torch.nn.Module, backend: str | Callable = "inductor"):
        self.model = model
        self.failure: str | None = None
        try:
            self.compiled = torch.compile(model, backend=backend)
        except Exception as exc:  # e.g. an unknown backend: found out before any step
            self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        first = (str(exc).strip().splitlines() or [""])[0]
        self.failure = f"{type(exc).__name__}: {first}"
        self.compiled = None
        warnings.warn(f"train.compile: torch.compile failed ({self.failure}); training without compilation "
                      "(set train.compile = false to skip the attempt)", RuntimeWarning, stacklevel=3)

    def __call__(self, batch):
        if self.compiled is not None:
            try:
                return self.compiled(batch)
            except Exception as exc:
                self._fall_back(exc)
        return self.model(batch)


def forward_of(model: torch.nn.Module, compile: bool) -> Callable:
    """What a training step calls: the model, or its :class:`CompiledForward` with ``compile``."""
    return CompiledForward(model) if compile else model
