"""Which database the store opens, and how SQLite and PostgreSQL are set up for several processes at once.

The database is ``results.db`` in the working directory unless ``--db`` / ``MERX_DB`` names
another file or an SQLAlchemy URL (a server); its folder must exist (a mistyped path is
refused, not created). SQLite is configured for several processes writing at once
(field-notes.md, "SQLite through SQLAlchemy"): WAL journal, a busy timeout (30 s, or
``$MERX_DB_BUSY_TIMEOUT`` seconds), pysqlite's own transaction handling off and ``BEGIN
IMMEDIATE`` at the start of every write transaction, so that a read-then-write transaction waits
for the lock instead of failing or losing an update. A connection with the execution option
``merx_begin="DEFERRED"`` begins ``DEFERRED`` instead: under WAL such a read never waits for a
writer, so the commands that only read never wait for a lock held elsewhere.

PostgreSQL (``postgresql+psycopg://user@host/db``; a plain ``postgresql://`` gets psycopg, the
driver of the ``merx[postgres]`` extra) gives the same guarantees with a server's means, so
that any number of processes on any number of machines can write to one database:

- run ids come from the ``runs.id`` sequence: concurrent ``start_run`` calls never get the same
  id, and an id is never handed out again (a sequence does not roll back), as SQLite's
  AUTOINCREMENT promises;
- transactions are READ COMMITTED, and a write transaction locks the row of the run it writes
  (``SELECT ... FOR UPDATE`` in ``RunStore._require``, ``lock_run`` here): writes to one run
  are serialised (no lost tag, no epoch recorded twice) while runs of other processes proceed in
  parallel, unlike SQLite's one writer at a time; the primary keys of ``epochs``, ``metrics``,
  ``baselines``, ``predictions`` and ``data_notes`` refuse a duplicate row whatever happens;
- every transaction sets ``lock_timeout`` to the busy timeout, so a write that waits longer for
  a lock held elsewhere fails with ``StoreLocked`` and the epoch waits in memory, exactly as on
  SQLite (``merx.store.pending``); a server that cannot be reached raises ``StoreUnreachable``,
  a ``StoreLocked``, so a restart mid-run is waited for the same way; reads never wait (MVCC);
- migrations take a transaction-level advisory lock (``lock_schema``): two processes opening a
  new database at once cannot both migrate it, and DDL is transactional (all or nothing);
- a connection attempt gives up after ``CONNECT_TIMEOUT_S`` (an unreachable host fails instead
  of hanging), and pooled connections are checked before use (a restarted server costs no write).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from merx.errors import MissingExtra
from merx.store.errors import StoreError

DEFAULT_DB = "results.db"
ENV_VAR = "MERX_DB"
#: How long a write waits for another process's write transaction before giving up
#: (``$MERX_DB_BUSY_TIMEOUT`` seconds overrides it).
BUSY_TIMEOUT_S = 30.0
ENV_BUSY_TIMEOUT = "MERX_DB_BUSY_TIMEOUT"
#: Seconds to wait for a database server to answer a connection (unless the URL sets connect_timeout).
CONNECT_TIMEOUT_S = 10
#: The driver a ``postgresql://`` URL without one gets: psycopg 3, from the ``merx[postgres]`` extra.
POSTGRES_DRIVER = "psycopg"
#: Key of the advisory lock that serialises migrations on PostgreSQL (any fixed 64-bit number).
_SCHEMA_LOCK_KEY = 0x6D657278  # "merx"


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


def _journal_mode_wal(cur, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried for up to ``timeout`` seconds while the database is
    locked. Switching a new database to WAL needs it to itself, and SQLite answers "database is
    locked" at once there, without its busy handler: two runs opening a new results.db together
    failed one of them (about one time in fifty)."""
    import sqlite3
    import time

    deadline, pause = time.monotonic() + timeout, 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def resolve_busy_timeout(seconds: float | None = None) -> float:
    """``seconds`` when given, else ``$MERX_DB_BUSY_TIMEOUT``, else 30."""
    return env_seconds(ENV_BUSY_TIMEOUT, BUSY_TIMEOUT_S) if seconds is None else float(seconds)


def resolve_url(url_or_path: str | os.PathLike | None = None) -> str:
    """The database URL: the argument, else ``$MERX_DB``, else ``results.db`` in the working directory.

    A value with ``://`` is an SQLAlchemy URL; anything else is a file path, made absolute (so a
    later ``chdir`` cannot move the database) and turned into ``sqlite:///<path>``."""
    value = os.fspath(url_or_path) if url_or_path else (os.environ.get(ENV_VAR) or DEFAULT_DB)
    if "://" in value:
        # SQLAlchemy would pick psycopg2 for a bare postgresql://; merx ships psycopg 3.
        for bare in ("postgresql://", "postgres://"):
            if value.startswith(bare):
                return f"postgresql+{POSTGRES_DRIVER}://" + value[len(bare):]
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
    if parsed.get_backend_name() == "postgresql":
        return _postgres_engine(parsed, resolve_busy_timeout(busy_timeout))
    if parsed.get_backend_name() != "sqlite" or parsed.get_driver_name() != "pysqlite":
        return _create(parsed)
    path = sqlite_file(parsed)
    if path is not None and not path.parent.is_dir():
        # SQLite would fail with "unable to open database file"; creating the folders instead
        # would hide a typo in --db behind a new, empty database.
        folder = path.parent.absolute()
        raise StoreError(f"cannot create the results database {path.absolute()}: its folder {folder} does not "
                         "exist. Check the path given to --db (or MERX_DB), or create the folder: "
                         f"mkdir -p {shlex.quote(str(folder))}")
    # pysqlite's timeout is SQLite's busy timeout: a locked database is retried this long.
    timeout = resolve_busy_timeout(busy_timeout)
    engine = _create(parsed, connect_args={"timeout": timeout})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn, _record):
        # pysqlite would otherwise issue its own deferred BEGIN (only before DML) and COMMIT
        # before DDL; SQLAlchemy's "begin" hook below takes over.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _journal_mode_wal(cur, timeout)  # readers and one writer proceed together
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


