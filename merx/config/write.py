"""Configs written back as TOML (``merx config``, ``merx show``, sweeps' overrides), by tomli-w."""

from __future__ import annotations

from typing import Any

from merx.errors import ConfigError


def _without_none(value: Any) -> Any:
    # TOML has no null: an unset setting is left out, and loading fills its default (None) again.
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value]
    return value


def to_toml(cfg: dict) -> str:
    """A (resolved) config as a TOML document that loads back to the same config."""
    import tomli_w

    return tomli_w.dumps(_without_none(cfg))


def toml_value(value: Any) -> str:
    """One value as a one-line TOML literal (``[32, 16]``, ``"concat"``, ``{ a = 1 }``), e.g. for ``--set``.

    tomli-w writes the scalars and keys (quoting, escapes, nan/inf); arrays and tables are kept
    on one line here, where tomli-w would spread them over several."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if value is None:
        raise ConfigError("cannot use None as a config value: TOML has no null")
    return _line({"v": value}, value).removeprefix("v = ")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"cannot use {key!r} as a config key: keys are strings")
    return _line({key: 0}, key).removesuffix(" = 0")


def _line(table: dict, what: Any) -> str:
    import tomli_w

    try:
        return tomli_w.dumps(table).rstrip("\n")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot use {what!r} in a config: {exc}") from None
