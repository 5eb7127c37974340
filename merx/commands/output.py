"""How commands print: one rich console setup, numbers, JSON, and the metrics table that
``run`` and ``show`` share. rich is imported inside the functions (``merx --help`` stays instant)."""

from __future__ import annotations

import json
import math

import click


def console(stderr: bool = False):
    """A rich console; no highlighting, so that numbers and paths keep the colours we give them."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def fmt(value) -> str:
    """A cell: ``-`` for nothing, four decimals for a float."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def json_out(obj) -> None:
    # JSON has no NaN: an undefined number is null, as in the results database.
    click.echo(json.dumps(_nan_to_none(obj), indent=2, default=str, allow_nan=False))


def _nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    return v


def metrics_table(title: str, metrics: dict, baselines: dict | None = None):
    """Numeric metrics of a model, one row each, with a column per baseline beside it."""
    from rich.table import Table

    baselines = baselines or {}
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("model", style="bold green", justify="right")
    for name in baselines:
        t.add_column(name, justify="right", style="dim")
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        t.add_row(key, fmt(value), *(fmt(b.get(key)) for b in baselines.values()))
    return t
