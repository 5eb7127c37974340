"""How the values callers hand ``RunStore`` become rows, and how rows come back as dicts.

Metric values become floats, NaN and infinities NULL (``schema.py``: NULL is "no number" for
every reader); structures become JSON text with NaN as null; rows given as dicts (or objects
with ``to_dict``) are checked for fields the table does not have, so a typo fails loudly
instead of being dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from merx.store.ids import format_run_id

PREDICTION_KEYS = ("song_id", "split", "true_valence", "true_arousal", "pred_valence", "pred_arousal",
                   "true_quadrant", "pred_quadrant", "probs", "probs_json")
PREDICTION_FLOATS = ("true_valence", "true_arousal", "pred_valence", "pred_arousal")
FAILURE_KEYS = ("song_id", "stage", "reason", "path")
PLUGIN_KEYS = ("kind", "name", "origin", "source", "version")
DATA_NOTE_KEYS = ("song_id", "kind", "detail")
#: The decoded name of each JSON column of ``runs``.
JSON_FIELDS = {"config": "config_json", "versions": "versions_json", "tags": "tags_json"}


def number(value: Any, what: str) -> float | None:
    """A metric value as a float; NaN and infinities become None (stored as NULL)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what}: expected a number, got the string {value!r}")
    try:
        x = float(value)  # also numpy scalars and one-element tensors
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a number, got {value!r}") from None
    return x if math.isfinite(x) else None


def metric_rows(base: Mapping[str, Any], metrics: Mapping[str, Any], what: str) -> list[dict]:
    """One row per metric: ``base`` plus ``metric`` and ``value``; ``what`` names them in errors."""
    return [{**base, "metric": str(name), "value": number(value, f"{what} metric {name!r}")}
            for name, value in metrics.items()]


def to_json(value: Any) -> str | None:
    if value is None:
        return None
    # NaN is not JSON: write null, as the REAL columns do.
    return json.dumps(_finite_tree(value), default=str, allow_nan=False)


def _finite_tree(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_tree(v) for v in value]
    return value


def checked(rows: Iterable[Any], allowed: Iterable[str], what: str) -> Iterator[dict]:
    """Each row as a dict, after checking it has no field outside ``allowed``."""
    allowed = tuple(allowed)
    for row in rows:
        row = row.to_dict() if hasattr(row, "to_dict") else dict(row)
        extra = set(row) - set(allowed)
        if extra:
            raise ValueError(f"{what}: unknown field(s) {', '.join(sorted(map(str, extra)))}; "
                             f"the fields are {', '.join(allowed)}")
        yield row


def decode_run(row: Mapping) -> dict:
    """A ``runs`` row as users see it: JSON columns decoded under their plain names, plus ``name``."""
    out = {k: v for k, v in row.items() if not k.endswith("_json")}
    for field, column in JSON_FIELDS.items():
        raw = row[column]
        out[field] = json.loads(raw) if raw is not None else ({} if field != "tags" else [])
    out["name"] = format_run_id(row["id"])
    return out


def nested(rows: Iterable[Mapping], key: str) -> dict[Any, dict[str, float | None]]:
    """Metric rows as ``{row[key]: {metric: value}}``, in the order of ``rows``."""
    out: dict[Any, dict[str, float | None]] = {}
    for r in rows:
        out.setdefault(r[key], {})[r["metric"]] = r["value"]
    return out
