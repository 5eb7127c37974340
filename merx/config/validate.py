"""Validation of an experiment's tables against ``SCHEMA`` and the plugins' signatures.

Every problem is a ``ConfigError`` naming the file and the dotted key, with a "did you mean"
where a close name exists. Plugin tables are checked against the factory's parameters, so a
plugin's settings need no schema of their own.
"""

from __future__ import annotations

import copy
import difflib
import json
import types
import typing

from merx.config.schema import AUGMENT_P, LR_PARTS, PLUGIN_SETTINGS, F, PluginList, PluginTable, finite_problem
from merx.errors import ConfigError, PluginError, UnknownPlugin
from merx.hookspecs import KINDS


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, [o for o in options if isinstance(o, str)], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice_text(choice) -> str:
    """A choice as the TOML file writes it: 'auto', true, false."""
    return json.dumps(choice) if isinstance(choice, bool) else repr(choice)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a table"}


def _check_type(value, expected, file, key):
    """Check (and gently coerce: int -> float) one value; returns the value to store."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"expected an integer, got {value!r}", file, key)
    if not isinstance(value, expected):
        words = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in (expected if isinstance(expected, tuple)
                                                                     else (expected,)))
        raise ConfigError(f"expected {words}, got {value!r}", file, key)
    problem = finite_problem(value)
    if problem:
        raise ConfigError(problem, file, key)
    return value


def _check_setting(spec: F, value, file, key, table: dict | None = None, given=()):
    """``value`` (already of ``spec.type``) checked against ``spec``'s item type and range; returns it.

    ``table`` holds the settings a bound may name (``le="n_fft"``); ``given`` the names the
    user wrote, so that a bound broken by a setting left at its default blames the one written."""
    items = value if spec.items is not None else [value]
    if spec.items is not None:
        value = items = [_check_type(v, spec.items, file, f"{key}[{i}]") for i, v in enumerate(items)]
    for i, v in enumerate(items):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        problem = spec.range_problem(v, table)
        if problem is None:
            continue
        message, other, as_other = problem
        name = key.rpartition(".")[2]
        if other is not None and name not in given and other in given:
            raise ConfigError(as_other.format(key=name), file, f"{key.rpartition('.')[0]}.{other}".lstrip("."))
        raise ConfigError(message, file, f"{key}[{i}]" if spec.items is not None else key)
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
    if origin in (typing.Union, getattr(types, "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        t, _ = _annotation_type(rest[0]) if len(rest) == 1 else (None, False)
        return t, True
    if origin in (list, tuple):
        return list, False
    if ann in (int, float, str, bool, list, dict):
        return ann, False
    return None, False


def _validate_plugin_table(value, spec_kind, file, key, registry, default_name=None) -> dict:
    if isinstance(value, str):  # shorthand: fusion = "concat"
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError("expected a table with a plugin 'name' and its settings", file, key)
    name = value.get("name", default_name)
    if name is None:
        raise ConfigError("missing 'name' (which plugin to use)", file, key)
    if not isinstance(name, str):
        raise ConfigError(f"expected a plugin name (a string), got {name!r}", file, f"{key}.name")
    try:
        plugin = registry.get(spec_kind, name)
    except PluginError as exc:  # unknown, or a name several plugins registered
        close = _suggest(str(name), registry.names(spec_kind)) if isinstance(exc, UnknownPlugin) else ""
        # Chained: the CLI reads the cause (e.g. to point at earlier runs that used that plugin).
        raise ConfigError(f"{exc}{close}", file, f"{key}.name", hint=exc.hint) from exc
    out = {"name": name}
    known = {p.name: p for p in plugin.params}
    for k in value:
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
            if pname in PLUGIN_SETTINGS and v is not None:
                v = _check_setting(PLUGIN_SETTINGS[pname], v, file, f"{key}.{pname}")
            out[pname] = v
        elif p.required:
            raise ConfigError(f"{KINDS[spec_kind].label} {name!r} needs a setting {pname!r}",
                              file, f"{key}.{pname}")
        else:
            d = p.default
            out[pname] = list(d) if isinstance(d, tuple) else d
    if spec_kind.endswith("augmentations"):
        p = _check_type(value.get("p", AUGMENT_P.default), float, file, f"{key}.p")
        out["p"] = _check_setting(AUGMENT_P, p, file, f"{key}.p")
    return out


def validate(raw: dict, schema: dict, file, prefix: str, registry) -> dict:
    """``raw`` checked against ``schema`` (a table of it), every default filled in."""
    out = {}
    for k in raw:
        if k not in schema:
            raise ConfigError(f"unknown key {k!r}{_suggest(k, schema)}", file, f"{prefix}{k}")
    for k, spec in schema.items():
        key = f"{prefix}{k}"
        present = k in raw
        value = raw.get(k)
        if isinstance(spec, dict):
            scalar = None
            if present and not isinstance(value, dict):
                if key == "train.lr" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    scalar, value = value, {part: float(value) for part in LR_PARTS}  # lr = 1e-3 sets every part
                else:
                    raise ConfigError("expected a table", file, key)
            try:
                out[k] = validate(value or {}, spec, file, f"{key}.", registry)
            except ConfigError as exc:
                if scalar is None:
                    raise
                raise ConfigError(exc.message, file, key) from None  # the file wrote lr, not lr.audio
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
                raise ConfigError(f"must be one of {', '.join(map(_choice_text, spec.choices))}, got {value!r}"
                                  f"{_suggest(str(value), spec.choices)}", file, key)
            out[k] = value
    # Ranges once the whole table is in: a bound may name another setting of it (hop_length <= n_fft).
    given = {k for k in raw if raw[k] is not None}
    for k, spec in schema.items():
        if isinstance(spec, F) and (spec.bounds() or spec.items is not None):
            out[k] = _check_setting(spec, out[k], file, f"{prefix}{k}", out, given)
    return out


def check_values(cfg: dict, file) -> None:
    """Checks across tables, which the schema's per-setting ranges (checked in ``validate``) cannot state."""
    _check_early_stopping(cfg["train"]["early_stopping"], cfg["task"], file)


def _check_early_stopping(es: dict, task: str, file) -> None:
    # The metric registry is the one place that knows what can be watched and which way is better.
    from merx.metrics import mode_for, monitors

    monitor, mode = es["monitor"], es["mode"]
    available = monitors(task)
    if monitor not in available:
        raise ConfigError(f"cannot monitor {monitor!r} in a {task} run{_suggest(monitor, available)}; "
                          f"available: {', '.join(available)}", file, "train.early_stopping.monitor")
    expected = mode_for(monitor)
    if expected is not None and mode != expected:
        better = "higher" if expected == "max" else "lower"
        raise ConfigError(f"{monitor!r} is better when {better}; set mode = {expected!r}", file,
                          "train.early_stopping.mode")

