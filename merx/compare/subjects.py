"""Subjects of a comparison, and how what the user typed becomes them.

A subject is one run (``run12``) or a group of runs that differ only by their seed (same
``group_hash``). :func:`resolve_subjects` reads the targets: run ids, groups (``name@3f2a``,
``@3f2a``), experiment names and ``tag:NAME``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from merx.errors import CompareError
from merx.store import RunNotFound, format_run_id, parse_run_id

#: Text that cannot be a run id, a group or an experiment: ``@3f2a`` needs this many hex digits.
MIN_HASH_PREFIX = 4
_RUN_TOKEN = re.compile(r"(?:run)?\d+", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-f]+")


@dataclass
class Subject:
    """One side of a comparison: a run, or a group of runs that differ only by seed."""

    label: str
    runs: list[dict]  # RunStore.get_run dicts, oldest first
    group_hash: str
    origin: str = ""  # what the user typed

    @property
    def is_group(self) -> bool:
        return len(self.runs) > 1

    @property
    def config(self) -> dict:
        return self.runs[0]["config"]

    @property
    def ids(self) -> list[int]:
        return [r["id"] for r in self.runs]


def group_label(experiment: str, group_hash: str) -> str:
    """How a group is named: ``experiment@hash8``."""
    return f"{experiment}@{group_hash[:8]}"


def subjects_from_runs(runs: list[dict], origin: str = "") -> list[Subject]:
    """Group run dicts by ``group_hash`` (first appearance first); a group of one is labelled as its run."""
    by_group: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r["id"]):
        by_group.setdefault(r["group_hash"], []).append(r)
    out = []
    for gh, members in by_group.items():
        label = format_run_id(members[0]["id"]) if len(members) == 1 else group_label(members[0]["experiment"], gh)
        out.append(Subject(label, members, gh, origin))
    return out


def resolve_subjects(store, tokens: list[str]) -> list[Subject]:
    """Turn what the user typed into subjects.

    Each token is a run id (``run12``, ``12``), a group (``name@3f2a9c1d``, ``@3f2a``: a
    ``group_hash`` prefix, as ``merx runs`` and ``merx compare`` show it), an experiment name
    (its completed runs, one subject per group), or ``tag:NAME`` (completed runs with that tag,
    one subject per group). Unknown tokens raise ``CompareError`` naming what exists."""
    subjects: list[Subject] = []
    seen: set[tuple] = set()
    for token in tokens:
        for subject in _resolve_one(store, str(token).strip()):
            key = tuple(subject.ids)
            if key not in seen:
                seen.add(key)
                subjects.append(subject)
    return subjects


def _completed(store, **filters) -> list[dict]:
    rows = store.list_runs(status="completed", limit=None, **filters)
    return [store.get_run(r["id"]) for r in sorted(rows, key=lambda r: r["id"])]


def _resolve_one(store, token: str) -> list[Subject]:
    if _RUN_TOKEN.fullmatch(token):
        try:
            run = store.get_run(token)
        except RunNotFound as exc:
            raise CompareError(str(exc)) from None
        return [Subject(format_run_id(parse_run_id(token)), [run], run["group_hash"], token)]
    if token.lower().startswith("tag:"):
        tag = token[4:]
        runs = _completed(store, tag=tag)
        if not runs:
            raise CompareError(f"no completed run is tagged {tag!r} in {store.location} "
                               "(merx tag RUN TAG adds one; merx runs --tag TAG lists them)")
        return subjects_from_runs(runs, token)
    if "@" in token:
        experiment, _, prefix = token.partition("@")
        return [_group(store, prefix.lower(), experiment or None, token)]
    if token in store.experiments():
        runs = _completed(store, experiment=token)
        if not runs:
            raise CompareError(f"experiment {token!r} has no completed run yet (merx runs --experiment {token})")
        return subjects_from_runs(runs, token)
    if len(token) >= 6 and _HEX.fullmatch(token.lower()) and store.group_hashes(token.lower()):
        return [_group(store, token.lower(), None, token)]
    raise CompareError(_unknown(store, token))


def _group(store, prefix: str, experiment: str | None, token: str) -> Subject:
    if len(prefix) < MIN_HASH_PREFIX or not _HEX.fullmatch(prefix):
        raise CompareError(f"{token!r}: after '@' give at least {MIN_HASH_PREFIX} hex digits of a group hash "
                           "(merx runs shows each run's group)")
    hashes = store.group_hashes(prefix)
    if experiment is not None:
        hashes = [h for h in hashes if store.list_runs(experiment=experiment, group_hash=h, limit=1)]
    if not hashes:
        raise CompareError(f"no group {token!r} in {store.location}" + _listing(store))
    if len(hashes) > 1:
        raise CompareError(f"{token!r} matches {len(hashes)} groups ({', '.join(h[:12] for h in hashes)}): "
                           "give more digits of the hash")
    runs = _completed(store, group_hash=hashes[0], experiment=experiment)
    if not runs:
        raise CompareError(f"group {token!r} has no completed run")
    return Subject(group_label(runs[0]["experiment"], hashes[0]) if len(runs) > 1 else format_run_id(runs[0]["id"]),
                   runs, hashes[0], token)


def _listing(store) -> str:
    names = store.experiments()
    latest = [format_run_id(r["id"]) for r in store.list_runs(limit=5)]
    if not names:
        return f"; {store.location} holds no runs yet (--db PATH or MERX_DB selects another database)."
    return (f"; the experiments are {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
            f" and the latest runs {', '.join(latest)}.")


def _unknown(store, token: str) -> str:
    close = difflib.get_close_matches(token, store.experiments(), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{token!r} is not a run id (run12), a group (name@3f2a9c1d), an experiment or a tag:NAME "
            f"in {store.location}{hint}" + _listing(store))
