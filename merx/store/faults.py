"""How a failing database reaches the user: one ``StoreError`` naming the file, the cause and the fix.

SQLAlchemy raises ``DBAPIError`` subclasses wrapping the driver's exception; for SQLite its
result code (``sqlite_errorcode``, Python 3.11+; the message text before that) says which failure
it is, for PostgreSQL the SQLSTATE (psycopg's ``sqlstate``) or, for a connection that never
opened, libpq's message. Only failures of the database itself are translated; anything else (a constraint, bad
SQL) is a bug in merx or its caller and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import sqlalchemy as sa

from merx.errors import StoreError
from merx.store.engine import ENV_BUSY_TIMEOUT
from merx.store.errors import StoreCorrupt, StoreFull, StoreLocked, StoreReadOnly, StoreUnreachable

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_ERROR, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 1, 5, 6, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
SQLITE_READONLY_DIRECTORY = SQLITE_READONLY | (6 << 8)

# sqlite3_errstr() texts, for Pythons whose sqlite3 exceptions carry no code.
_MESSAGES = {
    "database is locked": SQLITE_BUSY, "database table is locked": SQLITE_LOCKED,
    "attempt to write a readonly database": SQLITE_READONLY, "disk I/O error": SQLITE_IOERR,
    "database disk image is malformed": SQLITE_CORRUPT, "database or disk is full": SQLITE_FULL,
    "unable to open database file": SQLITE_CANTOPEN, "file is not a database": SQLITE_NOTADB,
}
_MISSING = re.compile(r"no such (table|column): (\S+)")
_SQLITE_HEADER = b"SQLite format 3\x00"
# A disk with less than this free after a failed write is taken to be the reason it failed.
_LOW_SPACE = 8 << 20


def sqlite_code(exc: BaseException) -> int | None:
    """The (extended) SQLite result code of a driver exception, or None when it is not SQLite's."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code
    if type(orig).__module__ != "sqlite3":
        return None
    return next((c for text, c in _MESSAGES.items() if text in str(orig)), None)


def translate(exc: sa.exc.DBAPIError, location: str, path: Path | None, busy_timeout: float) -> StoreError | None:
    """The ``StoreError`` for ``exc``, or None when ``exc`` is not a failure of the database.

    ``location`` names the database in messages; ``path`` is its file (None for a server)."""
    orig = exc.orig
    code = sqlite_code(exc)
    if code is None:
        if _is_postgres(exc):
            return postgres(exc, location, busy_timeout)
        if path is None and isinstance(exc, sa.exc.OperationalError):  # another server: down, refused, ...
            return StoreError(f"the results database {location} failed: {orig}".strip())
        return None
    primary = code & 0xFF
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreLocked(
            f"the results database {location} is locked: another process held its write lock for more than "
            f"{busy_timeout:g} s (another merx writing, or a sqlite3 shell with an open transaction). "
            f"Try again when it is done, or wait longer: {ENV_BUSY_TIMEOUT}=SECONDS.")
    if path is not None and (code == SQLITE_READONLY_DIRECTORY
                             or (primary == SQLITE_CANTOPEN and not path.is_dir() and _read_only_folder(path))):
        # EACCES on creating the -wal file reads as READONLY_DIRECTORY, EPERM (an immutable
        # folder) or EROFS as CANTOPEN.
        if not path.exists():
            return StoreReadOnly(f"cannot create the results database {location}: its folder {path.parent} is "
                                 "read-only. Choose another with --db PATH (or MERX_DB).")
        return StoreReadOnly(
            f"cannot use the results database {location}: its folder {path.parent} is read-only, and SQLite "
            f"must create {path.name}-wal and {path.name}-shm beside the database, even to read it. "
            "Make the folder writable, or choose another database with --db PATH (or MERX_DB).")
    if primary == SQLITE_READONLY:
        return StoreReadOnly(
            f"cannot write the results database {location}: it is read-only for this process ({orig}). Make it "
            "writable (chmod u+w; chattr -i if it is immutable; a read-only mount cannot be), or choose another "
            "database with --db PATH (or MERX_DB).")
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        if path is not None and primary == SQLITE_NOTADB and not _has_sqlite_header(path):
            return StoreCorrupt(
                f"cannot open the results database {location}: it is not an SQLite database (it lacks the "
                "SQLite header). Choose another with --db PATH (or MERX_DB).")
        return damaged(location, path, str(orig))
    if primary == SQLITE_ERROR:
        missing = _MISSING.search(str(orig))
        return None if missing is None else lacking(location, f"{missing.group(1)} {missing.group(2)}")
    if primary in (SQLITE_FULL, SQLITE_IOERR):
        why = _space_problem(path) if path is not None else None
        if primary == SQLITE_FULL or why is not None:
            return StoreFull(
                f"no space left on device for the results database {location} ({why or orig}). The failed write "
                "was rolled back and what was recorded before it is intact; "
                f"{'raise the limit' if why and 'RLIMIT_FSIZE' in why else 'free space'} and run again.")
        return StoreError(f"reading or writing the results database {location} failed ({orig}): check the "
                          "disk (free space, dmesg) and try again.")
    if primary == SQLITE_CANTOPEN:
        if path is not None and path.is_dir():
            return StoreError(f"cannot open the results database {location}: it is a folder, not a file. "
                              "Name a file with --db PATH (or MERX_DB).")
        return StoreError(f"cannot open the results database {location} ({orig}): check the path, and that this "
                          "process may read it and create files in its folder. Choose another with --db PATH "
                          "(or MERX_DB).")
    return StoreError(f"the results database {location} failed: {orig}")


