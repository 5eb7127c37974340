"""Schema migrations: small named functions, applied in order, each exactly once.

The ``migrations`` table records the name of every function applied (and when). Opening a
database applies the missing ones, so an older database is upgraded in place; a database that
records a migration this merx does not know was written by a newer merx and is refused
(``SchemaTooNew``) rather than misread. Whether any are missing is checked in a read
transaction, so opening an up-to-date database never waits for another process's write lock
(``merx runs`` while a run commits an epoch, or a sqlite3 shell holds a transaction). Applying
them happens in one write transaction (``BEGIN IMMEDIATE`` on SQLite) that checks again: two
processes opening a new file at once cannot both migrate it (on PostgreSQL an advisory lock
does what ``BEGIN IMMEDIATE`` does; every migration must run there too, and DDL is
transactional there: a failing migration leaves nothing behind).

To change the schema: append a new function decorated with ``@migration``, never edit or
reorder an applied one. ``m001_initial`` creates the tables of ``schema.INITIAL_TABLES``; a new
table is added to ``schema.py`` and created by its own migration. Before the first change to a
table of m001, copy that table's original definition into ``m001_initial`` so that a fresh
database still goes through every step (the test comparing the migrated
schema with ``schema.py`` catches a forgotten step).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa

from merx.store import schema
from merx.store.engine import lock_schema
from merx.store.errors import SchemaTooNew

Migration = Callable[[sa.Connection], None]

#: Every migration, in the order they are applied.
MIGRATIONS: list[Migration] = []

migrations_table = sa.Table(
    "migrations", sa.MetaData(),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("applied_at", sa.String(40), nullable=False),
)


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its ``__name__`` is what the database records."""
    MIGRATIONS.append(fn)
    return fn


def _runs_as_m001_created_it() -> sa.Table:
    """``runs`` as m001 created it (m004 added host, pid and heartbeat_at): a copy, so that a
    later change to ``schema.runs`` never changes what m001 does."""
    key = sa.String(200)
    return sa.Table(
        "runs", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment", key, nullable=False),
        sa.Column("experiment_file", sa.Text),
        sa.Column("description", sa.Text, nullable=False, default=""),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("group_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer),
        sa.Column("task", sa.String(40)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("ended_at", sa.String(40)),
        sa.Column("wall_seconds", sa.Double),
        sa.Column("device", sa.String(40)),
        sa.Column("versions_json", sa.Text),
        sa.Column("git_commit", sa.String(80)),
        sa.Column("checkpoint_path", sa.Text),
        sa.Column("best_epoch", sa.Integer),
        sa.Column("epochs_run", sa.Integer),
        sa.Column("tags_json", sa.Text),
        sa.Column("note", sa.Text),
        sqlite_autoincrement=True,
    )


@migration
def m001_initial(conn: sa.Connection) -> None:
    _runs_as_m001_created_it().create(conn)
    schema.metadata.create_all(conn, tables=[t for t in schema.INITIAL_TABLES if t is not schema.runs])


@migration
def m002_run_lookup_indexes(conn: sa.Connection) -> None:
    # Plain DDL, not sa.Index objects: those would attach to schema.metadata, and a later
    # m001 (on another fresh database) would then create them before this step runs.
    for column in ("experiment", "group_hash", "config_hash"):
        conn.exec_driver_sql(f"CREATE INDEX ix_runs_{column} ON runs ({column})")


@migration
def m003_data_notes(conn: sa.Connection) -> None:
    schema.data_notes.create(conn)


@migration
def m004_liveness(conn: sa.Connection) -> None:
    # Plain ALTER TABLE (SQLite and PostgreSQL alike), each type spelled by the connection's dialect.
    for name in schema.RUNS_M004_COLUMNS:
        column = schema.runs.c[name]
        conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {name} {column.type.compile(dialect=conn.dialect)}")
    # Finding running (possibly lost) runs without reading every run.
    conn.exec_driver_sql("CREATE INDEX ix_runs_status ON runs (status)")


def applied_migrations(conn: sa.Connection) -> list[str]:
    """Names of the migrations recorded in the database, oldest first ([] for a new database)."""
    if not sa.inspect(conn).has_table("migrations"):
        return []
    q = sa.select(migrations_table.c.name).order_by(migrations_table.c.applied_at, migrations_table.c.name)
    return list(conn.execute(q).scalars())


def pending_migrations(conn: sa.Connection, migrations: list[Migration], where: str) -> list[Migration]:
    """The migrations not yet applied, in order; ``SchemaTooNew`` when the database records unknown ones."""
    known = [fn.__name__ for fn in migrations]
    applied = applied_migrations(conn)
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise SchemaTooNew(
            f"{where} was written by a newer merx: it records schema migrations this merx does not "
            f"know ({', '.join(unknown)}; this merx knows {len(known)}, up to {known[-1]}). "
            "Upgrade merx, or choose another database with --db PATH (or MERX_DB).")
    return [fn for fn in migrations if fn.__name__ not in applied]


def migrate(engine: sa.Engine, migrations: list[Migration] | None = None, where: str = "the database") -> list[str]:
    """Bring the database up to date; returns the names of the migrations applied now.

    ``migrations`` defaults to ``MIGRATIONS`` (tests pass a prefix to build an older database);
    ``where`` names the database in error messages."""
    migrations = MIGRATIONS if migrations is None else migrations
    # merx_begin: see merx.store.engine.create_store_engine; other engines ignore it.
    with engine.execution_options(merx_begin="DEFERRED").begin() as conn:
        if not pending_migrations(conn, migrations, where):
            return []
    with engine.begin() as conn:
        lock_schema(conn)  # PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE has it already
        migrations_table.create(conn, checkfirst=True)
        done = []
        for fn in pending_migrations(conn, migrations, where):  # again: another process may have migrated
            fn(conn)
            conn.execute(sa.insert(migrations_table).values(
                name=fn.__name__, applied_at=datetime.now(timezone.utc).isoformat(timespec="microseconds")))
            done.append(fn.__name__)
    return done


def missing_migrations(engine: sa.Engine, where: str = "the database") -> list[str]:
    """Names of this merx's migrations the database lacks (all of them for a new database),
    changing nothing; ``SchemaTooNew`` when it records migrations this merx does not know."""
    with engine.execution_options(merx_begin="DEFERRED").begin() as conn:
        return [fn.__name__ for fn in pending_migrations(conn, MIGRATIONS, where)]
