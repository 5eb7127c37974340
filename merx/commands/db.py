"""``merx db``: commands on results databases as a whole (``db copy``)."""

from __future__ import annotations

import click

from merx.commands.output import clean


@click.group("db")
def db_group():
    """Results databases as a whole: copy runs between SQLite files and PostgreSQL servers."""


@db_group.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("dest", metavar="DST")
@click.argument("runs", nargs=-1, metavar="[RUN]...")
def copy_cmd(source, dest, runs):
    """Copy runs (all, or the RUNs named) from SRC to DST, each a file path or a database URL
    (postgresql://USER@HOST/DB), with their epochs, metrics, predictions, failures, plugins,
    data notes, baselines and artifact records; files are not copied.

    A new DST is created. Run ids are kept when DST has never used them (a new database);
    otherwise the copies get DST's next ids, and the mapping is printed. A run copied before is
    skipped. Both databases must have this merx's schema: neither is upgraded by a copy."""
    from merx.store.copy import copy_runs

    report = copy_runs(source, dest, runs or None)
    dest_name = clean(report.dest)
    for r in report.runs:
        if not r.copied:
            click.echo(f"run{r.source_id} is already in {dest_name} as run{r.dest_id}: skipped")
        elif r.source_id != r.dest_id:
            click.echo(f"run{r.source_id} -> run{r.dest_id}")
        if r.copied and r.status == "running":
            click.echo(f"run{r.source_id} is recorded running: copied as it stands; what its process writes "
                       "from now on goes to the source only")
    copied = report.copied
    if not copied:
        click.echo(f"nothing copied into {dest_name}")
    else:
        same = all(r.source_id == r.dest_id for r in copied)
        click.echo(f"copied {len(copied)} run(s) from {clean(report.source)} into {dest_name}"
                   + (" under the same ids" if same else " under new ids (above)"))


def attach(cli) -> None:
    cli.add_command(db_group)