def damaged(location: str, path: Path | None, detail: str) -> StoreCorrupt:
    """Damaged pages: say so, and how to salvage what is readable."""
    # quick_check's report spans lines and starts with "*** in database main ***".
    detail = "; ".join(line for line in detail.replace("*** in database main ***", "").splitlines() if line.strip())
    if path is None:
        return StoreCorrupt(f"the results database {location} is damaged ({detail}). Restore it from a backup.")
    recovered = shlex.quote(str(path.with_name(f"{path.stem}-recovered{path.suffix or '.db'}")))
    return StoreCorrupt(
        f"the results database {location} is damaged ({detail}). Recover what is readable into a new file: "
        f"sqlite3 {shlex.quote(location)} \".recover\" | sqlite3 {recovered}, then use --db {recovered}; "
        "or restore a backup.")


def lacking(location: str, what: str) -> StoreCorrupt:
    """A table (or column) the migrations created is gone: a backup can bring it back, .recover cannot."""
    where = shlex.quote(location)
    return StoreCorrupt(
        f"the results database {location} lacks the {what} (dropped by hand?) although its migrations created "
        f"it. Restore {where} from a backup: sqlite3 {where} \".recover\" salvages damaged pages but cannot "
        "bring back a dropped table.")


def _read_only_folder(path: Path) -> bool:
    # access(2) honours read-only mounts and immutable folders for root too.
    return not os.access(path.parent, os.W_OK | os.X_OK)


def _has_sqlite_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return True  # unreadable: the header is not what SQLite complained about


def _space_problem(path: Path) -> str | None:
    """Why writing ``path`` (or its ``-wal``/``-journal``) ran out of room, when that is what happened.

    SQLite reports ENOSPC as "database or disk is full" but EFBIG (a file-size limit) and some
    full disks only as "disk I/O error"; Python does not expose the errno, so look."""
    try:
        import resource
    except ImportError:  # Windows
        resource = None
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            for f in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
                # A page write (64 KiB at most) that would cross the limit is refused.
                if f.exists() and f.stat().st_size + (64 << 10) > limit:
                    return f"{f.name} reached this process's file size limit, RLIMIT_FSIZE = {limit} bytes (ulimit -f)"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    if free < _LOW_SPACE:
        return f"{free:,} bytes free on the file system of {path.parent}"
    return None


# -- a PostgreSQL server ----------------------------------------------------------------------

