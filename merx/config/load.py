"""Experiment files -> one resolved config: read TOML, follow ``extends``, apply ``--set``, resolve.

``resolve`` validates (``merx.config.validate``) and fills every default; an error names the
file and key, or the ``--set`` option that gave the offending value.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from merx.config.schema import SCHEMA
from merx.config.validate import check_values, validate
from merx.errors import ConfigError


class RawConfig(dict):
    """An experiment's tables before validation, remembering which keys ``--set`` options gave.

    ``sets`` maps a dotted key to the option that set it (``"--set model.fusion.name=lmf"``), so
    that an error in that value blames the option rather than the experiment file. It survives
    ``copy.deepcopy``, as a sweep copies the raw tables once per cell and seed."""

    sets: dict[str, str]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sets = {}


_BOM = "\ufeff"
_EMPTY_HINT = ("write at least a name (name = \"...\") or a [model] table; "
               "experiments/quickstart.toml is a complete example")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not an experiment file", str(path)) from None
    except PermissionError:
        raise ConfigError("cannot read it: permission denied", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", str(path)) from None


def _decode(data: bytes, path: Path) -> str:
    """``data`` as TOML text, or a ConfigError saying what the file is instead.

    tomllib reads only UTF-8 and would raise a bare UnicodeDecodeError (a traceback) on
    anything else; a UTF-8 BOM, which Windows editors write, is dropped, as TOML text cannot
    hold one anyway."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError("is UTF-16 text; TOML files are UTF-8: save it as UTF-8", str(path))
    # No text file holds a NUL byte; TOML allows no other control character outside tab,
    # newline and carriage return, so undecodable bytes among them are not text in any encoding.
    controls = set(range(32)) - {9, 10, 13} | {127}
    if b"\0" in data:
        raise ConfigError("not a TOML text file: it holds binary data (a NUL byte)", str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if any(b in controls for b in data[:8192]):
            raise ConfigError("not a TOML text file: it holds binary data", str(path)) from None
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {column}; "
                          "TOML files are UTF-8: save it as UTF-8", str(path)) from None
    return text.removeprefix(_BOM)


