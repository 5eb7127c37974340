"""``merx model export``: a completed run's model as a portable folder (``merx predict`` reads it)."""

from __future__ import annotations

import click

from merx.commands.options import db_option, strict_option
from merx.commands.output import clean


@click.group("model")
def model_group():
    """Trained models as portable folders."""


@model_group.command("export")
@click.argument("run_id", metavar="RUN")
@click.option("--model-dir", required=True, metavar="DIR", help="The folder to write (new or empty).")
@strict_option()
@db_option()
def export_cmd(run_id, model_dir, strict, db):
    """Write a completed run's model as a self-contained folder: config, safetensors weights,
    feature parameters with the dB reference, plugins with versions, and a model card (README.md).

    merx predict DIR ... uses it on any machine with merx and the same plugins installed."""
    from merx.inference import export_model
    from merx.store import RunStore

    folder = export_model(RunStore(db), run_id, model_dir, strict=strict)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    click.echo(clean(f"wrote {folder} ({size / 1e6:.1f} MB): merx predict {folder} AUDIO... ; model card "
                     f"{folder / 'README.md'}"))


def attach(cli) -> None:
    cli.add_command(model_group)
