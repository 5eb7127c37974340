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
        size = sum(_size(a["path"]) for a in r["artifacts"])
        out.print(plain(f"{format_run_id(r['id'])} {r['experiment']} ({r['status']}, seed {r['seed']}): "
                        f"{len(r['epochs'])} epochs, {len(r['artifacts'])} files, {_human(size)}"))
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
    writes cut short (a killed process) in the folders of runs not running."""
    import shutil

    from merx.store import RunStore
    from merx.store.folders import run_id_of_folder

    store = RunStore(db, write=not dry_run)
    out = console()
    root = store.runs_dir
    if not root.is_dir():
        out.print(plain(f"nothing to remove: {root} does not exist"))
        return
    ids = store.run_ids()
    live = {r["id"] for r in store.list_runs(status="running", limit=None)}
    removed, total = 0, 0
    for entry in sorted(root.iterdir()):
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
    out.print(plain(f"{removed} item(s), {verb} {_human(total)} in {root}"))


def _remove_run_files(store, run_id: int, paths: list[str]) -> tuple[int, int, list[str]]:
    """Delete a deleted run's listed files, then its folders (named ``run<id>``) with anything
    else in them; how many listed files were removed, their bytes, and the listed files left
    alone because they are not in a ``run<id>`` folder of this store's own folder (named after
    the database, whatever the runs root): a run copied from another database (``merx db
    copy``) lists that database's files, which deleting the copy must not touch."""
    import shutil
    from pathlib import Path

    from merx.store.folders import run_folder_name

    files, size, foreign = 0, 0, []
    folders = {store.run_folder(run_id)}
    for p in map(Path, paths):
        if p.parent.name != run_folder_name(run_id) or p.parent.parent.name != store.runs_dir.name:
            foreign.append(str(p))
            continue
        folders.add(p.parent)
        if p.is_file():
            size += _size(p)
            p.unlink(missing_ok=True)
            files += 1
    for folder in folders:
        if folder.name == run_folder_name(run_id) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    return files, size, foreign


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