# SQLSTATEs (PostgreSQL's appendix A) of the failures that are the database's, not merx's.
_PG_LOCKED = {"55P03": "lock_timeout", "40P01": "deadlock", "40001": "serialization failure"}
_PG_READ_ONLY = {"25006", "42501"}  # read_only_sql_transaction (a standby), insufficient_privilege
_PG_FULL = {"53100"}  # disk_full
_PG_MISSING = {"42P01", "42703"}  # undefined_table, undefined_column
_PG_CORRUPT = {"XX001", "XX002"}  # data_corrupted, index_corrupted
# libpq's words for a server that is not there (now, at least): down, restarting, unreachable.
_PG_GONE = re.compile(
    r"Connection refused|No such file or directory|timeout expired|could not translate host name|"
    r"Name or service not known|Network is unreachable|No route to host|server closed the connection|"
    r"terminating connection|connection is (bad|closed|lost)|the database system is (starting up|shutting down)",
    re.I)
# libpq's words for a connection that could not be made: what they mean, and the fix.
_PG_CONNECT = (
    (re.compile(r"password authentication failed|no password supplied|role .* does not exist|no pg_hba\.conf entry|"
                r"(peer|ident|gss|sspi|certificate) authentication failed", re.I),
     "the server refused the login", "check the user and password in the URL "
     "(postgresql://USER:PASSWORD@HOST/DATABASE, or PGPASSWORD / ~/.pgpass) and that pg_hba.conf admits them"),
    (re.compile(r'database ".*" does not exist', re.I),
     "the database does not exist on that server", "create it (createdb NAME, or CREATE DATABASE) or fix the URL"),
    (_PG_GONE, "the server cannot be reached",
     "start the server, or check the host, port and socket folder in the URL"),
)


def _is_postgres(exc: sa.exc.DBAPIError) -> bool:
    return type(exc.orig).__module__.split(".")[0] in ("psycopg", "psycopg2")


def postgres(exc: sa.exc.DBAPIError, location: str, busy_timeout: float) -> StoreError | None:
    """The ``StoreError`` for a PostgreSQL failure, or None when it is merx's own (a constraint, bad SQL)."""
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if state in _PG_LOCKED:
        return StoreLocked(
            f"the results database {location} is locked: a lock held by another connection was not released "
            f"within {busy_timeout:g} s ({_PG_LOCKED[state]}: another merx writing the same run, or an open "
            f"transaction in a psql shell). Try again when it is done, or wait longer: {ENV_BUSY_TIMEOUT}=SECONDS.")
    if state in _PG_READ_ONLY:
        return StoreReadOnly(
            f"cannot write the results database {location}: {first}. Connect as a user allowed to create tables "
            "and write rows there (GRANT ... or the database's owner), or to the primary rather than a standby; "
            "or choose another database with --db (or MERX_DB).")
    if state in _PG_FULL:
        return StoreFull(f"the PostgreSQL server of {location} has no space left ({first}). The failed write was "
                         "rolled back and what was recorded before it is intact; free space on the server.")
    if state in _PG_MISSING:
        return StoreCorrupt(f"the results database {location} lacks what its migrations created ({first}; dropped "
                            "by hand?). Restore it from a backup (pg_dump / pg_restore).")
    if state == "22001":  # string_data_right_truncation: SQLite would have taken it
        return StoreError(f"the results database {location} refused a value: {first}. PostgreSQL enforces the "
                          "column lengths of merx/store/schema.py (SQLite does not): shorten it (an experiment "
                          "name, a song id, a plugin or metric name).")
    if state in _PG_CORRUPT:
        return StoreCorrupt(f"the results database {location} is damaged ({first}). Restore it from a backup.")
    if state is None or state.startswith(("08", "57P", "53")) or state.startswith("28") or state == "3D000":
        text = str(orig)
        for pattern, what, fix in _PG_CONNECT:
            if pattern.search(text):
                # A server that went away may come back: a run's epochs wait for it, as for a lock.
                error = StoreUnreachable if pattern is _PG_GONE else StoreError
                return error(f"cannot use the results database {location}: {what} ({_one_line(text)}). "
                             f"Fix: {fix}; or choose another database with --db (or MERX_DB).")
        if isinstance(exc, sa.exc.OperationalError) or state is not None:
            return StoreError(f"the results database {location} failed: {_one_line(text)}. Check that the server "
                              "is running and reachable, then try again.")
    return None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).split("\n") if part.strip())
