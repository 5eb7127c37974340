"""What differs between subjects besides the results: config keys, data, plugins, library
versions and code."""

from __future__ import annotations

import json
from typing import Any

from merx.compare.subjects import Subject

# -- display helpers ----------------------------------------------------------------------

_MISSING = "—"


def _display(value: Any) -> str:
    if value is _MISSING:
        return _MISSING
    if value is None:
        return "(not set)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict, bool)):
        return json.dumps(value)
    return str(value)


def _differs(values: list) -> bool:
    first = values[0]
    return any(v != first for v in values[1:])


def _joined(values) -> str:
    uniq = sorted({str(v) for v in values if v is not None})
    return " / ".join(uniq) if uniq else "-"


def config_differences(subjects: list[Subject], show_all: bool = False) -> dict:
    """``{"keys": {flat_key: [display value per subject]}, "differing": [keys]}``.

    A key a subject's config lacks (another plugin's setting) shows as "—". Within a group the
    seed differs by definition: groups show their seeds as a list instead."""
    from merx.config import flatten

    flats = []
    for s in subjects:
        flat = flatten(s.config)
        flat["seed"] = sorted(r["seed"] for r in s.runs) if s.is_group else s.config.get("seed")
        flats.append(flat)
    order = list(dict.fromkeys(k for f in flats for k in f))
    values = {k: [f.get(k, _MISSING) for f in flats] for k in order}
    differing = [k for k in order if _differs(values[k])]
    shown = order if show_all else differing
    return {"keys": {k: [_display(v) for v in values[k]] for k in shown}, "differing": differing}


def _plugins_of(run: dict) -> dict[str, str]:
    """``{kind: "lmf (lowrank-fusion 0.1.0)"}``: where each plugin came from, the distribution
    named (two runs may load the same plugin name from different distributions)."""
    from merx.plugins import provenance_label

    out: dict[str, list[str]] = {}
    for p in run.get("plugins") or []:
        out.setdefault(p["kind"], []).append(provenance_label(p))
    return {k: ", ".join(v) for k, v in out.items()}


def _test_songs(store, run: dict) -> dict[str, tuple]:
    """song_id -> (true quadrant, true V, true A) of the run's test predictions."""
    out = {}
    for p in store.get_predictions(run["id"], split="test"):
        out[p["song_id"]] = (p["true_quadrant"], _round(p["true_valence"]), _round(p["true_arousal"]))
    return out


def _round(x):
    return None if x is None else round(float(x), 5)


def provenance_differences(store, subjects: list[Subject], show_all: bool = False) -> dict:
    """Data, plugin, library and code differences: ``{section: {item: [value per subject]}}``."""
    rows: dict[str, dict[str, list[str]]] = {"data": {}, "plugins": {}, "versions": {}, "code": {}}

    def add(section, item, per_subject):
        rows[section][item] = per_subject

    songs = [[_test_songs(store, r) for r in s.runs] for s in subjects]
    add("data", "test songs", [_joined(len(x) for x in per) for per in songs])
    add("data", "test song set", [_joined(_set_id(x) for x in per) for per in songs])
    add("data", "failed songs", [_joined(len(r.get("failures") or []) for r in s.runs) for s in subjects])
    kinds = list(dict.fromkeys(k for s in subjects for r in s.runs for k in _plugins_of(r)))
    for kind in kinds:
        add("plugins", kind, [_joined(_plugins_of(r).get(kind, "-") for r in s.runs) for s in subjects])
    libs = list(dict.fromkeys(k for s in subjects for r in s.runs for k in (r.get("versions") or {})))
    for lib in libs:
        add("versions", lib, [_joined((r.get("versions") or {}).get(lib, "-") for r in s.runs) for s in subjects])
    add("code", "git commit", [_joined(r.get("git_commit") or "-" for r in s.runs) for s in subjects])
    add("code", "device", [_joined(r.get("device") or "-" for r in s.runs) for s in subjects])
    if not show_all:
        rows = {sec: {k: v for k, v in items.items() if _differs(v)} for sec, items in rows.items()}
    return {sec: items for sec, items in rows.items() if items}


def _set_id(songs: dict) -> str:
    """A short fingerprint of a test set (ids and true labels), to see at a glance whether two agree."""
    import hashlib

    text = json.dumps(sorted((k, *v) for k, v in songs.items()), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
