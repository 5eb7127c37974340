"""Which database the store opens, and how SQLite is set up for several processes at once.

The database is ``results.db`` in the working directory unless ``--db`` / ``MERX_DB`` names
another file or an SQLAlchemy URL (a server); its folder must exist (a mistyped path is
refused, not created). SQLite is configured for several processes writing at once
(field-notes.md, "SQLite through SQLAlchemy"): WAL journal, a busy timeout (30 s, or
``$MERX_DB_BUSY_TIMEOUT`` seconds), pysqlite's own transaction handling off and ``BEGIN
IMMEDIATE`` at the start of every write transaction, so that a read-then-write transaction waits
for the lock instead of failing or losing an update. A connection with the execution option
``merx_begin="DEFERRED"`` begins ``DEFERRED`` instead: under WAL such a read never waits for a
writer, so the commands that only read never wait for a lock held elsewhere.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from merx.store.errors import StoreError

DEFAULT_DB = "results.db"
ENV_VAR = "MERX_DB"
#: How long a write waits for another process's write transaction before giving up
#: (``$MERX_DB_BUSY_TIMEOUT`` seconds overrides it).
BUSY_TIMEOUT_S = 30.0
ENV_BUSY_TIMEOUT = "MERX_DB_BUSY_TIMEOUT"


def env_seconds(name: str, default: float) -> float:
    """A duration in seconds from the environment variable ``name`` (``default`` when unset)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise StoreError(f"{name}={raw!r} is not a number of seconds; write e.g. {name}={default:g}")
    return value


def resolve_busy_timeout(seconds: float | None = None) -> float:
    """``seconds`` when given, else ``$MERX_DB_BUSY_TIMEOUT``, else 30."""
    return env_seconds(ENV_BUSY_TIMEOUT, BUSY_TIMEOUT_S) if seconds is None else float(seconds)


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
    # pysqlite's timeout is SQLite's busy timeout: a locked database is retried this long.
    engine = sa.create_engine(parsed, connect_args={"timeout": resolve_busy_timeout(busy_timeout)})

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
