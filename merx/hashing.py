"""Content hashes of files, remembered per (path, size, mtime) within a process."""

from __future__ import annotations

import hashlib
import os

_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes (hex). Cache keys and the split-overlap check use it."""
    path = os.fspath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    hit = _memo.get(key)
    if hit is None:
        h = hashlib.sha1()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        hit = _memo[key] = h.hexdigest()
    return hit


def text_digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
