"""An ordered list of augmentations, each applied with its probability, drawing from one generator.

A :class:`Chain` is what ``[[augment.audio]]`` (one chain per level: waveform, spectrogram) and
``[[augment.text]]`` become. Each step gets its own child generator (``rng.spawn``), so the
draws of one step never shift those of the next: turning a step's probability to 0 leaves what
the other steps do to a song unchanged.

A chain built from an experiment's config keeps that config as its *recipe*; pickling it (for
spawned worker processes) sends the recipe, and the other process builds the steps again from
its own plugin registry. Plugin factories may therefore return objects that cannot be pickled
(lambdas, closures, library objects holding file handles).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from merx.errors import PluginRuntimeError


@dataclass
class Step:
    """One augmentation of a chain: ``apply(x, rng) -> x``, used with probability ``p``.

    ``config`` is its resolved config table (name, settings, p) and ``version`` where its code
    came from; both go into cache keys of precomputed variants. ``label`` names it in errors:
    ``audio augmentation 'gain' (built-in)``."""

    name: str
    p: float
    apply: Callable[[Any, np.random.Generator], Any]
    config: dict = field(default_factory=dict)
    version: str = ""
    label: str = ""


class Chain:
    """Steps applied in order: ``chain(x, rng)`` -> the augmented ``x``."""

    def __init__(self, steps: list[Step], recipe: tuple | None = None):
        self.steps = list(steps)
        self.recipe = recipe

    def __call__(self, x, rng: np.random.Generator):
        for step, child in zip(self.steps, rng.spawn(len(self.steps)), strict=True):
            # The coin is the child's first draw: a step's own draws never decide another's coin.
            if child.random() < step.p:
                try:
                    x = step.apply(x, child)
                except Exception as exc:  # the plugin's own code: one line naming it, not a traceback
                    raise PluginRuntimeError(f"{step.label or step.name} failed while augmenting a training "
                                             f"song: {type(exc).__name__}: {exc}") from exc
        return x

    def __len__(self) -> int:
        return len(self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def fingerprint(self) -> str:
        """A digest of what the chain does (configs and code versions), for cache keys."""
        described = [{"config": s.config or {"name": s.name, "p": s.p}, "version": s.version} for s in self.steps]
        return hashlib.sha1(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def __reduce__(self):
        if self.recipe is None:
            return (Chain, (self.steps,))
        return (_rebuild, self.recipe)


def _rebuild(builder: str, *args) -> Chain:
    """Build a chain again in another process from its recipe: ``(builder, *args)``."""
    import importlib

    module, _, name = builder.rpartition(".")
    return getattr(importlib.import_module(module), name)(*args)
