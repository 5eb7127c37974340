"""``RunStore``: what merx records about each run, written as it happens and read back later.

The database is ``results.db`` in the working directory unless ``--db`` / ``MERX_DB`` names
another file or an SQLAlchemy URL (a server); its folder must exist (a mistyped path is
refused, not created). SQLite is configured for several processes writing at once
(field-notes.md, "SQLite through SQLAlchemy"): WAL journal, a busy timeout (30 s, or
``$MERX_DB_BUSY_TIMEOUT`` seconds), pysqlite's own transaction handling off and ``BEGIN
IMMEDIATE`` at the start of every write transaction, so that a read-then-write transaction waits
for the lock instead of failing or losing an update. Reads begin ``DEFERRED``: under WAL they
never wait for a writer, and opening a database whose schema is up to date is a read, so the
commands that only read never wait for a lock held elsewhere.

Every write method is one transaction: ``add_epoch`` commits each epoch, so a run whose process
dies keeps every epoch it finished (its status stays ``running``). A lock held elsewhere for
longer than the busy timeout does not fail a run's epoch: it waits in memory and is written
with the next one, and ``finish_run`` keeps trying for minutes. Every failure of the database
itself (locked, read-only, damaged, full) is raised as one ``StoreError`` subclass naming the
file and the fix (``merx.store.faults``), never as SQLAlchemy's exception.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from merx.store import faults
from merx.store import schema as t
from merx.store.errors import InvalidRunId, RunNotFound, StoreError, StoreLocked
from merx.store.migrations import migrate, migrations_table

DEFAULT_DB = "results.db"
ENV_VAR = "MERX_DB"
#: How long a write waits for another process's write transaction before giving up
#: (``$MERX_DB_BUSY_TIMEOUT`` seconds overrides it).
BUSY_TIMEOUT_S = 30.0
ENV_BUSY_TIMEOUT = faults.ENV_BUSY_TIMEOUT
#: How long ``finish_run`` keeps retrying a locked database (``$MERX_DB_FINAL_WAIT`` seconds).
FINAL_WAIT_S = 300.0
ENV_FINAL_WAIT = "MERX_DB_FINAL_WAIT"
#: Longest pause between two attempts to write epochs that met a lock.
MAX_BACKOFF_S = 60.0
STATUSES = ("running", "completed", "failed", "interrupted")
FINAL_STATUSES = STATUSES[1:]

_PREDICTION_KEYS = ("song_id", "split", "true_valence", "true_arousal", "pred_valence", "pred_arousal",
                    "true_quadrant", "pred_quadrant", "probs", "probs_json")
_PREDICTION_FLOATS = ("true_valence", "true_arousal", "pred_valence", "pred_arousal")
_FAILURE_KEYS = ("song_id", "stage", "reason", "path")
_PLUGIN_KEYS = ("kind", "name", "origin", "source", "version")
_JSON_FIELDS = {"config": "config_json", "versions": "versions_json", "tags": "tags_json"}
_RUN_ID = re.compile(r"(?:run)?\s*(\d+)", re.IGNORECASE)
log = logging.getLogger(__name__)


# -- helpers ----------------------------------------------------------------------------------

def parse_run_id(text: str | int) -> int:
    """``"run12"``, ``"12"`` or ``12`` -> ``12``; anything else raises ``InvalidRunId``."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text > 0:
            return text
    else:
        m = _RUN_ID.fullmatch(str(text).strip())
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    raise InvalidRunId(f"{text!r} is not a run id: write it as run12 or 12 (a positive number).")


def format_run_id(run_id: int) -> str:
    """``12`` -> ``"run12"``, the way users see run ids."""
    return f"run{run_id}"


