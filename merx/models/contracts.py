"""What merx checks of the parts plugins build, when they are built and every time they run.

A plugin's own code that fails (raises, or returns the wrong type or shape) ends in one
``PluginRuntimeError`` naming the plugin, where it comes from (distribution and version, or
local file) and how to diagnose it (``merx plugin check``), instead of a long traceback that
ends inside torch and names nothing. The checks read shapes only (host-side metadata, no device
synchronisation), so they cost microseconds per batch: cheap enough to run on every call, which
also catches a part that is only wrong for some batch sizes (a ``squeeze()`` on a batch of one).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from merx.errors import PluginRuntimeError
from merx.hookspecs import KINDS

if TYPE_CHECKING:
    from merx.plugins import Plugin


def check_built(obj, kind: str, name: str, attrs: tuple[str, ...]) -> nn.Module:
    """What a factory returned: a module with the integer attributes merx sizes the next layer by."""
    what = f"{KINDS[kind].label} {name!r}"
    if not isinstance(obj, nn.Module):
        raise TypeError(f"{what} returned {type(obj).__name__}, not a torch.nn.Module")
    missing = [a for a in attrs if not isinstance(getattr(obj, a, None), int)]
    if missing:
        raise TypeError(f"{what} ({type(obj).__name__}) lacks the integer attribute(s) {', '.join(missing)} "
                        f"that merx needs to size the next layer")
    return obj


def failure(plugin: Plugin | None, part: str, module, problem: str) -> PluginRuntimeError:
    """The error for a part whose code failed: named after its plugin when it came from one."""
    if plugin is None:  # a part put together by hand (notebooks, tests): name its class
        return PluginRuntimeError(f"the {part} ({type(module).__name__}) {problem}")
    kind = KINDS[plugin.kind]
    return PluginRuntimeError(
        f"{kind.label} {plugin.name!r} ({plugin.origin_label}) {problem}. "
        f"This is the plugin's own code; diagnose it with `merx plugin check {kind.singular} {plugin.name}`")


@contextlib.contextmanager
def running(plugin: Plugin | None, part: str, module, what: str = "forward"):
    """Turn an exception raised by a part's code into :func:`failure`; the original is the cause."""
    try:
        yield
    except PluginRuntimeError:
        raise
    except torch.cuda.OutOfMemoryError:
        raise  # the device is full: no plugin's fault, and the message says what to do
    except Exception as exc:
        raise failure(plugin, part, module, f"failed in its {what}: {type(exc).__name__}: {exc}") from exc


def _shape(x) -> str:
    return f"[{', '.join(map(str, x.shape))}]" if isinstance(x, torch.Tensor) else type(x).__name__


def check_tower_output(out, batch: int, module, plugin: Plugin | None, part: str):
    """A tower's ``TowerOutput``: pooled ``[batch, out_dim]``; a sequence ``[batch, T, seq_dim]``
    and mask ``[batch, T]`` when it gives them."""
    pooled, sequence, mask = (getattr(out, a, None) for a in ("pooled", "sequence", "mask"))
    if not isinstance(pooled, torch.Tensor):
        raise failure(plugin, part, module, f"returned {type(out).__name__} from forward; a tower returns "
                      "merx.api.TowerOutput(pooled, sequence, mask)")
    if tuple(pooled.shape) != (batch, module.out_dim):
        raise failure(plugin, part, module, f"returned pooled vectors of shape {_shape(pooled)}; expected "
                      f"[batch, out_dim] = [{batch}, {module.out_dim}]")
    if sequence is not None:
        if not (isinstance(sequence, torch.Tensor) and sequence.ndim == 3 and sequence.shape[0] == batch
                and sequence.shape[2] == module.seq_dim):
            raise failure(plugin, part, module, f"returned a token sequence of shape {_shape(sequence)}; "
                          f"expected [batch, tokens, seq_dim] = [{batch}, T, {module.seq_dim}]")
        if mask is not None and tuple(getattr(mask, "shape", ())) != tuple(sequence.shape[:2]):
            raise failure(plugin, part, module, f"returned a mask of shape {_shape(mask)} for a sequence "
                          f"of shape {_shape(sequence)}; expected [batch, tokens]")
    return out


def check_fusion_output(out, batch: int, module, plugin: Plugin | None):
    """A fusion's output: a tensor ``[batch, out_dim]``."""
    if not isinstance(out, torch.Tensor):
        raise failure(plugin, "fusion", module, f"returned {type(out).__name__} from forward; a fusion "
                      f"returns a tensor [batch, out_dim] = [{batch}, {module.out_dim}]")
    if tuple(out.shape) != (batch, module.out_dim):
        raise failure(plugin, "fusion", module, f"returned shape {_shape(out)} from forward; expected "
                      f"[batch, out_dim] = [{batch}, {module.out_dim}]")
    return out