def _read_toml(path: Path) -> dict:
    text = _decode(_read_bytes(path), path)
    try:
        return tomllib.loads(text)
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
    """Read an experiment file, following ``extends`` chains (paths relative to each file).

    The file itself must hold something: an empty one would silently train every default for
    50 epochs. A file it extends may be empty (a placeholder base does no harm)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"extends forms a cycle: {chain}", str(path), "extends")
    raw = _read_toml(path)
    if not raw and not _seen:
        raise ConfigError(f"the file is empty: nothing to run; {_EMPTY_HINT}", str(path))
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError("must be a file name (string)", str(path), "extends")
    if not parent.strip():
        # path.parent / "" is this file's folder: say what is wrong, not "is a folder".
        raise ConfigError("is empty: name the file to start from, or remove the line", str(path), "extends")
    parent_path = (path.parent / parent)
    if not parent_path.exists():
        raise ConfigError(f"extends {parent!r}, which does not exist (looked for {parent_path})",
                          str(path), "extends")
    if parent_path.is_dir():
        raise ConfigError(f"{parent!r} is a folder, not an experiment file", str(path), "extends")
    return _merge(load_file(parent_path, (*_seen, resolved)), raw)


def key_parts(key: str) -> list[str]:
    """``"train.lr.audio"`` -> ``["train", "lr", "audio"]``; a ConfigError (no location: the
    caller knows whether an option or a file gave the key) for an empty key or part."""
    if not key.strip():
        raise ConfigError("no key before '=': expected KEY=VALUE, e.g. train.epochs=5")
    parts = [p.strip() for p in key.split(".")]
    if "" in parts:
        raise ConfigError(f"the key {key.strip()!r} has an empty part: write dotted keys as train.lr.audio")
    return parts


def parse_set(item: str) -> tuple[str, Any]:
    """``section.key=value``; the value is read as TOML (numbers, booleans, lists), else a string.

    A malformed item is a ConfigError naming the option (``--set train..epochs=2: ...``)."""
    where = f"--set {item.strip()}"
    if "=" not in item:
        raise ConfigError("expected KEY=VALUE, e.g. train.epochs=5", where)
    key, value = item.split("=", 1)
    try:
        key = ".".join(key_parts(key))
    except ConfigError as exc:
        raise ConfigError(exc.message, where) from None
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def apply_sets(raw: dict, sets: list[str], origin: str | None = "--set") -> RawConfig:
    """``raw`` with each ``section.key=value`` of ``sets`` applied in turn.

    ``origin`` is how errors name such a value (``"--set"``: the option as typed); None means
    the values count as the experiment file's own (a sweep's cells, written in that file)."""
    out = RawConfig(copy.deepcopy(raw))
    out.sets = dict(getattr(raw, "sets", {}))
    for item in sets:
        key, value = parse_set(item)
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                error = f"{p!r} is a value, not a table"
                raise ConfigError(error, f"{origin} {item.strip()}") if origin else ConfigError(error, key=key)
            node = nxt
        if parts[-1] == "name" and isinstance(node.get("name"), str) and node["name"] != value:
            # Switching plugin on the command line: the old plugin's settings do not carry over.
            for k in [k for k in node if k != "name"]:
                del node[k]
        node[parts[-1]] = value
        # The last word on a key (or on a table above it) is this option's.
        for earlier in [k for k in out.sets if k == key or k.startswith(f"{key}.")]:
            del out.sets[earlier]
        if origin is not None:
            out.sets[key] = f"{origin} {item.strip()}"
    return out


def _set_that_gave(key: str | None, sets: dict[str, str]) -> str | None:
    """The dotted key of ``sets`` whose value the error at ``key`` is about, if any."""
    if not key:
        return None
    for given in sets:
        # The option set this key, a table holding it, or a key inside the unknown table it names.
        if key == given or key.startswith((f"{given}.", f"{given}[")) or given.startswith(f"{key}."):
            return given
    return None


def _blame_option(exc: ConfigError, sets: dict[str, str]) -> ConfigError:
    given = _set_that_gave(exc.key, sets)
    if given is None:
        return exc
    # "--set model.fusion.name=lmf: unknown fusion 'lmf'": the key is already in the option.
    out = ConfigError(exc.message, sets[given], None if exc.key == given else exc.key, hint=exc.hint)
    out.key = exc.key
    return out


def resolve(raw: dict, file: str | None = None, registry=None) -> dict:
    """Validate ``raw`` and fill in every default (plugin settings included).

    An error names ``file`` and the key, or the ``--set`` option (``apply_sets``) that gave the
    value; the original error (e.g. ``UnknownPlugin``) stays its ``__cause__``."""
    if registry is None:
        from merx.plugins import get_registry
        registry = get_registry()
    sets = dict(getattr(raw, "sets", {}))
    raw = dict(raw)
    raw.pop("extends", None)
    try:
        cfg = validate(raw, SCHEMA, file, "", registry)
        cfg.pop("extends")  # already followed: the resolved config stands alone
        if cfg["name"] is None:
            cfg["name"] = Path(file).stem if file else "experiment"
        check_values(cfg, file)
    except ConfigError as exc:
        blamed = _blame_option(exc, sets)
        if blamed is exc:
            raise
        raise blamed from exc.__cause__
    return cfg


def load(path: str | Path, sets: list[str] | None = None, registry=None) -> dict:
    """Read, extend, override and resolve an experiment file."""
    raw = apply_sets(load_file(path), sets or [])
    return resolve(raw, str(path), registry)


def get(cfg: dict, dotted: str):
    """``get(cfg, "train.lr.text")`` -> ``cfg["train"]["lr"]["text"]``."""
    node = cfg
    for p in dotted.split("."):
        node = node[p]
    return node
