"""Checkpoints written so that the file at a checkpoint's path is always whole, and disk-full errors.

A checkpoint goes to a temporary file in the same folder, is flushed and fsynced, then
``os.replace`` puts it in place (an atomic rename on one file system). A write that fails (the
disk full, a file-size limit, Ctrl-C, SIGTERM) removes the temporary file, so neither a
truncated ``best.pt`` nor a stray temporary file is left for anyone to load.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from merx.errors import DiskFull

#: errnos meaning "no room": a full disk, a file-size limit (RLIMIT_FSIZE), a disk quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def no_space(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` in ``exc``'s chain (``exc``, its cause, its context, ...) that says the
    write failed for want of room, or None. torch reports a failed write as a RuntimeError of its
    own; the OSError of the file object it wrote to is in that error's context."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full(error: OSError, path: str | os.PathLike | None = None) -> DiskFull:
    """The :class:`~merx.errors.DiskFull` for ``error``, naming ``path`` (else the error's file)."""
    where = path if path is not None else (error.filename or "a file this run writes")
    if error.errno == errno.EFBIG:
        hint = ("a file reached this process's file size limit (ulimit -f, RLIMIT_FSIZE): raise it, "
                "or write elsewhere, and run again")
    else:
        hint = "free space on that file system (df -h), or write elsewhere, and run again"
    return DiskFull(where, hint=hint)


@contextlib.contextmanager
def disk_full_named():
    """Within the block, an error saying the disk is full (or a file-size limit was reached)
    becomes one :class:`~merx.errors.DiskFull` naming the file, whatever raised it."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        full = no_space(exc)
        if full is None:
            raise
        raise disk_full(full) from exc


class _Sink:
    """The file torch writes to, remembering the first OSError: torch replaces it by its own error."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        self.fh.flush()


def save_checkpoint(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically and durably; returns ``path``.

    Raises :class:`~merx.errors.DiskFull` naming ``path`` when the disk is full or a file-size
    limit is reached; any failure leaves whatever was at ``path`` before untouched."""
    import torch

    path = Path(path)
    sink = None
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            sink = _Sink(fh)
            torch.save(obj, sink)
            fh.flush()
            # Before the rename: otherwise a power cut could leave the new name on empty data.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        full = no_space(sink.error if sink is not None else None) or no_space(exc)
        if full is not None:
            raise disk_full(full, path) from exc
        raise
    return path


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder is; not every system can sync a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
