"""Experiment files: TOML -> one resolved, validated, hashable config.

A config is a plain nested dict. ``SCHEMA`` says which keys exist, their types and defaults;
plugin tables (``[data.source]``, ``[model.audio]``, ...) hold a ``name`` plus that plugin's own
settings, which are checked against the plugin factory's signature. ``resolve`` returns the
config with every default filled in: that is what a run stores and hashes.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


from merx.errors import ConfigError  # noqa: F401  (re-exported: merx.config.ConfigError)
from merx.hookspecs import KINDS


@dataclass
class F:
    """One setting: its type(s), default and help."""

    type: Any
    default: Any
    help: str = ""
    choices: tuple | None = None


@dataclass
class PluginTable:
    """A table naming a plugin of ``kind`` plus that plugin's settings."""

    kind: str
    default: str | None
    help: str = ""


@dataclass
class PluginList:
    """An ordered list of plugin tables (augmentations), each with a probability ``p``."""

    kind: str
    help: str = ""
    default: list = field(default_factory=list)


LR_PARTS = ("audio", "text", "fusion", "head")

SCHEMA: dict[str, Any] = {
    "name": F(str, None, "Experiment name; defaults to the file's stem."),
    "description": F(str, "", "Free text stored with every run."),
    "extends": F(str, None, "Another experiment file (relative to this one) to start from."),
    "seed": F(int, 0, "Seed for python, numpy, torch and DataLoader workers."),
    "task": F(str, "regression", "What to predict: valence/arousal or the quadrant.",
              ("regression", "classification")),
    "tags": F(list, [], "Labels for finding runs later."),
    "data": {
        "source": PluginTable("data_sources", "synthetic", "Where songs come from."),
        "cache_dir": F(str, ".merx/cache", "Cache for generated data, features and embeddings."),
        "on_overlap": F(str, "error", "A song in two splits (same id or same audio): stop, or warn.",
                        ("error", "warn")),
    },
    "features": {
        "sample_rate": F(int, 22050, "Audio is resampled to this rate (Hz)."),
        "n_fft": F(int, 2048, "FFT window length (samples)."),
        "hop_length": F(int, 512, "Hop between frames (samples)."),
        "n_mels": F(int, 128, "Mel bands."),
        "duration": F(float, 30.0, "Seconds of audio the model sees; shorter clips are padded."),
        "ref": F(str, "fixed", "dB reference: a fixed power (absolute scale) or the training split's "
                 "maximum power.", ("fixed", "train_max")),
        "ref_value": F(float, 1.0, "The fixed reference power when ref = 'fixed'."),
        "top_db": F(float, 80.0, "Floor: dB values below -top_db (relative to the reference) are clipped; "
                    "padding uses the floor."),
        "crop": F(str, "middle", "Which frames of a longer clip to keep; 'random' draws a fresh crop "
                  "each epoch in training (middle in evaluation).", ("head", "middle", "max_energy", "random")),
        "workers": F(int, 0, "Processes for feature extraction; 0 = one per CPU core."),
    },
    "model": {
        "modalities": F(str, "both", "Use both towers, or one alone for ablations.",
                        ("both", "audio", "text")),
        "audio": PluginTable("audio_towers", "vggish", "The audio tower."),
        "text": PluginTable("text_towers", "huggingface", "The text tower."),
        "fusion": PluginTable("fusions", "concat", "How the two towers' outputs are combined."),
        "head": {
            "hidden": F(list, [100], "Hidden layer sizes of the prediction head."),
            "dropout": F(float, 0.5, "Dropout before each head layer."),
        },
    },
    "augment": {
        "audio": PluginList("audio_augmentations", "Audio augmentations, applied in order (training only)."),
        "text": PluginList("text_augmentations", "Text augmentations, applied in order (training only)."),
        "strategy": F(str, "precompute", "Waveform augmentations: precompute `variants` versions per training "
                      "song into the feature cache (cheap epochs), or apply them in the data loader every "
                      "epoch (fresh draws, an extraction per song per epoch).", ("precompute", "on_the_fly")),
        "variants": F(int, 4, "Augmented versions per training song (precomputed audio; text always)."),
    },
    "train": {
        "device": F(str, "auto", "auto (cuda, then mps, then cpu), or cpu, cuda, cuda:1, mps."),
        "amp": F(bool, True, "Mixed precision on CUDA (bf16 where supported); off elsewhere."),
        "optimizer": F(str, "adam", "Optimizer.", ("adam", "adamw")),
        "weight_decay": F(float, 0.0, "Weight decay."),
        "lr": {
            "audio": F(float, 1e-3, "Learning rate of the audio tower."),
            "text": F(float, 1e-5, "Learning rate of the text tower (when trainable)."),
            "fusion": F(float, 1e-3, "Learning rate of the fusion."),
            "head": F(float, 1e-3, "Learning rate of the head."),
        },
        "scheduler": {
            "name": F(str, "step", "Learning-rate schedule.", ("step", "cosine", "none")),
            "step_size": F(int, 15, "StepLR: epochs between decays."),
            "gamma": F(float, 0.5, "StepLR: decay factor."),
        },
        "batch_size": F(int, 16, "Songs per batch."),
        "epochs": F(int, 50, "Maximum epochs."),
        "grad_clip": F(float, 1.0, "Clip the gradient norm to this; 0 switches clipping off."),
        "num_workers": F(int, 0, "DataLoader worker processes."),
        "early_stopping": {
            "monitor": F(str, "val_loss", "Validation metric to watch (val_loss, val_macro_f1, "
                         "val_valence_mae, ...)."),
            "mode": F(str, "min", "Whether lower or higher is better.", ("min", "max")),
            "patience": F(int, 10, "Epochs without improvement before stopping; 0 = never stop early."),
            "min_delta": F(float, 0.0, "Smallest change that counts as an improvement."),
        },
    },
}


