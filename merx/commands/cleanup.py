"""CLI commands that delete: ``rm`` (runs with their rows and files) and ``gc`` (files no run owns)."""

from __future__ import annotations

import click

from merx.commands.options import db_option
from merx.commands.output import console, plain


@click.command("rm")
@click.argument("run_ids", metavar="RUN...", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@db_option()
def rm_cmd(run_ids, yes, db):
    """Delete runs: their rows in the results database and every file they wrote.

    A run still running is refused (stop it first, or wait until merx runs shows it lost)."""
    from merx.store import RunStore, StoreError, format_run_id

    store = RunStore(db, write=True)
    runs = [store.get_run(r) for r in dict.fromkeys(run_ids)]  # an unknown id fails here, before asking
    running = [format_run_id(r["id"]) for r in runs if r["status"] == "running"]
    if running:
        raise StoreError(f"{', '.join(running)} is running; stop it first (Ctrl-C or kill), or wait until "
                         "merx runs shows it lost")
    out = console()
    for r in runs:
        listed = _listed(r)
        size = sum(_size(p) for p in listed)
        out.print(plain(f"{format_run_id(r['id'])} {r['experiment']} ({r['status']}, seed {r['seed']}): "
                        f"{len(r['epochs'])} epochs, {len(listed)} files, {_human(size)}"))
    if not yes:
        click.confirm(f"Delete {len(runs)} run(s) and their files from {store.location}?", abort=True)
    deleted = store.delete_runs([r["id"] for r in runs])  # rows first: a file left over is merx gc's
    for run_id, paths in deleted.items():
        files, size, foreign = _remove_run_files(store, run_id, paths)
        left = (f"; left {len(foreign)} file(s) in place that are not in this database's run folder "
                f"(a run copied by merx db copy lists its source's files): {', '.join(foreign)}") if foreign else ""
        out.print(plain(f"deleted {format_run_id(run_id)} ({files} files, {_human(size)}){left}"))


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@db_option()
def gc_cmd(dry_run, db):
    """Remove files no run owns: folders of deleted runs, and temporary files of checkpoint
    writes cut short (a killed process) in the folders of runs not running. Both this store's
    folder and, beside an SQLite file, the folder of runs recorded before it
    (``<database folder>/runs/<database stem>``) are looked through."""
    import shutil

    from merx.store import RunStore
    from merx.store.folders import legacy_store_folder, run_id_of_folder

    store = RunStore(db, write=not dry_run)
    out = console()
    legacy = legacy_store_folder(store.engine.url)
    roots = [r for r in (store.runs_dir, legacy) if r is not None and r.is_dir()]
    if not roots:
        out.print(plain(f"nothing to remove: {store.runs_dir} does not exist"))
        return
    ids = store.run_ids()
    live = {r["id"] for r in store.list_runs(status="running", limit=None)}
    removed, total = 0, 0
    for entry in sorted(e for root in roots for e in root.iterdir()):
        run_id = run_id_of_folder(entry.name)
        if run_id is None or not entry.is_dir():
            continue  # not merx's: left alone
        if run_id not in ids:
            size = _tree_size(entry)
            out.print(plain(f"{'would remove' if dry_run else 'removed'} {entry} (deleted run{run_id}, "
                            f"{_human(size)})"))
            if not dry_run:
                shutil.rmtree(entry, ignore_errors=True)
            removed, total = removed + 1, total + size
        elif run_id not in live:
            for stray in entry.glob(".*.tmp"):
                size = _size(stray)
                out.print(plain(f"{'would remove' if dry_run else 'removed'} {stray} (an unfinished write)"))
                if not dry_run:
                    stray.unlink(missing_ok=True)
                removed, total = removed + 1, total + size
    verb = "would free" if dry_run else "freed"
    out.print(plain(f"{removed} item(s), {verb} {_human(total)} in {' and '.join(map(str, roots))}"))


def _remove_run_files(store, run_id: int, paths: list[str]) -> tuple[int, int, list[str]]:
    """Delete a deleted run's listed files (artifacts, and the recorded checkpoint of a run from
    before artifacts were listed), then its folders with anything else in them; how many listed
    files were removed, their bytes, and the listed files left alone because they are not in a
    folder of this store's own (``merx.store.folders.owns_run_folder``): a run copied from another
    database (``merx db copy``) lists that database's files, which deleting the copy must not touch."""
    import shutil
    from pathlib import Path

    from merx.store.folders import legacy_run_folder, owns_run_folder

    files, size, foreign = 0, 0, []
    folders = {store.run_folder(run_id), legacy_run_folder(store.engine.url, run_id)} - {None}
    for p in dict.fromkeys(Path(p).resolve() for p in paths):
        if not owns_run_folder(store, run_id, p.parent):
            foreign.append(str(p))
            continue
        folders.add(p.parent)
        if p.is_file():
            size += _size(p)
            p.unlink(missing_ok=True)
            files += 1
    for folder in folders:
        if owns_run_folder(store, run_id, folder) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    return files, size, foreign


def _listed(run: dict) -> list[str]:
    """A run's files as ``delete_runs`` returns them: its artifacts, and its recorded checkpoint
    (all a run recorded before artifacts were listed names)."""
    paths = [a["path"] for a in run["artifacts"]]
    if run.get("checkpoint_path") and run["checkpoint_path"] not in paths:
        paths.append(run["checkpoint_path"])
    return paths


def _size(path) -> int:
    import os

    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _tree_size(folder) -> int:
    return sum(_size(p) for p in folder.rglob("*") if p.is_file())


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def attach(cli) -> None:
    cli.add_command(rm_cmd)
    cli.add_command(gc_cmd)
