"""Where a store's runs keep their files: one folder per store, one ``run<id>`` folder per run.

The root is ``runs_dir`` (a ``RunStore`` argument), else ``$MERX_RUNS_DIR``, else ``runs``
beside an SQLite database file (so the database and its runs' files move together), else
``runs`` in the working directory (a database server has no folder). Under the root each store
has its own folder, named after the database and a hash of where it is
(``results-3fa9c2d1``): two databases, even two ``results.db`` in different folders sharing one
``$MERX_RUNS_DIR``, can never write into each other's ``run12``.

Runs recorded before that layout (and before files were listed in ``artifacts``) wrote into
``<database folder>/runs/<database stem>/run<id>`` beside an SQLite file (:func:`legacy_run_folder`);
``merx rm`` and ``merx gc`` remove those folders too, and :func:`owns_run_folder` is the one check of
whether a folder is a store's own for a run, whichever layout.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import sqlalchemy as sa

from merx.store.engine import sqlite_file

ENV_RUNS_DIR = "MERX_RUNS_DIR"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def store_folder(url: sa.URL, runs_dir: str | os.PathLike | None = None) -> Path:
    """The absolute folder holding the run folders of the database at ``url``."""
    path = sqlite_file(url)
    root = runs_dir or os.environ.get(ENV_RUNS_DIR) or None
    if path is not None:
        identity = str(path.resolve())
        name = path.stem
        root = Path(root) if root else path.resolve().parent / "runs"
    else:
        identity = url.render_as_string(hide_password=True)
        name = url.database or url.get_backend_name()
        root = Path(root) if root else Path.cwd() / "runs"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    name = _UNSAFE.sub("_", Path(str(name)).name).strip("._") or "store"
    return root.expanduser().resolve() / f"{name}-{digest}"


def run_folder_name(run_id: int) -> str:
    return f"run{int(run_id)}"


def run_id_of_folder(name: str) -> int | None:
    """The run id a folder named ``run<id>`` belongs to; None for any other name."""
    m = re.fullmatch(r"run([1-9]\d*)", name)
    return int(m.group(1)) if m else None


def legacy_run_folder(url: sa.URL, run_id: int) -> Path | None:
    """Where merx put run ``run_id``'s files before store folders had a hash:
    ``<database folder>/runs/<database stem>/run<id>`` beside an SQLite file; None for a server
    (its old folder was under whichever working directory ran it, so no path is known to be its own)."""
    root = legacy_store_folder(url)
    return None if root is None else root / run_folder_name(run_id)


def legacy_store_folder(url: sa.URL) -> Path | None:
    """The folder holding an SQLite store's run folders in the old layout (:func:`legacy_run_folder`)."""
    path = sqlite_file(url)
    return None if path is None else path.resolve().parent / "runs" / path.stem


def owns_run_folder(store, run_id: int, folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is run ``run_id``'s folder in ``store``'s own folder, under any runs root
    (the root may have moved since the run wrote there), or its old-layout folder beside the
    database. A run copied from another database (``merx db copy``) names that database's
    folders: not its own, so nothing of this store writes or deletes there."""
    folder = Path(folder)
    if folder.name != run_folder_name(run_id):
        return False
    if folder.parent.name == store.runs_dir.name:
        return True
    return folder.resolve() == legacy_run_folder(store.engine.url, run_id)
