"""Reading an experiment file for a command, and the hint a command adds when the file (or a
``--set``) names a plugin this installation lacks but earlier runs in the results database used."""

from __future__ import annotations

import re

from merx.errors import ConfigError, UnknownPlugin

#: How many run ids a hint names before it says "and N more".
_HINT_RUNS = 5


def load_plan(file, sets=(), seeds=None, db=None):
    """The runs of ``file``: a plain file is one cell and one seed; ``[sweep]``/seeds give more.

    An unknown plugin gets a hint naming the runs in ``db`` (default: ``$MERX_DB`` or
    ``results.db``, when it exists) that used a plugin of that name, and how to install it."""
    from merx.sweep import load_plan as _load_plan

    try:
        return _load_plan(file, list(sets), seeds)
    except ConfigError as exc:
        missing = unknown_plugin(exc)
        hint = missing and plugin_hint(db, *missing)
        if hint:
            exc.hint = f"{exc.hint}; {hint}" if exc.hint else hint
        raise


def load_config(file, sets=(), db=None) -> dict:
    """The resolved config of ``file`` (for a sweep, its first cell and seed)."""
    return load_plan(file, sets, db=db).cells[0].configs[0]


def unknown_plugin(exc: BaseException) -> tuple[str, str] | None:
    """``(kind, name)`` when ``exc`` is (or was raised while handling) an unknown plugin."""
    from merx.hookspecs import KINDS

    seen = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, UnknownPlugin):
            return link.kind, link.name
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    # The config layer may re-raise without chaining; its message still says "unknown <kind> 'name'".
    labels = "|".join(re.escape(k.label) for k in KINDS.values())
    m = re.search(rf"unknown ({labels}) '([^']+)'", str(exc))
    if m is None:
        return None
    kind = next(k.name for k in KINDS.values() if k.label == m.group(1))
    return kind, m.group(2)


def plugin_hint(db, kind: str, name: str) -> str | None:
    """Which runs in the results database used ``kind`` plugin ``name``, and from where.

    None when no database exists yet or none of its runs used one: opening the store here must
    not create a database as a side effect of a typo."""
    from pathlib import Path

    from merx.hookspecs import KINDS
    from merx.store import RunStore, format_run_id, resolve_url

    plain = name.rpartition(":")[2]  # a qualified name "lowrank-fusion:lmf" is looked up as "lmf"
    url = resolve_url(db)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return None
    try:
        with_store = RunStore(url)
        try:
            uses = with_store.plugin_uses(kind, plain)
        finally:
            with_store.close()
    except Exception:  # a hint is a courtesy: it must never replace the error the user needs to see
        return None
    if not uses:
        return None
    by_source: dict[tuple, list[int]] = {}
    for use in uses:
        by_source.setdefault((use["origin"], use["source"], use["version"]), []).append(use["run_id"])
    label = KINDS[kind].label if kind in KINDS else kind
    parts = []
    for (origin, source, version), ids in by_source.items():
        shown = ", ".join(format_run_id(i) for i in ids[:_HINT_RUNS])
        more = f" and {len(ids) - _HINT_RUNS} more" if len(ids) > _HINT_RUNS else ""
        who = f"runs {shown}{more}" if len(ids) > 1 else shown
        if origin == "distribution":
            where = f"{source} {version}" if version else source
            fix = f"pip install {source}=={version}" if version else f"pip install {source}"
        elif origin == "local file":
            where, fix = f"the local file {source}", "copy it into ./plugins (or pass --plugins-dir)"
        else:
            where, fix = f"merx's built-ins ({source})", "install the merx version those runs recorded"
        parts.append(f"{who} used {label} {plain!r} from {where}: {fix}")
    return "; ".join(parts)
