"""``RunStore``: what merx records about each run, written as it happens and read back later
(reading: ``merx.store.reading``; statuses: ``merx.store.statuses``).

The rest lives beside it: which database is opened and how SQLite is set up for several
processes, ``merx.store.engine``; opening, migrating and transactions, ``merx.store.database``
(``ResultsDatabase``, which ``RunStore`` extends); how values become rows, ``merx.store.rows``;
how a write rides out a lock held elsewhere, ``merx.store.pending``.

Every write method is one transaction: ``add_epoch`` commits each epoch, so a run whose process
dies keeps every epoch it finished (its status stays ``running``). A lock held elsewhere for
longer than the busy timeout does not fail a run's epoch: it waits in memory and is written
with the next one, and ``finish_run`` keeps trying for minutes. Every failure of the database
itself (locked, read-only, damaged, full) is raised as one ``StoreError`` subclass naming the
file and the fix (``merx.store.faults``), never as SQLAlchemy's exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from merx.store import schema as t
from merx.store.database import ResultsDatabase
from merx.store.engine import (
    BUSY_TIMEOUT_S,
    DEFAULT_DB,
    ENV_BUSY_TIMEOUT,
    ENV_VAR,
    create_store_engine,
    env_seconds,
    lock_run,
    resolve_busy_timeout,
    resolve_url,
    sqlite_file,
)
from merx.store.errors import RunNotFound, RunTakenOver, StoreError, StoreLocked
from merx.store.folders import run_folder_name, store_folder
from merx.store.ids import format_run_id, parse_run_id
from merx.store.liveness import is_lost, this_host, with_liveness
from merx.store.pending import ENV_FINAL_WAIT, FINAL_WAIT_S, MAX_BACKOFF_S, PendingEpochs, keep_trying
from merx.store.reading import RunReading
from merx.store.rows import (
    FAILURE_KEYS,
    JSON_FIELDS,
    PLUGIN_KEYS,
    PREDICTION_FLOATS,
    PREDICTION_KEYS,
    checked,
    decode_run,
    metric_rows,
    number,
    to_json,
)
from merx.store.statuses import (
    FINAL_STATUSES,
    RECORDED_STATUSES,
    RESUMABLE,
    STATUSES,
    _check_status,
    _why_not_resumable,
    check_resumable,
)
from merx.store.times import iso, now, time_bound

# What callers may import from here; the settings and id/url helpers are re-exported from where they live.
__all__ = ["RunStore", "STATUSES", "RECORDED_STATUSES", "FINAL_STATUSES", "RESUMABLE", "check_resumable",
           "DEFAULT_DB", "ENV_VAR", "BUSY_TIMEOUT_S", "ENV_BUSY_TIMEOUT",
           "FINAL_WAIT_S", "ENV_FINAL_WAIT", "MAX_BACKOFF_S", "parse_run_id", "format_run_id", "resolve_url",
           "sqlite_file", "create_store_engine", "time_bound"]

log = logging.getLogger(__name__)


# -- the store --------------------------------------------------------------------------------

class RunStore(RunReading, ResultsDatabase):
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
                 busy_timeout: float | None = None, final_wait: float | None = None,
                 runs_dir: str | os.PathLike | None = None):
        # Both durations are read before the database is opened: a bad $MERX_DB_BUSY_TIMEOUT or
        # $MERX_DB_FINAL_WAIT fails before a new file is created.
        busy_timeout = resolve_busy_timeout(busy_timeout)
        self.final_wait = env_seconds(ENV_FINAL_WAIT, FINAL_WAIT_S) if final_wait is None else float(final_wait)
        self._pending = PendingEpochs()
        self._running: set[int] = set()  # the runs this store started or reopened (see _require_owned)
        super().__init__(url_or_path, write=write, busy_timeout=busy_timeout)
        self.runs_dir = store_folder(self.engine.url, runs_dir)

    def run_folder(self, run_id: int) -> Path:
        """Where run ``run_id`` writes its files (``merx.store.folders``); not created here."""
        return self.runs_dir / run_folder_name(run_id)

    def close(self) -> None:
        """Release the database connections."""
        if self._pending:
            log.warning("%d epoch(s) of %s were never written to %s: the database stayed locked",
                        len(self._pending), ", ".join(sorted({format_run_id(r) for r, _ in self._pending.keys()})),
                        self.location)
        super().close()

    @property
    def pending_epochs(self) -> list[tuple[int, int]]:
        """``(run_id, epoch)`` of the epochs waiting in memory for a lock held elsewhere, oldest first."""
        return self._pending.keys()

    # -- internals ----------------------------------------------------------------------------

    def _not_found(self, conn: sa.Connection, run_id: int) -> RunNotFound:
        latest = list(conn.execute(sa.select(t.runs.c.id).order_by(t.runs.c.id.desc()).limit(5)).scalars())
        if latest:
            hint = "the latest are " + ", ".join(map(format_run_id, latest))
        else:
            hint = "it holds no runs yet"
        return RunNotFound(f"no run {format_run_id(run_id)} in {self.location}; {hint}. "
                           "(--db PATH or MERX_DB selects another database.)")

    def _require(self, conn: sa.Connection, run_id: int) -> sa.RowMapping:
        # In a write transaction this locks the run's row on a server (merx.store.engine).
        row = conn.execute(lock_run(sa.select(t.runs).where(t.runs.c.id == run_id), conn)).mappings().first()
        if row is None:
            raise self._not_found(conn, run_id)
        return row

    def _require_owned(self, conn: sa.Connection, run_id: int) -> sa.RowMapping:
        """``_require``, and refused unless this process (host and pid) is the one recorded as
        running the run: one whose run was reported lost and resumed by another process
        (``reopen_run`` records the new one) must not write its epochs or its end over the
        resumed run's. A row from before hosts and pids were recorded has none to check."""
        row = self._require(conn, run_id)
        # Only a run this store ran: another process may close a run it never ran (a tool marking
        # a dead worker's run); what must not happen is a superseded runner writing over a resumed run.
        recorded = (row["host"], None if row["pid"] is None else int(row["pid"]))
        if run_id in self._running and all(recorded) and recorded != (this_host(), os.getpid()):
            raise RunTakenOver(f"{format_run_id(run_id)} is now run by pid {row['pid']} on {row['host']} (resumed "
                               f"there after it was reported lost); this process (pid {os.getpid()} on "
                               f"{this_host()}) no longer records it",
                               hint="stop this process; the resumed run goes on (merx show "
                                    f"{format_run_id(run_id)})")
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

    @staticmethod
    def _set_run(conn: sa.Connection, run_id: int, values: Mapping[str, Any]) -> None:
        conn.execute(sa.update(t.runs).where(t.runs.c.id == run_id).values(**values))

    # -- writing ------------------------------------------------------------------------------

    def start_run(self, experiment: str, experiment_file: str | None, config: dict, config_hash: str,
                  group_hash: str, seed: int | None, task: str, device: str | None, versions: dict,
                  git_commit: str | None, description: str = "", tags: Iterable[str] = ()) -> int:
        """Record a new run with status ``running``, run by this process; returns its id."""
        values = dict(
            experiment=experiment, experiment_file=None if experiment_file is None else str(experiment_file),
            description=description or "", config_json=to_json(config), config_hash=config_hash,
            group_hash=group_hash, seed=seed, task=task, status="running", started_at=iso(now()),
            host=this_host(), pid=os.getpid(), heartbeat_at=iso(now()),
            device=None if device is None else str(device), versions_json=to_json(versions or {}),
            git_commit=git_commit, tags_json=to_json(list(tags or ())))
        with self._transaction(write=True) as conn:
            run_id = conn.execute(sa.insert(t.runs).values(**values)).inserted_primary_key[0]
        self._running.add(run_id)
        return run_id

    def add_plugins(self, run_id: int, rows: list[dict]) -> None:
        """Record the plugins a run used: dicts with kind, name, origin, source, version
        (``Plugin.provenance()``)."""
        clean = [{"run_id": run_id, **{k: row.get(k) for k in PLUGIN_KEYS}}
                 for row in checked(rows, PLUGIN_KEYS, "plugin row")]
        self._insert(t.run_plugins, run_id, clean, "could not record its plugins")

    def add_epoch(self, run_id: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record one finished epoch's metrics in their own transaction (NaN/inf stored as NULL).

        When another process holds the write lock past the busy timeout, the epoch waits in
        memory (``pending_epochs``) and this returns, so training goes on: the next ``add_epoch``
        after a back-off (1 s, doubling up to a minute) and ``finish_run`` write every waiting
        epoch, oldest first. Writing an epoch again with the same values changes nothing."""
        rows = metric_rows({"run_id": run_id, "epoch": int(epoch)}, metrics,
                           f"{format_run_id(run_id)} epoch {epoch}")
        if not self._pending.add(run_id, epoch, rows):
            return  # still backing off from the last lock
        try:
            with self._transaction(write=True) as conn:
                written = self._pending.write(conn, self._require_owned)
        except StoreLocked as exc:  # a lock held elsewhere, or a server gone for now (StoreUnreachable)
            self._pending.locked()
            why = "is locked by another process" if type(exc) is StoreLocked else "cannot be reached"
            log.warning("%s %s: epoch %s of %s waits in memory (%d waiting) and is "
                        "written once it can be; training goes on", self.location, why, epoch,
                        format_run_id(run_id), len(self._pending))
            return
        self._pending.written(written)

    def add_metrics(self, run_id: int, split: str, metrics: Mapping[str, float]) -> None:
        """Record the final model's metrics on ``split`` (``test`` or ``validate``)."""
        rows = metric_rows({"run_id": run_id, "split": split}, metrics, f"{format_run_id(run_id)} {split}")
        self._insert(t.metrics, run_id, rows, f"{split} metrics are already recorded")

    def add_baselines(self, run_id: int, baseline: str, metrics: Mapping[str, float]) -> None:
        """Record the test metrics of one baseline predictor (``mean``, ``quadrant_centre``, ...)."""
        rows = metric_rows({"run_id": run_id, "baseline": baseline}, metrics,
                           f"{format_run_id(run_id)} baseline {baseline}")
        self._insert(t.baselines, run_id, rows, f"baseline {baseline!r} is already recorded")

    def add_predictions(self, run_id: int, rows: list[dict]) -> None:
        """Record per-song predictions: dicts with song_id and split (required), true_/pred_valence,
        true_/pred_arousal, true_/pred_quadrant, and probs (class probabilities, list or dict)."""
        clean = []
        for row in checked(rows, PREDICTION_KEYS, "prediction row"):
            if row.get("song_id") is None or row.get("split") is None:
                raise ValueError(f"prediction row {row!r}: song_id and split are required")
            out = {"run_id": run_id, "song_id": str(row["song_id"]), "split": row["split"],
                   "true_quadrant": row.get("true_quadrant"), "pred_quadrant": row.get("pred_quadrant")}
            for key in PREDICTION_FLOATS:
                out[key] = number(row.get(key), f"prediction of {row['song_id']!r}: {key}")
            probs = row.get("probs")
            if probs is not None and hasattr(probs, "tolist"):  # numpy array or tensor
                probs = probs.tolist()
            out["probs_json"] = row.get("probs_json") if probs is None else to_json(probs)
            clean.append(out)
        self._insert(t.predictions, run_id, clean, "a song's prediction is already recorded for that split")

    def add_failures(self, run_id: int, failures: list[dict]) -> None:
        """Record songs that could not be used: dicts (or ``Failure`` objects) with song_id,
        stage, reason and path."""
        clean = [{"run_id": run_id, "song_id": str(row["song_id"]), "stage": row["stage"],
                  "reason": str(row["reason"]), "path": None if row.get("path") is None else str(row["path"])}
                 for row in checked(failures, FAILURE_KEYS, "failure row")]
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
            if key in JSON_FIELDS:
                key, value = JSON_FIELDS[key], to_json(value)
            if key not in columns:
                raise ValueError(f"update_run: runs has no field {key!r}; the fields are "
                                 f"{', '.join(sorted(columns | set(JSON_FIELDS)))}")
            if key == "status":
                _check_status(value, RECORDED_STATUSES)
            values[key] = value
        with self._transaction(write=True) as conn:
            self._require(conn, run_id)
            if values:
                self._set_run(conn, run_id, values)

    def heartbeat(self, run_id: int) -> None:
        """This process is still running ``run_id``: refresh its ``heartbeat_at``. Only the process
        recorded as running it (host and pid) beats: one that lost it to ``merx resume`` does not."""
        with self._transaction(write=True) as conn:
            conn.execute(sa.update(t.runs).where(t.runs.c.id == run_id, t.runs.c.status == "running",
                                                 t.runs.c.host == this_host(), t.runs.c.pid == os.getpid())
                         .values(heartbeat_at=iso(now())))

    def reopen_run(self, run_id: int) -> dict:
        """Take over an ``interrupted``, ``failed`` or ``lost`` run to continue it in this process:
        in one write transaction, check that it may be resumed, then record it ``running`` again
        (this host and pid, a fresh heartbeat, no error, no end). Returns the run as it was. Two
        processes resuming one run at once: the second finds it running and is refused."""
        run_id = parse_run_id(run_id)
        with self._transaction(write=True) as conn:
            row = with_liveness(dict(self._require(conn, run_id)))
            status = row["status"]
            check_resumable(row)
            self._set_run(conn, run_id, {"status": "running", "error": None, "ended_at": None, "wall_seconds": None,
                                         "host": this_host(), "pid": os.getpid(), "heartbeat_at": iso(now())})
        self._running.add(run_id)
        return {**decode_run(row), "status": status}

    def drop_epochs_after(self, run_id: int, epoch: int) -> int:
        """Delete the epochs recorded after ``epoch`` (a resumed run trains them again); how many."""
        with self._transaction(write=True) as conn:
            self._require(conn, run_id)
            q = sa.delete(t.epochs).where(t.epochs.c.run_id == run_id, t.epochs.c.epoch > epoch)
            n = conn.execute(sa.select(sa.func.count(sa.distinct(t.epochs.c.epoch))).where(
                t.epochs.c.run_id == run_id, t.epochs.c.epoch > epoch)).scalar_one()
            conn.execute(q)
        return int(n)

    def clear_results(self, run_id: int) -> None:
        """Delete a run's final metrics, predictions and baselines (a resumed run records them anew)."""
        with self._transaction(write=True) as conn:
            self._require(conn, run_id)
            for table in (t.metrics, t.predictions, t.baselines):
                conn.execute(sa.delete(table).where(table.c.run_id == run_id))

    def add_artifact(self, run_id: int, kind: str, path: str | os.PathLike) -> None:
        """List a file the run wrote (absolute path); listing the same path again changes nothing."""
        path = str(Path(path).resolve())
        a = t.artifacts.c
        with self._transaction(write=True) as conn:
            self._require(conn, run_id)
            if conn.execute(sa.select(sa.func.count()).where(a.run_id == run_id, a.path == path)).scalar_one():
                return
            conn.execute(sa.insert(t.artifacts).values(run_id=run_id, kind=kind, path=path))

    def delete_runs(self, run_ids: Iterable[int | str]) -> dict[int, list[str]]:
        """Delete runs and every row of theirs, in one transaction; ``{run id: the paths of its
        artifacts and its recorded checkpoint_path}`` (a run recorded before files were listed
        in ``artifacts`` names only that) for the caller to delete the files (``merx rm``; what is
        left, ``merx gc`` finds). A run still running (not lost) is refused: its process would go on writing."""
        ids = list(dict.fromkeys(parse_run_id(r) for r in run_ids))
        out: dict[int, list[str]] = {}
        with self._transaction(write=True) as conn:
            for run_id in ids:
                row = self._require(conn, run_id)
                if row["status"] == "running" and not is_lost(row):
                    raise StoreError(f"{format_run_id(run_id)} is running" + _why_not_resumable(dict(row), "running")
                                     + "; stop it first (Ctrl-C or kill), or wait until merx runs shows it lost")
                q = sa.select(t.artifacts.c.path).where(t.artifacts.c.run_id == run_id)
                paths = list(conn.execute(q).scalars())
                if row["checkpoint_path"] and row["checkpoint_path"] not in paths:
                    paths.append(row["checkpoint_path"])
                out[run_id] = paths
            for table in t.metadata.sorted_tables[::-1]:  # children first: no reliance on ON DELETE CASCADE
                column = table.c.get("run_id") if table is not t.runs else table.c.id
                if column is not None:
                    conn.execute(sa.delete(table).where(column.in_(ids)))
        return out

    def run_ids(self) -> set[int]:
        """The id of every run in the database."""
        with self._transaction() as conn:
            return set(conn.execute(sa.select(t.runs.c.id)).scalars())

    def finish_run(self, run_id: int, status: str, error: str | None = None, best_epoch: int | None = None,
                   epochs_run: int | None = None, checkpoint_path: str | None = None) -> None:
        """Close a run: set its final status, ``ended_at`` and ``wall_seconds``; the optional fields
        are set only when given. Epochs waiting in memory are written first, in the same
        transaction. A lock held elsewhere is retried with back-off for ``final_wait`` seconds
        (default 300) before ``StoreLocked``: hours of training are worth minutes of waiting."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        ended = now()
        optional = {"error": error, "best_epoch": best_epoch, "epochs_run": epochs_run,
                    "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path)}

        def attempt() -> None:
            with self._transaction(write=True) as conn:
                written = self._pending.write(conn, self._require_owned)
                started = datetime.fromisoformat(self._require_owned(conn, run_id)["started_at"])
                values = {"status": status, "ended_at": iso(ended),
                          "wall_seconds": round((ended - started).total_seconds(), 3)}
                values.update({k: v for k, v in optional.items() if v is not None})
                if status != "completed":
                    # What is recorded is the truth of an unfinished run: the caller's count can lag
                    # one epoch behind when a signal lands between recording an epoch and counting it.
                    recorded = conn.execute(sa.select(sa.func.max(t.epochs.c.epoch))
                                            .where(t.epochs.c.run_id == run_id)).scalar()
                    values["epochs_run"] = int(recorded or 0)
                self._set_run(conn, run_id, values)
            self._pending.written(written)

        def give_up(exc: StoreLocked) -> StoreLocked:
            waiting = f" and {len(self._pending)} epoch(s) waiting in memory" if self._pending else ""
            return StoreLocked(f"could not record that {format_run_id(run_id)} ended ({status}){waiting} "
                               f"after retrying for {self.final_wait:g} s ({ENV_FINAL_WAIT} sets how long): {exc}")

        keep_trying(attempt, self.final_wait, give_up)
