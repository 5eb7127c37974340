"""Where training runs and how it is made repeatable: device, mixed precision, seeds, and
deterministic algorithms (needed for repeatable GPU runs; CPU runs repeat without them)."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from merx.config import ConfigError


def select_device(name: str = "auto") -> torch.device:
    """The torch device for ``train.device``: "auto" takes cuda, then mps, then cpu.

    An explicit device that this machine lacks is an error (never a silent fall-back to the
    CPU, which would turn a one-hour run into a day)."""
    mps_ok = torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:<index> or mps",
                          key="train.device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support (a CPU build)" if torch.version.cuda is None else \
                f"was built for CUDA {torch.version.cuda} but finds no usable GPU"
            raise ConfigError(f"{name!r} requested, but this torch ({torch.__version__}) {build}. "
                              "Set train.device = 'auto' or 'cpu' (e.g. --set train.device=cpu), "
                              "or install a CUDA build of torch on a machine with an NVIDIA GPU.",
                              key="train.device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{name!r} requested, but only {torch.cuda.device_count()} GPU(s) are "
                              f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1})", key="train.device")
    elif device.type == "mps" and not mps_ok:
        raise ConfigError("'mps' requested, but Apple's Metal backend is not available here; "
                          "set train.device = 'auto' or 'cpu'", key="train.device")
    return device


def amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype]:
    """Whether to autocast on ``device``, and to which dtype.

    CUDA: bf16 where the GPU supports it (no loss scaling needed), else fp16, which needs a
    ``GradScaler`` (the trainer makes one when the dtype is float16). CPU and MPS: off; their
    autocast gains little for these models and changes numerics."""
    if enabled and device.type == "cuda":
        with torch.cuda.device(device):
            bf16 = torch.cuda.is_bf16_supported()
        return True, torch.bfloat16 if bf16 else torch.float16
    return False, torch.float32


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The states of python's ``random``, numpy's global generator, torch's CPU generator and
    every initialised GPU's, as tensors (a checkpoint loads them with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": torch.tensor([version, *internal], dtype=torch.int64),
             "python_gauss": gauss, "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what :func:`rng_state` returned: the next random draws are those that followed it."""
    python = state["python"].tolist()
    random.setstate((python[0], tuple(python[1:]), state["python_gauss"]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]),
                         int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


#: cuBLAS's workspace settings that make its results repeatable (CUDA >= 10.2); :16:8 uses less memory.
CUBLAS_ENV, CUBLAS_DETERMINISTIC = "CUBLAS_WORKSPACE_CONFIG", (":4096:8", ":16:8")


@contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """While inside: ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic and not
    benchmarking, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (a deterministic value already set is
    kept). On leaving, also by an exception, every one of them is put back as it was: a sweep or
    a test suite runs many trainings in one process. Does nothing when not ``enabled``.

    An operation with no deterministic implementation on the device raises ``RuntimeError``.
    cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when the process first uses it, so the variable
    must be set before any CUDA work; if CUDA is already initialised without it, this warns:
    export it before starting merx instead."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, os.environ.get(CUBLAS_ENV))
    if saved[-1] not in CUBLAS_DETERMINISTIC:
        if torch.cuda.is_initialized():
            warnings.warn(f"train.deterministic: CUDA was initialised in this process before {CUBLAS_ENV} was set, "
                          "so cuBLAS may already have chosen a non-deterministic workspace; export "
                          f"{CUBLAS_ENV}={CUBLAS_DETERMINISTIC[0]} before starting merx", RuntimeWarning, stacklevel=3)
        os.environ[CUBLAS_ENV] = CUBLAS_DETERMINISTIC[0]
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        algorithms, warn_only, cudnn_deterministic, benchmark, cublas = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, benchmark
        if cublas is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = cublas


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker's ``random`` and numpy from its torch seed.

    torch gives worker ``i`` the seed ``base_seed + i``, with ``base_seed`` drawn from the
    loader's generator; numpy and ``random`` would otherwise start identical in every worker
    (forked copies of the parent), repeating the same augmentations."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
