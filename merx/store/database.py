"""An open results database: its engine, its schema brought up to date, and transactions whose
failures reach the caller as the ``StoreError`` that names the file and the fix.

``ResultsDatabase`` is the part of ``RunStore`` that knows nothing of runs: ``RunStore`` adds
what merx records. Opening a database whose schema is up to date is a read, so the commands
that only read never wait for a lock held elsewhere (``merx.store.engine``: reads begin
``DEFERRED``, writes ``IMMEDIATE``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import sqlalchemy as sa

from merx.store import faults
from merx.store import schema as t
from merx.store.engine import create_store_engine, resolve_busy_timeout, resolve_url, sqlite_file
from merx.store.errors import StoreError
from merx.store.migrations import migrate, migrations_table, missing_migrations
from merx.store.times import iso, now


class ResultsDatabase:
    """Opens ``url_or_path`` (``merx.store.engine.resolve_url``) and migrates it (``upgraded``
    names the migrations applied; with ``upgrade=False`` nothing is changed and ``missing``
    names the migrations it lacks); ``write=True`` also runs ``check_writable``.
    ``busy_timeout``: seconds a write waits for another process's lock (default
    ``$MERX_DB_BUSY_TIMEOUT`` or 30)."""

    def __init__(self, url_or_path: str | os.PathLike | None = None, *, write: bool = False,
                 busy_timeout: float | None = None, upgrade: bool = True):
        self.url = resolve_url(url_or_path)
        self.busy_timeout = resolve_busy_timeout(busy_timeout)
        self.engine = create_store_engine(self.url, self.busy_timeout)
        self._reader = self.engine.execution_options(merx_begin="DEFERRED")
        self._path = sqlite_file(self.engine.url)
        try:
            try:
                with self._faults():
                    if upgrade:
                        self.upgraded, self.missing = migrate(self.engine, where=self.location), []
                    else:  # look only (merx db copy): a schema from a newer merx still raises
                        self.upgraded, self.missing = [], missing_migrations(self.engine, where=self.location)
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
        # Unquoted: a socket folder reads host=/run/postgresql, not host=%2Frun%2Fpostgresql.
        return unquote(url.render_as_string(hide_password=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def close(self) -> None:
        """Release the database connections."""
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
            conn.execute(sa.insert(migrations_table).values(name="merx write check", applied_at=iso(now())))
            trans.rollback()

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