def resolve_url(url_or_path: str | os.PathLike | None = None) -> str:
    """The database URL: the argument, else ``$MERX_DB``, else ``results.db`` in the working directory.

    A value with ``://`` is an SQLAlchemy URL; anything else is a file path, made absolute (so a
    later ``chdir`` cannot move the database) and turned into ``sqlite:///<path>``."""
    value = os.fspath(url_or_path) if url_or_path else (os.environ.get(ENV_VAR) or DEFAULT_DB)
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def sqlite_file(url: sa.URL) -> Path | None:
    """The database file of an SQLite URL; None for a server, ``:memory:`` or a ``file:`` URI."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return None if url.database.startswith("file:") else Path(url.database)


def create_store_engine(url: str, busy_timeout: float | None = None) -> sa.Engine:
    """An engine for ``url``; SQLite (pysqlite) gets the multi-process configuration.

    ``busy_timeout``: seconds a write waits for another process's lock (default
    ``$MERX_DB_BUSY_TIMEOUT`` or 30). The folder of an SQLite file must exist."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"{url!r} is neither a database file path nor an SQLAlchemy URL "
                         "(e.g. sqlite:///results.db, postgresql://user@host/merx).") from None
    if parsed.get_backend_name() != "sqlite" or parsed.get_driver_name() != "pysqlite":
        return sa.create_engine(parsed)
    path = sqlite_file(parsed)
    if path is not None and not path.parent.is_dir():
        # SQLite would fail with "unable to open database file"; creating the folders instead
        # would hide a typo in --db behind a new, empty database.
        folder = path.parent.absolute()
        raise StoreError(f"cannot create the results database {path.absolute()}: its folder {folder} does not "
                         "exist. Check the path given to --db (or MERX_DB), or create the folder: "
                         f"mkdir -p {shlex.quote(str(folder))}")
    if busy_timeout is None:
        busy_timeout = faults.env_seconds(ENV_BUSY_TIMEOUT, BUSY_TIMEOUT_S)
    # pysqlite's timeout is SQLite's busy timeout: a locked database is retried this long.
    engine = sa.create_engine(parsed, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn, _record):
        # pysqlite would otherwise issue its own deferred BEGIN (only before DML) and COMMIT
        # before DDL; SQLAlchemy's "begin" hook below takes over.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers and one writer proceed together
        # In WAL mode NORMAL survives any crash of the process (not a power cut mid-commit)
        # and spares an fsync per epoch.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # IMMEDIATE takes the write lock up front (waiting up to the busy timeout); a deferred
        # transaction that reads then writes fails at once with "database is locked".
        conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("merx_begin", "IMMEDIATE"))

    return engine


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _number(value: Any, what: str) -> float | None:
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


_RELATIVE = re.compile(r"(\d+)\s*([mhdw])", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def time_bound(when: str | datetime | Any, end: bool = False) -> str:
    """A ``started_at`` bound as UTC ISO text from ``2025-03-01`` (with ``end``: the next day, so
    that the day itself is included), ``2025-03-01T14:00`` (UTC unless it names its zone), a
    ``datetime``/``date``, or ``7d`` / ``12h`` / ``30m`` / ``2w`` ago. Anything else: ``StoreError``."""
    from datetime import date, timedelta

    if isinstance(when, datetime):
        moment = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return _iso(moment.astimezone(timezone.utc))
    if isinstance(when, date):
        day = when + timedelta(days=1) if end else when
        return day.isoformat()
    text = str(when).strip()
    m = _RELATIVE.fullmatch(text)
    if m:
        return _iso(_now() - timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))}))
    try:
        if len(text) == 10:
            return time_bound(date.fromisoformat(text), end)
        return time_bound(datetime.fromisoformat(text), end)
    except ValueError:
        raise StoreError(f"{text!r} is not a date: write 2025-03-01, 2025-03-01T14:00, or 7d / 12h / 30m / 2w "
                         "for that long ago") from None


def _json(value: Any) -> str | None:
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