#: Drivers a merx extra installs (a MissingExtra names it), and the packages of other drivers.
_DRIVER_EXTRAS = {"psycopg": "postgres"}
_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "pymysql": "pymysql", "mysqldb": "mysqlclient",
                    "asyncpg": "asyncpg"}


def _create(url: sa.URL, **kwargs) -> sa.Engine:
    """``sa.create_engine``, with a missing driver or an unknown database kind said plainly."""
    try:
        return sa.create_engine(url, **kwargs)
    except ImportError as exc:  # the driver module (psycopg, ...) is not installed
        shown = url.render_as_string(hide_password=True)
        driver = url.get_driver_name()
        if driver in _DRIVER_EXTRAS:
            raise MissingExtra(f"the results database {shown}", f"the Python driver {driver!r}",
                               _DRIVER_EXTRAS[driver]) from None
        package = _DRIVER_PACKAGES.get(driver, driver)
        raise StoreError(f"the results database {shown} needs the Python driver {url.get_driver_name()!r}, which "
                         f"is not installed ({exc}). Install it: pip install '{package}'") from None
    except sa.exc.NoSuchModuleError:
        shown = url.render_as_string(hide_password=True)
        raise StoreError(f"{shown}: SQLAlchemy knows no database kind {url.drivername!r}. Use a file path, "
                         "sqlite:///PATH or postgresql://USER@HOST/DATABASE.") from None


def _postgres_engine(url: sa.URL, busy_timeout: float) -> sa.Engine:
    """A PostgreSQL engine with the guarantees in this module's docstring."""
    if url.get_driver_name() != POSTGRES_DRIVER:
        # Other drivers work with SQLAlchemy, but merx sets its timeouts through psycopg's
        # connect arguments and tests psycopg only.
        raise StoreError(f"{url.render_as_string(hide_password=True)}: merx talks to PostgreSQL through psycopg "
                         f"3; write the URL as postgresql+psycopg://... (or postgresql://...), and pip install "
                         "'merx[postgres]'")
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT_S}
    engine = _create(url, isolation_level="READ COMMITTED", pool_pre_ping=True, connect_args=connect_args)
    # lock_timeout 0 means "wait for ever" to PostgreSQL; a busy timeout of 0 means "do not wait".
    lock_ms = max(1, round(busy_timeout * 1000))

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # READ COMMITTED: each statement sees what was committed before it began, so a write
        # that waited for a run's row lock then reads that run's latest state.
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {lock_ms}")

    return engine


def writing(conn: sa.Connection) -> bool:
    """Whether ``conn`` is in a write transaction (``ResultsDatabase._transaction(write=True)``)."""
    return conn.get_execution_options().get("merx_begin", "IMMEDIATE") == "IMMEDIATE"


def lock_run(query: sa.Select, conn: sa.Connection) -> sa.Select:
    """``query`` (of a run's row) locking that row when ``conn`` writes: on PostgreSQL writes to
    one run are serialised by it; SQLite, whose writes are serialised by ``BEGIN IMMEDIATE``,
    renders no ``FOR UPDATE``."""
    return query.with_for_update() if writing(conn) and conn.dialect.name != "sqlite" else query


def lock_schema(conn: sa.Connection) -> None:
    """Serialise schema changes between processes for the rest of ``conn``'s transaction.

    SQLite's ``BEGIN IMMEDIATE`` already does; PostgreSQL takes an advisory lock (released at
    commit or rollback), which the concurrent CREATE TABLEs of two processes would not."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))


def lock_new_runs(conn: sa.Connection) -> None:
    """Hold back other processes' new runs until ``conn``'s transaction ends (``merx db copy``
    choosing ids): SQLite's ``BEGIN IMMEDIATE`` already does; PostgreSQL locks the table
    against writes (readers go on), waiting at most the busy timeout."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE runs IN EXCLUSIVE MODE")


def highest_run_id(conn: sa.Connection) -> int:
    """The highest run id the database has ever handed out (0 for none): deleted runs count,
    since an id is never reused (SQLite's ``sqlite_sequence``, PostgreSQL's sequence)."""
    top = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM runs").scalar()
    if conn.dialect.name == "sqlite":
        seq = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'runs'").scalar()
    elif conn.dialect.name == "postgresql":
        name = conn.exec_driver_sql("SELECT pg_get_serial_sequence('runs', 'id')").scalar()
        last, called = conn.exec_driver_sql(f"SELECT last_value, is_called FROM {name}").one()
        seq = last if called else 0
    else:
        seq = 0
    return max(int(top), int(seq or 0))


def runs_inserted_with_ids(conn: sa.Connection) -> None:
    """After rows were inserted into ``runs`` with explicit ids: make the next new run's id come
    after them. SQLite's AUTOINCREMENT does it by itself; a PostgreSQL sequence does not."""
    if conn.dialect.name == "postgresql":
        name = conn.exec_driver_sql("SELECT pg_get_serial_sequence('runs', 'id')").scalar()
        # Never backwards: ids above max(id) may belong to deleted runs.
        conn.exec_driver_sql(f"SELECT setval('{name}', greatest((SELECT max(id) FROM runs), "
                             f"(SELECT last_value FROM {name})))")
