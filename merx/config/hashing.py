"""What identifies a resolved config: its canonical JSON, its hash, its flattened keys."""

from __future__ import annotations

import hashlib
import json

#: Keys that name or describe a run but do not change what it computes.
_COSMETIC = ("name", "description", "tags")


def canonical_json(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: dict, include_seed: bool = True) -> str:
    """Hash of everything that affects the result (not the name, description or tags)."""
    core = {k: v for k, v in cfg.items() if k not in _COSMETIC and (include_seed or k != "seed")}
    return hashlib.sha256(canonical_json(core).encode()).hexdigest()[:16]


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