# -- loading --------------------------------------------------------------------------------

def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", str(path)) from None


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            # Choosing another plugin drops the old plugin's settings: they would not fit it.
            if "name" in v and out[k].get("name") not in (None, v["name"]):
                out[k] = copy.deepcopy(v)
            else:
                out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_file(path: str | Path, _seen: tuple = ()) -> dict:
    """Read an experiment file, following ``extends`` chains (paths relative to each file)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"extends forms a cycle: {chain}", str(path), "extends")
    raw = _read_toml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError("must be a file name (string)", str(path), "extends")
    parent_path = (path.parent / parent)
    if not parent_path.exists():
        raise ConfigError(f"extends {parent!r}, which does not exist (looked for {parent_path})",
                          str(path), "extends")
    return _merge(load_file(parent_path, (*_seen, resolved)), raw)


def parse_set(item: str) -> tuple[str, Any]:
    """``section.key=value``; the value is read as TOML (numbers, booleans, lists), else a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, value = item.split("=", 1)
    key = key.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def apply_sets(raw: dict, sets: list[str]) -> dict:
    out = copy.deepcopy(raw)
    for item in sets:
        key, value = parse_set(item)
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {p!r} is a value, not a table")
            node = nxt
        if parts[-1] == "name" and isinstance(node.get("name"), str) and node["name"] != value:
            # Switching plugin on the command line: the old plugin's settings do not carry over.
            for k in [k for k in node if k != "name"]:
                del node[k]
        node[parts[-1]] = value
    return out


# -- validation -----------------------------------------------------------------------------

def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a table"}


def _check_type(value, expected, file, key):
    """Check (and gently coerce: int -> float) one value; returns the value to store."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"expected an integer, got {value!r}", file, key)
    if not isinstance(value, expected):
        raise ConfigError(f"expected {_TYPE_NAMES.get(expected, expected.__name__)}, got {value!r}", file, key)
    return value


def _annotation_type(ann):
    """The plain python type a plugin parameter's annotation asks for, or None if not simple."""
    if ann is None:
        return None, False
    if isinstance(ann, str):
        ann = ann.replace(" ", "")
        optional = ann.endswith("|None") or ann.startswith("Optional[")
        base = ann.removesuffix("|None").removeprefix("Optional[").removesuffix("]") if optional else ann
        base = base.split("[")[0]
        table = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": list,
                 "dict": dict}
        return table.get(base), optional
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        t, _ = _annotation_type(rest[0]) if len(rest) == 1 else (None, False)
        return t, True
    if origin in (list, tuple):
        return list, False
    if ann in (int, float, str, bool, list, dict):
        return ann, False
    return None, False


