"""How a failing database reaches the user: one ``StoreError`` naming the file, the cause and the fix.

SQLAlchemy raises ``DBAPIError`` subclasses wrapping the driver's exception; for SQLite its
result code (``sqlite_errorcode``, Python 3.11+; the message text before that) says which failure
it is. Only failures of the database itself are translated; anything else (a constraint, bad
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
from merx.store.errors import StoreCorrupt, StoreFull, StoreLocked, StoreReadOnly

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
        if path is None and isinstance(exc, sa.exc.OperationalError):  # a server: down, refused, ...
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
