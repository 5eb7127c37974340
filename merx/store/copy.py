"""``merx db copy``: runs, with every row that hangs off them, from one results database to another.

What is copied is found in the schema, not listed here: the ``runs`` row and the rows of every
table of ``schema.metadata`` with a foreign key to ``runs.id`` (epochs, metrics, baselines,
predictions, failures, plugins, data notes, artifacts, and any table a later migration adds).
Files (checkpoints, plots) are not copied: their paths are, as recorded. A run still
``running`` is copied as it stands: its process goes on writing to the source only.

Run ids: they are kept when the destination has never handed out an id as high as the lowest
one copied (a new database: a whole results.db copied keeps run12 as run12, and back again);
otherwise every copied run gets the destination's next ids, in order, and the mapping is
reported. A destination never reuses an id, even one of a deleted run. A run already in the
destination (same experiment, config hash and start time: it was copied before) is skipped and
reported with its id there, so running the same copy twice copies nothing twice.

Both databases must have exactly this merx's schema: the source is read as it is (never
upgraded by a copy), and the destination is created when new but never upgraded, since other
merx installs share a server; an older one is refused with the command that upgrades it, a
newer one with ``SchemaTooNew``. The copy is one transaction on the destination: all of it or
nothing. The source is read in one transaction too (a consistent snapshot on PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from merx.store import schema as t
from merx.store.database import ResultsDatabase
from merx.store.engine import highest_run_id, lock_new_runs, resolve_url, runs_inserted_with_ids, sqlite_file
from merx.store.errors import RunNotFound, StoreError
from merx.store.ids import format_run_id, parse_run_id
from merx.store.migrations import MIGRATIONS, migrate

#: Rows per ``IN (...)`` list when reading child rows (SQLite allows 32,766 parameters).
_CHUNK = 500
#: What identifies one run across databases: two runs never started in the same millisecond
#: with the same config and experiment.
IDENTITY = ("experiment", "config_hash", "started_at")


@dataclass(frozen=True)
class Copied:
    """One source run: its id in the source and in the destination, and whether it was copied
    now (False: it was there already)."""

    source_id: int
    dest_id: int
    copied: bool
    status: str = "completed"  # as recorded in the source


@dataclass(frozen=True)
class CopyReport:
    """What ``copy_runs`` did: the two databases (as messages name them) and each source run."""

    source: str
    dest: str
    runs: list[Copied]

    @property
    def copied(self) -> list[Copied]:
        return [r for r in self.runs if r.copied]


def run_tables() -> list[sa.Table]:
    """Every table whose rows belong to a run (a foreign key to ``runs.id``), parents first."""
    return [table for table in t.metadata.sorted_tables
            if any(fk.column.table is t.runs for fk in table.foreign_keys)]


def _open(url: str, role: str, new_ok: bool, busy_timeout: float | None) -> ResultsDatabase:
    path = sqlite_file(sa.make_url(url))
    if path is not None and not new_ok and not path.exists():
        raise StoreError(f"the source database {path} does not exist: check the path.")
    db = ResultsDatabase(url, upgrade=False, busy_timeout=busy_timeout)
    try:
        if len(db.missing) == len(MIGRATIONS):
            if not new_ok:
                raise StoreError(f"the source database {db.location} holds no merx results (no merx schema).")
            migrate(db.engine, where=db.location)  # a new database: create this merx's schema
        elif db.missing:
            raise StoreError(
                f"the {role} database {db.location} has an older schema than this merx (it lacks the migrations "
                f"{', '.join(db.missing)}); merx db copy changes no schema. Upgrade it first by opening it with "
                f"this merx: merx runs --db {db.location!r} (older merx installs will then refuse it).")
    except BaseException:
        db.close()
        raise
    return db


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def _read(src: ResultsDatabase, run_ids: list[int] | None) -> tuple[list[dict], dict[str, list[dict]]]:
    """The runs (all when ``run_ids`` is None) and their rows in every run table, in one snapshot."""
    engine = src.engine
    if engine.dialect.name == "postgresql":  # READ COMMITTED would give each SELECT its own snapshot
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with src._faults(), engine.execution_options(merx_begin="DEFERRED").begin() as conn:
        q = sa.select(t.runs).order_by(t.runs.c.id)
        if run_ids is None:
            runs = [dict(r) for r in conn.execute(q).mappings()]
        else:
            runs = [dict(r) for chunk in _chunks(run_ids) for r in conn.execute(q.where(t.runs.c.id.in_(chunk)))
                    .mappings()]
            absent = sorted(set(run_ids) - {r["id"] for r in runs})
            if absent:
                raise RunNotFound(f"no run {', '.join(map(format_run_id, absent))} in {src.location}: nothing was "
                                  f"copied. merx runs --db {src.location!r} lists its runs.")
        ids = [r["id"] for r in runs]
        rows = {}
        for table in run_tables():
            rows[table.name] = [dict(r) for chunk in _chunks(ids)
                                for r in conn.execute(sa.select(table).where(table.c.run_id.in_(chunk))).mappings()]
    return runs, rows


def copy_runs(source: str | os.PathLike, dest: str | os.PathLike, runs: Iterable[int | str] | None = None, *,
              busy_timeout: float | None = None) -> CopyReport:
    """Copy ``runs`` (ids or ``run12``; all when None) from ``source`` to ``dest`` (paths or URLs);
    the report has one ``Copied`` per source run, in id order. See the module docstring."""
    run_ids = None if runs is None else sorted({parse_run_id(r) for r in runs})
    if resolve_url(source) == resolve_url(dest):
        raise StoreError(f"{source} and {dest} are the same database: copy between two different ones.")
    src = _open(resolve_url(source), "source", new_ok=False, busy_timeout=busy_timeout)
    try:
        found, rows = _read(src, run_ids)
    finally:
        src.close()
    dst = _open(resolve_url(dest), "destination", new_ok=True, busy_timeout=busy_timeout)
    try:
        return CopyReport(src.location, dst.location, _write(dst, found, rows))
    finally:
        dst.close()


def _write(dst: ResultsDatabase, runs: list[dict], rows: dict[str, list[dict]]) -> list[Copied]:
    report: dict[int, Copied] = {}
    with dst._transaction(write=True) as conn:
        lock_new_runs(conn)  # no other process starts a run while ids are chosen
        c = t.runs.c
        there = {tuple(r[k] for k in IDENTITY): r["id"] for r in conn.execute(
            sa.select(c.id, *(c[k] for k in IDENTITY))).mappings()}
        new = []
        for run in runs:
            existing = there.get(tuple(run[k] for k in IDENTITY))
            if existing is not None:
                report[run["id"]] = Copied(run["id"], existing, False, run["status"])
            else:
                new.append(run)
        keep_ids = bool(new) and new[0]["id"] > highest_run_id(conn)
        for run in new:
            values = run if keep_ids else {k: v for k, v in run.items() if k != "id"}
            try:
                dest_id = conn.execute(sa.insert(t.runs).values(**values)).inserted_primary_key[0]
            except sa.exc.DataError as exc:  # a value the server's column does not take (too long)
                raise StoreError(f"{format_run_id(run['id'])} cannot be copied into {dst.location}: {exc.orig} "
                                 "(nothing was copied).") from None
            report[run["id"]] = Copied(run["id"], dest_id, True, run["status"])
        if keep_ids:
            runs_inserted_with_ids(conn)
        mapping = {r.source_id: r.dest_id for r in report.values() if r.copied}
        for table in run_tables():
            batch = [{**row, "run_id": mapping[row["run_id"]]} for row in rows[table.name] if row["run_id"] in mapping]
            if batch:
                try:
                    conn.execute(sa.insert(table), batch)
                except sa.exc.DataError as exc:
                    raise StoreError(f"a row of {table.name} cannot be copied into {dst.location}: {exc.orig} "
                                     "(nothing was copied).") from None
    return [report[r["id"]] for r in runs]