def _validate_plugin_table(value, spec_kind, file, key, registry, default_name=None) -> dict:
    from merx.plugins import UnknownPlugin

    if isinstance(value, str):  # shorthand: fusion = "concat"
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError("expected a table with a plugin 'name' and its settings", file, key)
    name = value.get("name", default_name)
    if name is None:
        raise ConfigError("missing 'name' (which plugin to use)", file, key)
    try:
        plugin = registry.get(spec_kind, name)
    except UnknownPlugin as exc:
        raise ConfigError(f"{exc}{_suggest(str(name), registry.names(spec_kind))}", file, f"{key}.name") from None
    out = {"name": name}
    known = {p.name: p for p in plugin.params}
    for k, v in value.items():
        if k == "name" or (k == "p" and spec_kind.endswith("augmentations")):
            continue
        if k not in known:
            hint = _suggest(k, known) or (f"; its settings are: {', '.join(known)}" if known else
                                          "; it takes no settings")
            raise ConfigError(f"{KINDS[spec_kind].label} {name!r} has no setting {k!r}{hint}",
                              file, f"{key}.{k}")
    for pname, p in known.items():
        if pname in value:
            v = value[pname]
            t, optional = _annotation_type(p.annotation)
            if t is None and not p.required and p.default is not None:
                t = type(p.default) if type(p.default) in _TYPE_NAMES else None
                if t is tuple:
                    t = list
            if t is not None and not (optional and v is None):
                if t is list and isinstance(v, tuple):
                    v = list(v)
                v = _check_type(v, t, file, f"{key}.{pname}")
            out[pname] = v
        elif p.required:
            raise ConfigError(f"{KINDS[spec_kind].label} {name!r} needs a setting {pname!r}",
                              file, f"{key}.{pname}")
        else:
            d = p.default
            out[pname] = list(d) if isinstance(d, tuple) else d
    if spec_kind.endswith("augmentations"):
        p = value.get("p", 1.0)
        p = _check_type(p, float, file, f"{key}.p")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"probability must be between 0 and 1, got {p}", file, f"{key}.p")
        out["p"] = p
    return out


def _validate(raw: dict, schema: dict, file, prefix: str, registry) -> dict:
    out = {}
    for k in raw:
        if k not in schema:
            raise ConfigError(f"unknown key {k!r}{_suggest(k, schema)}", file, f"{prefix}{k}")
    for k, spec in schema.items():
        key = f"{prefix}{k}"
        present = k in raw
        value = raw.get(k)
        if isinstance(spec, dict):
            if present and not isinstance(value, dict):
                if key == "train.lr" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = {part: float(value) for part in LR_PARTS}  # lr = 1e-3 sets every part
                else:
                    raise ConfigError("expected a table", file, key)
            out[k] = _validate(value or {}, spec, file, f"{key}.", registry)
        elif isinstance(spec, PluginTable):
            out[k] = _validate_plugin_table(value if present else {}, spec.kind, file, key, registry, spec.default)
        elif isinstance(spec, PluginList):
            items = value if present else []
            if not isinstance(items, list):
                raise ConfigError("expected a list of tables, e.g. [[augment.audio]] blocks", file, key)
            out[k] = [_validate_plugin_table(item, spec.kind, file, f"{key}[{i}]", registry)
                      for i, item in enumerate(items)]
        else:
            if not present or value is None:
                out[k] = copy.deepcopy(spec.default)
                continue
            value = _check_type(value, spec.type, file, key)
            if spec.choices and value not in spec.choices:
                raise ConfigError(f"must be one of {', '.join(map(repr, spec.choices))}, got {value!r}"
                                  f"{_suggest(str(value), spec.choices)}", file, key)
            out[k] = value
    return out


