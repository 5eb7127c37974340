"""CLI command: ``merx prepare`` (the data and feature stages alone)."""

from __future__ import annotations

import click

from merx.commands.options import experiment_argument, set_option
from merx.commands.output import console, plain, print_truth_and_notes


@click.command("prepare")
@experiment_argument()
@set_option()
def prepare_cmd(file, sets):
    """Run the data and feature stages of FILE alone: songs, failures, cached features."""
    from merx.commands.plan import load_config
    from merx.interrupts import interrupted_error
    from merx.pipeline import prepare

    cfg = load_config(file, sets)
    out = console()
    try:
        prepared = prepare(cfg, progress=True)
    except KeyboardInterrupt as exc:
        # prepare records no run; what it finished is in the feature cache and is not redone.
        raise interrupted_error(exc, "", "nothing is recorded; the features already extracted stay cached, "
                                         "so running the command again goes on from there") from None
    _print_prepared(out, cfg, prepared)


def _print_prepared(out, cfg, prepared) -> None:
    from rich.table import Table
    from rich.text import Text

    from merx.data.songs import QUADRANTS

    counts = prepared.table.counts()
    t = Table(title=plain(f"{cfg['name']}: songs per split and quadrant"), title_justify="left")
    t.add_column("split")
    for q in QUADRANTS:
        t.add_column(q, justify="right")
    t.add_column("total", justify="right", style="bold")
    for split, row in counts.items():
        t.add_row(plain(split), *(str(row[q]) for q in QUADRANTS), str(sum(row.values())))
    out.print(t)
    fs = prepared.features
    if fs is not None:
        out.print(f"features: {fs.computed} computed, {fs.hits} from cache "
                  f"({prepared.timings['feature_seconds']:.1f} s); dB reference power {prepared.ref_power:g}")
    notes = {kind: [sid for sid, _ in songs] for kind, songs in prepared.table.notes().items()}
    print_truth_and_notes(out, cfg["task"], notes)
    for w in prepared.overlap_warnings:
        out.print(Text.assemble(("warning: ", "yellow"), plain(w)))
    fails = prepared.table.failures
    if fails:
        ft = Table(title=f"{len(fails)} songs could not be used", title_justify="left", title_style="yellow")
        for col in ("song", "stage", "reason"):
            ft.add_column(col)
        for f in fails:
            ft.add_row(plain(f.song_id), plain(f.stage), plain(f.reason))
        out.print(ft)
    else:
        out.print("no failures")


def attach(cli) -> None:
    cli.add_command(prepare_cmd)