def _check_keys(row: Mapping, allowed: Iterable[str], what: str) -> None:
    extra = set(row) - set(allowed)
    if extra:
        raise ValueError(f"{what}: unknown field(s) {', '.join(sorted(map(str, extra)))}; "
                         f"the fields are {', '.join(allowed)}")


def _as_dict(row: Any) -> dict:
    return row.to_dict() if hasattr(row, "to_dict") else dict(row)


def _decode_run(row: Mapping) -> dict:
    out = {k: v for k, v in row.items() if not k.endswith("_json")}
    for field, column in _JSON_FIELDS.items():
        raw = row[column]
        out[field] = json.loads(raw) if raw is not None else ({} if field != "tags" else [])
    out["name"] = format_run_id(row["id"])
    return out


# -- the store --------------------------------------------------------------------------------

class RunStore:
    """The results database: runs, their epochs, metrics, baselines, predictions and failures.

    ``RunStore()`` opens ``$MERX_DB`` or ``./results.db``; ``RunStore("other.db")`` or
    ``RunStore("postgresql://...")`` another one. Opening creates the file if needed (in an
    existing folder) and upgrades an older schema (``upgraded`` lists the migrations applied);
    opening an up-to-date database only reads. ``write=True`` also runs ``check_writable``: a
    run opens its store that way, so that it fails before any work rather than after training.
    ``busy_timeout`` / ``final_wait`` (seconds) override ``$MERX_DB_BUSY_TIMEOUT`` /
    ``$MERX_DB_FINAL_WAIT``. Create one store per process (an engine must not cross a fork)."""

    parse_run_id = staticmethod(parse_run_id)

    def __init__(self, url_or_path: str | os.PathLike | None = None, *, write: bool = False,
                 busy_timeout: float | None = None, final_wait: float | None = None):
        self.url = resolve_url(url_or_path)
        self.busy_timeout = (faults.env_seconds(ENV_BUSY_TIMEOUT, BUSY_TIMEOUT_S)
                             if busy_timeout is None else float(busy_timeout))
        self.final_wait = faults.env_seconds(ENV_FINAL_WAIT, FINAL_WAIT_S) if final_wait is None else float(final_wait)
        self.engine = create_store_engine(self.url, self.busy_timeout)
        self._reader = self.engine.execution_options(merx_begin="DEFERRED")
        self._path = sqlite_file(self.engine.url)
        self._pending: list[tuple[int, int, list[dict]]] = []  # epochs that met a lock, oldest first
        self._backoff = 0.0
        self._retry_at = 0.0
        try:
            try:
                with self._faults():
                    self.upgraded = migrate(self.engine, where=self.location)
            except sa.exc.DBAPIError as exc:
                raise StoreError(f"cannot open the results database {self.location}: {exc.orig}. "
                                 "Choose another with --db PATH (or MERX_DB).") from exc
            if write:
                self.check_writable()
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def location(self) -> str:
        """The database file for SQLite, else the URL without its password: for messages."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database:
            return url.database
        return url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"RunStore({self.location!r})"

    def close(self) -> None:
        """Release the database connections."""
        if self._pending:
            log.warning("%d epoch(s) of %s were never written to %s: the database stayed locked",
                        len(self._pending), ", ".join(sorted({format_run_id(r) for r, _, _ in self._pending})),
                        self.location)
        self.engine.dispose()

    def check_writable(self) -> None:
        """Raise the ``StoreError`` a run would meet later, now: a database that is read-only
        (file, folder or mount), damaged (``PRAGMA quick_check``, which reads every page), lacking a
        table, or locked past the busy timeout. Writes nothing: the probe row is rolled back."""
        with self._transaction() as conn:
            missing = sorted(set(t.metadata.tables) - set(sa.inspect(conn).get_table_names()))
            if missing:
                raise faults.lacking(self.location, "table(s) " + ", ".join(missing))
            if self._path is not None:
                verdict = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar()
                if verdict != "ok":
                    raise faults.damaged(self.location, self._path, f"quick_check: {verdict}")
        with self._faults(), self.engine.connect() as conn, conn.begin() as trans:
            # A read-only file opens without complaint and even takes the write lock; only a
            # write is refused.
            conn.execute(sa.insert(migrations_table).values(name="merx write check", applied_at=_iso(_now())))
            trans.rollback()

    @property
    def pending_epochs(self) -> list[tuple[int, int]]:
        """``(run_id, epoch)`` of the epochs waiting in memory for a lock held elsewhere, oldest first."""
        return [(run_id, epoch) for run_id, epoch, _ in self._pending]

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Turn a failure of the database into the ``StoreError`` that names it; once, here."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            error = faults.translate(exc, self.location, self._path, self.busy_timeout)
            if error is None:
                raise
            raise error from exc

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction: ``BEGIN IMMEDIATE`` to write, ``DEFERRED`` (never waiting) to read."""
        with self._faults(), (self.engine if write else self._reader).begin() as conn:
            yield conn

    def _not_found(self, conn: sa.Connection, run_id: int) -> RunNotFound:
        latest = list(conn.execute(sa.select(t.runs.c.id).order_by(t.runs.c.id.desc()).limit(5)).scalars())
        if latest:
            hint = "the latest are " + ", ".join(map(format_run_id, latest))
        else:
            hint = "it holds no runs yet"
        return RunNotFound(f"no run {format_run_id(run_id)} in {self.location}; {hint}. "
                           "(--db PATH or MERX_DB selects another database.)")

    def _require(self, conn: sa.Connection, run_id: int) -> sa.RowMapping:
        row = conn.execute(sa.select(t.runs).where(t.runs.c.id == run_id)).mappings().first()
        if row is None:
            raise self._not_found(conn, run_id)
        return row

    def _insert(self, table: sa.Table, run_id: int, rows: list[dict], duplicate: str) -> None:
        """Insert ``rows`` for an existing run in one transaction."""
        with self._transaction(write=True) as conn:
            self._require(conn, run_id)
            if not rows:
                return
            try:
                conn.execute(sa.insert(table), rows)
            except sa.exc.IntegrityError as exc:
                raise StoreError(f"{format_run_id(run_id)}: {duplicate} ({exc.orig})") from None

    # -- writing ------------------------------------------------------------------------------

    def start_run(self, experiment: str, experiment_file: str | None, config: dict, config_hash: str,
                  group_hash: str, seed: int | None, task: str, device: str | None, versions: dict,
                  git_commit: str | None, description: str = "", tags: Iterable[str] = ()) -> int:
        """Record a new run with status ``running``; returns its id."""
        values = dict(
            experiment=experiment, experiment_file=None if experiment_file is None else str(experiment_file),
            description=description or "", config_json=_json(config), config_hash=config_hash,
            group_hash=group_hash, seed=seed, task=task, status="running", started_at=_iso(_now()),
            device=None if device is None else str(device), versions_json=_json(versions or {}),
            git_commit=git_commit, tags_json=_json(list(tags or ())))
        with self._transaction(write=True) as conn:
            return conn.execute(sa.insert(t.runs).values(**values)).inserted_primary_key[0]

    def add_plugins(self, run_id: int, rows: list[dict]) -> None:
        """Record the plugins a run used: dicts with kind, name, origin, source, version
        (``Plugin.provenance()``)."""
        clean = []
        for row in map(_as_dict, rows):
            _check_keys(row, _PLUGIN_KEYS, "plugin row")
            clean.append({"run_id": run_id, **{k: row.get(k) for k in _PLUGIN_KEYS}})
        self._insert(t.run_plugins, run_id, clean, "could not record its plugins")

    def add_epoch(self, run_id: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record one finished epoch's metrics in their own transaction (NaN/inf stored as NULL).

        When another process holds the write lock past the busy timeout, the epoch waits in
        memory (``pending_epochs``) and this returns, so training goes on: the next ``add_epoch``
        after a back-off (1 s, doubling up to a minute) and ``finish_run`` write every waiting
        epoch, oldest first. Writing an epoch again with the same values changes nothing."""
        rows = [{"run_id": run_id, "epoch": int(epoch), "metric": str(name),
                 "value": _number(value, f"{format_run_id(run_id)} epoch {epoch} metric {name!r}")}
                for name, value in metrics.items()]
        self._pending.append((run_id, int(epoch), rows))
        if time.monotonic() < self._retry_at:
            return
        try:
            with self._transaction(write=True) as conn:
                written = self._write_pending(conn)
        except StoreLocked:
            self._backoff = min(2 * self._backoff, MAX_BACKOFF_S) if self._backoff else 1.0
            self._retry_at = time.monotonic() + self._backoff
            log.warning("%s is locked by another process: epoch %s of %s waits in memory (%d waiting) and is "
                        "written once the lock is free; training goes on", self.location, epoch,
                        format_run_id(run_id), len(self._pending))
            return
        self._written(written)

    def _write_pending(self, conn: sa.Connection) -> int:
        """Insert every waiting epoch, oldest first, in ``conn``'s transaction; returns how many.

        Rows already there with the same value are skipped, so a retry never duplicates; a
        different value is a real duplicate and raises. An epoch that can never be written
        (duplicate, unknown run) is dropped from the queue as it raises."""
        e = t.epochs.c
        for i, (run_id, epoch, rows) in enumerate(self._pending):
            try:
                self._require(conn, run_id)
                q = sa.select(e.metric, e.value).where(e.run_id == run_id, e.epoch == epoch)
                have = dict(conn.execute(q).all())
                clash = [r["metric"] for r in rows if r["metric"] in have and have[r["metric"]] != r["value"]]
                if clash:
                    raise StoreError(f"{format_run_id(run_id)}: epoch {epoch} is already recorded, with other "
                                     f"values of {', '.join(clash)}")
                new = [r for r in rows if r["metric"] not in have]
                if new:
                    conn.execute(sa.insert(t.epochs), new)
            except StoreError:
                del self._pending[i]
                raise
        return len(self._pending)

    def _written(self, count: int) -> None:
        """The oldest ``count`` waiting epochs are committed."""
        del self._pending[:count]
        self._backoff = self._retry_at = 0.0

    def add_metrics(self, run_id: int, split: str, metrics: Mapping[str, float]) -> None:
        """Record the final model's metrics on ``split`` (``test`` or ``validate``)."""
        rows = [{"run_id": run_id, "split": split, "metric": str(name),
                 "value": _number(value, f"{format_run_id(run_id)} {split} metric {name!r}")}
                for name, value in metrics.items()]
        self._insert(t.metrics, run_id, rows, f"{split} metrics are already recorded")

    def add_baselines(self, run_id: int, baseline: str, metrics: Mapping[str, float]) -> None:
        """Record the test metrics of one baseline predictor (``mean``, ``quadrant_centre``, ...)."""
        rows = [{"run_id": run_id, "baseline": baseline, "metric": str(name),
                 "value": _number(value, f"{format_run_id(run_id)} baseline {baseline} metric {name!r}")}
                for name, value in metrics.items()]
        self._insert(t.baselines, run_id, rows, f"baseline {baseline!r} is already recorded")

    def add_predictions(self, run_id: int, rows: list[dict]) -> None:
        """Record per-song predictions: dicts with song_id and split (required), true_/pred_valence,
        true_/pred_arousal, true_/pred_quadrant, and probs (class probabilities, list or dict)."""
        clean = []
        for row in map(_as_dict, rows):
            _check_keys(row, _PREDICTION_KEYS, "prediction row")
            if row.get("song_id") is None or row.get("split") is None:
                raise ValueError(f"prediction row {row!r}: song_id and split are required")
            out = {"run_id": run_id, "song_id": str(row["song_id"]), "split": row["split"],
                   "true_quadrant": row.get("true_quadrant"), "pred_quadrant": row.get("pred_quadrant")}
            for key in _PREDICTION_FLOATS:
                out[key] = _number(row.get(key), f"prediction of {row['song_id']!r}: {key}")
            probs = row.get("probs")
            if probs is not None and hasattr(probs, "tolist"):  # numpy array or tensor
                probs = probs.tolist()
            out["probs_json"] = row.get("probs_json") if probs is None else _json(probs)
            clean.append(out)
        self._insert(t.predictions, run_id, clean, "a song's prediction is already recorded for that split")

    def add_failures(self, run_id: int, failures: list[dict]) -> None:
        """Record songs that could not be used: dicts (or ``Failure`` objects) with song_id,
        stage, reason and path."""
        clean = []
        for row in map(_as_dict, failures):
            _check_keys(row, _FAILURE_KEYS, "failure row")
            clean.append({"run_id": run_id, "song_id": str(row["song_id"]), "stage": row["stage"],
                          "reason": str(row["reason"]), "path": None if row.get("path") is None else str(row["path"])})
        self._insert(t.failures, run_id, clean, "could not record its failures")

    def add_data_notes(self, run_id: int, notes: dict[str, list[tuple[str, str]]]) -> None:
        """Record data notes, ``{kind: [(song id, detail), ...]}`` as
        :meth:`merx.data.songs.SongTable.notes` returns them."""
        rows = [{"run_id": run_id, "song_id": str(song_id), "kind": kind, "detail": str(detail)}
                for kind, songs in notes.items() for song_id, detail in songs]
        self._insert(t.data_notes, run_id, rows, "could not record its data notes")

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set columns of a run, e.g. ``note="lr too high"``, ``best_epoch=7``. ``config``,
        ``versions`` and ``tags`` take the decoded values."""
        columns = set(t.runs.c.keys()) - {"id"}
        values = {}
        for key, value in fields.items():
            if key in _JSON_FIELDS:
                key, value = _JSON_FIELDS[key], _json(value)
            if key not in columns:
                raise ValueError(f"update_run: runs has no field {key!r}; the fields are "
                                 f"{', '.join(sorted(columns | set(_JSON_FIELDS)))}")
            if key == "status" and value not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {value!r}")
            values[key] = value
        with self._transaction(write=True) as conn:
            self._require(conn, run_id)
            if values:
                conn.execute(sa.update(t.runs).where(t.runs.c.id == run_id).values(**values))

    def finish_run(self, run_id: int, status: str, error: str | None = None, best_epoch: int | None = None,
                   epochs_run: int | None = None, checkpoint_path: str | None = None) -> None:
        """Close a run: set its final status, ``ended_at`` and ``wall_seconds``; the optional fields
        are set only when given. Epochs waiting in memory are written first, in the same
        transaction. A lock held elsewhere is retried with back-off for ``final_wait`` seconds
        (default 300) before ``StoreLocked``: hours of training are worth minutes of waiting."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        ended = _now()
        optional = {"error": error, "best_epoch": best_epoch, "epochs_run": epochs_run,
                    "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path)}
        deadline = time.monotonic() + self.final_wait
        delay = 1.0
        while True:
            try:
                with self._transaction(write=True) as conn:
                    written = self._write_pending(conn)
                    started = datetime.fromisoformat(self._require(conn, run_id)["started_at"])
                    values = {"status": status, "ended_at": _iso(ended),
                              "wall_seconds": round((ended - started).total_seconds(), 3)}
                    values.update({k: v for k, v in optional.items() if v is not None})
                    conn.execute(sa.update(t.runs).where(t.runs.c.id == run_id).values(**values))
                self._written(written)
                return
            except StoreLocked as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    waiting = f" and {len(self._pending)} epoch(s) waiting in memory" if self._pending else ""
                    raise StoreLocked(f"could not record that {format_run_id(run_id)} ended ({status}){waiting} "
                                      f"after retrying for {self.final_wait:g} s ({ENV_FINAL_WAIT} sets how long): "
                                      f"{exc}") from exc
                time.sleep(min(delay, left))
                delay = min(2 * delay, 30.0)

    # -- reading ------------------------------------------------------------------------------

    def list_runs(self, experiment: str | None = None, status: str | None = None, limit: int | None = 20, *,
                  group_hash: str | None = None, config_hash: str | None = None, tag: str | None = None,
                  since: str | None = None, until: str | None = None, sort_metric: str | None = None,
                  ascending: bool = False) -> list[dict]:
        """Runs, newest first, as ``get_run`` decodes them (without epochs, predictions, ...), each
        with ``metrics``: its test metrics ``{metric: value}`` ({} until it has any).

        ``tag`` keeps runs carrying that tag; ``since`` / ``until`` bound ``started_at`` (see
        :func:`time_bound`: ``until="2025-03-01"`` includes that day). ``group_hash``
        may be a prefix. ``sort_metric`` orders by that test metric (``ascending`` or not; runs
        without it last, then newest first) before ``limit`` applies."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        q = sa.select(t.runs)
        for column, value in (("experiment", experiment), ("status", status), ("config_hash", config_hash)):
            if value is not None:
                q = q.where(t.runs.c[column] == value)
        if group_hash is not None:
            q = q.where(t.runs.c.group_hash.startswith(group_hash, autoescape=True))
        if tag is not None:
            # tags_json is a JSON list: the tag's own JSON text, quotes included, matches one element.
            q = q.where(t.runs.c.tags_json.contains(json.dumps(str(tag)), autoescape=True))
        if since is not None:
            q = q.where(t.runs.c.started_at >= time_bound(since))
        if until is not None:
            q = q.where(t.runs.c.started_at < time_bound(until, end=True))
        if sort_metric is not None:
            m = t.metrics.alias("sort_metric")
            q = q.outerjoin(m, sa.and_(m.c.run_id == t.runs.c.id, m.c.split == "test", m.c.metric == sort_metric))
            q = q.order_by(m.c.value.is_(None), m.c.value.asc() if ascending else m.c.value.desc())
        q = q.order_by(t.runs.c.id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._transaction() as conn:
            rows = conn.execute(q).mappings().all()
            test: dict[int, dict] = defaultdict(dict)
            ids = [r["id"] for r in rows]
            if ids:
                mq = sa.select(t.metrics).where(t.metrics.c.run_id.in_(ids), t.metrics.c.split == "test")
                for m in conn.execute(mq):
                    test[m.run_id][m.metric] = m.value
        return [{**_decode_run(r), "metrics": test[r["id"]]} for r in rows]

    def experiments(self) -> list[str]:
        """Names of the experiments with runs in this database, sorted."""
        q = sa.select(t.runs.c.experiment).distinct().order_by(t.runs.c.experiment)
        with self._transaction() as conn:
            return list(conn.execute(q).scalars())

    def group_hashes(self, prefix: str = "") -> list[str]:
        """The distinct ``group_hash`` values starting with ``prefix``, sorted."""
        q = (sa.select(t.runs.c.group_hash).distinct()
             .where(t.runs.c.group_hash.startswith(prefix, autoescape=True)).order_by(t.runs.c.group_hash))
        with self._transaction() as conn:
            return list(conn.execute(q).scalars())

    def plugin_uses(self, kind: str, name: str) -> list[dict]:
        """Every run that used the ``kind`` plugin ``name`` (``"fusions"``, ``"lmf"``), oldest
        first: dicts with run_id, origin, source and version, as ``add_plugins`` recorded them."""
        p = t.run_plugins.c
        q = (sa.select(p.run_id, p.origin, p.source, p.version)
             .where(p.kind == kind, p.name == name).order_by(p.run_id))
        with self._transaction() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def tag_run(self, run_id: int | str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove tags of a run (one transaction: no concurrent tag is lost); returns its tags."""
        run_id = parse_run_id(run_id)
        add, remove = [str(x) for x in add], {str(x) for x in remove}
        for tag in add:
            if not tag.strip():
                raise ValueError("a tag must not be empty")
        with self._transaction(write=True) as conn:
            raw = self._require(conn, run_id)["tags_json"]
            tags = [x for x in (json.loads(raw) if raw else []) if x not in remove]
            tags += [x for x in dict.fromkeys(add) if x not in tags]
            conn.execute(sa.update(t.runs).where(t.runs.c.id == run_id).values(tags_json=_json(tags)))
        return tags

    def get_run(self, run_id: int | str) -> dict:
        """One run, every column decoded (``config``, ``versions``, ``tags`` instead of the
        ``_json`` columns), plus ``plugins`` (list), ``epochs`` ``{epoch: {metric: value}}``,
        ``metrics`` ``{split: {metric: value}}``, ``baselines`` ``{baseline: {metric: value}}``,
        ``failures`` (list), ``artifacts`` (list), ``data_notes`` (list) and ``prediction_count``. Unknown id:
        ``RunNotFound``."""
        run_id = parse_run_id(run_id)
        with self._transaction() as conn:
            out = _decode_run(self._require(conn, run_id))

            def rows(table: sa.Table, *order) -> list[dict]:
                q = sa.select(table).where(table.c.run_id == run_id).order_by(*order)
                return [dict(r) for r in conn.execute(q).mappings()]

            out["plugins"] = [{k: r[k] for k in _PLUGIN_KEYS} for r in rows(t.run_plugins, t.run_plugins.c.kind)]
            epochs: dict[int, dict[str, float | None]] = {}
            for r in rows(t.epochs, t.epochs.c.epoch):
                epochs.setdefault(r["epoch"], {})[r["metric"]] = r["value"]
            out["epochs"] = epochs
            out["metrics"] = self._nested(rows(t.metrics, t.metrics.c.split), "split")
            out["baselines"] = self._nested(rows(t.baselines, t.baselines.c.baseline), "baseline")
            out["failures"] = [{k: r[k] for k in _FAILURE_KEYS} for r in rows(t.failures, t.failures.c.song_id)]
            out["artifacts"] = [{"kind": r["kind"], "path": r["path"]} for r in rows(t.artifacts)]
            out["data_notes"] = [{k: r[k] for k in ("song_id", "kind", "detail")}
                                 for r in rows(t.data_notes, t.data_notes.c.kind, t.data_notes.c.song_id)]
            out["prediction_count"] = conn.execute(
                sa.select(sa.func.count()).select_from(t.predictions).where(t.predictions.c.run_id == run_id)
            ).scalar_one()
        return out

    @staticmethod
    def _nested(rows: list[dict], key: str) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for r in rows:
            out.setdefault(r[key], {})[r["metric"]] = r["value"]
        return out

    def get_predictions(self, run_id: int | str, split: str | None = None) -> list[dict]:
        """Per-song predictions of a run (``probs`` decoded), by split then song id."""
        run_id = parse_run_id(run_id)
        q = (sa.select(t.predictions).where(t.predictions.c.run_id == run_id)
             .order_by(t.predictions.c.split, t.predictions.c.song_id))
        if split is not None:
            q = q.where(t.predictions.c.split == split)
        with self._transaction() as conn:
            self._require(conn, run_id)
            out = []
            for r in conn.execute(q).mappings():
                row = {k: v for k, v in r.items() if k not in ("run_id", "probs_json")}
                row["probs"] = json.loads(r["probs_json"]) if r["probs_json"] is not None else None
                out.append(row)
        return out