def _check_values(cfg: dict, file) -> None:
    """Cross-field and range checks that types alone cannot express."""
    positive = ["augment.variants", "features.ref_value", "features.sample_rate", "features.n_fft", "features.hop_length", "features.n_mels",
                "features.duration", "train.batch_size", "train.epochs"]
    for key in positive:
        if get(cfg, key) <= 0:
            raise ConfigError(f"must be positive, got {get(cfg, key)}", file, key)
    for key in ["train.grad_clip", "train.weight_decay", "features.top_db", "train.early_stopping.patience",
                "train.num_workers", "features.workers"]:
        if get(cfg, key) < 0:
            raise ConfigError(f"must not be negative, got {get(cfg, key)}", file, key)
    if cfg["features"]["hop_length"] > cfg["features"]["n_fft"]:
        raise ConfigError("hop_length larger than n_fft skips samples", file, "features.hop_length")
    mode = cfg["train"]["early_stopping"]["mode"]
    monitor = cfg["train"]["early_stopping"]["monitor"]
    from merx.metrics import metric_names

    monitors = ["val_loss"] + [f"val_{m}" for m in metric_names(cfg["task"])]
    if monitor not in monitors:
        raise ConfigError(f"cannot monitor {monitor!r} in a {cfg['task']} run{_suggest(monitor, monitors)}; "
                          f"available: {', '.join(monitors)}", file, "train.early_stopping.monitor")
    if any(word in monitor for word in ("loss", "mse", "mae")) and mode == "max":
        raise ConfigError(f"{monitor!r} is better when lower; set mode = 'min'", file, "train.early_stopping.mode")
    if any(word in monitor for word in ("f1", "accuracy", "r2", "ccc")) and mode == "min":
        raise ConfigError(f"{monitor!r} is better when higher; set mode = 'max'", file,
                          "train.early_stopping.mode")


def get(cfg: dict, dotted: str):
    node = cfg
    for p in dotted.split("."):
        node = node[p]
    return node


def resolve(raw: dict, file: str | None = None, registry=None) -> dict:
    """Validate ``raw`` and fill in every default (plugin settings included)."""
    if registry is None:
        from merx.plugins import get_registry
        registry = get_registry()
    raw = dict(raw)
    raw.pop("extends", None)
    cfg = _validate(raw, SCHEMA, file, "", registry)
    cfg.pop("extends")  # already followed: the resolved config stands alone
    if cfg["name"] is None:
        cfg["name"] = Path(file).stem if file else "experiment"
    _check_values(cfg, file)
    return cfg


def load(path: str | Path, sets: list[str] | None = None, registry=None) -> dict:
    """Read, extend, override and resolve an experiment file."""
    raw = apply_sets(load_file(path), sets or [])
    return resolve(raw, str(path), registry)


# -- hashing --------------------------------------------------------------------------------

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


def to_toml(cfg: dict) -> str:
    """Render a resolved config as TOML (for ``merx config``)."""
    lines: list[str] = []

    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            # TOML has no null: an unset (None) setting is left out and its default fills it again.
            return "{ " + ", ".join(f"{k} = {scalar(x)}" for k, x in v.items() if x is not None) + " }"
        if v is None:
            return '"none"'
        return repr(v)

    def table(node: dict, path: str):
        plain = {k: v for k, v in node.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in node.items() if isinstance(v, dict)}
        if path and plain:
            lines.append(f"\n[{path}]")
        for k, v in plain.items():
            if v is None:
                lines.append(f"# {k} = (not set)")
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in nested.items():
            table(v, f"{path}.{k}" if path else k)

    table(cfg, "")
    return "\n".join(lines).lstrip() + "\n"


def schema_markdown() -> str:
    """The config reference table of the README, generated from ``SCHEMA`` so it cannot drift."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(node: dict, prefix: str):
        for k, spec in node.items():
            key = f"{prefix}{k}"
            if isinstance(spec, dict):
                walk(spec, f"{key}.")
            elif isinstance(spec, PluginTable):
                rows.append(f"| `{key}.name` | plugin ({spec.kind}) | `{spec.default}` | {spec.help} "
                            f"Other keys of `[{key}]` are the plugin's own settings (`merx list-plugins`). |")
            elif isinstance(spec, PluginList):
                rows.append(f"| `{key}` | list of plugin tables ({spec.kind}) | `[]` | {spec.help} "
                            f"Each item: `name`, `p` (probability, default 1.0) and the plugin's settings. |")
            else:
                tname = {int: "integer", float: "number", str: "string", bool: "boolean",
                         list: "list"}.get(spec.type, spec.type.__name__)
                default = "file stem" if key == "name" else json.dumps(spec.default)
                choices = f" One of: {', '.join(f'`{c}`' for c in spec.choices)}." if spec.choices else ""
                rows.append(f"| `{key}` | {tname} | `{default}` | {spec.help}{choices} |")

    walk(SCHEMA, "")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m merx.config  -> the README's config reference
    print(schema_markdown())
