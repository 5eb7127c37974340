"""What identifies a resolved config: its canonical JSON, its hash, its flattened keys."""

from __future__ import annotations

import hashlib
import json

#: Keys that name or describe a run but do not change what it computes.
_COSMETIC = ("name", "description", "tags")

#: Settings added after runs were first recorded, with the value that reproduces what merx did
#: before they existed. A config holding that value hashes as if the key were absent, so runs
#: recorded before and after the key appeared still share a group (compare, a sweep's "already
#: done") -- every new schema key with a neutral default goes here.
_LATER_DEFAULTS = {
    ("train", "deterministic"): False,
    ("train", "data_on_device"): "auto",
    ("train", "compile"): False,
    ("train", "channels_last"): True,
}


def canonical_json(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: dict, include_seed: bool = True) -> str:
    """Hash of everything that affects the result (not the name, description or tags)."""
    core = {k: v for k, v in cfg.items() if k not in _COSMETIC and (include_seed or k != "seed")}
    for path, neutral in _LATER_DEFAULTS.items():
        *tables, key = path
        parent = core
        for t in tables:
            parent = parent.get(t) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and key in parent and parent[key] == neutral:
            core = _without(core, path)
    return hashlib.sha256(canonical_json(core).encode()).hexdigest()[:16]


def _without(cfg: dict, path: tuple) -> dict:
    """A copy of ``cfg`` without the key at ``path`` (the input is left as it is)."""
    head, *rest = path
    if not rest:
        return {k: v for k, v in cfg.items() if k != head}
    return {**cfg, head: _without(cfg[head], tuple(rest))}


def flatten(cfg: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": {"text": 1e-5}}}`` -> ``{"train.lr.text": 1e-5}``."""
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out
