"""``merx predict``: a trained run or an exported model folder on new songs (``merx model export``
writes such a folder: ``merx.commands.model``)."""

from __future__ import annotations

import sys

import click

from merx.commands.options import db_option, json_option, strict_option
from merx.commands.output import clean, console, plain
from merx.errors import UsageError


def _windows(ctx, param, value):
    if value is None or value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r}: give a number of windows (1 or more) or 'all'")
    return n


@click.command("predict")
@click.argument("source", metavar="RUN|MODEL_DIR")
@click.argument("paths", nargs=-1, metavar="AUDIO...")
@click.option("--lyrics", "lyrics", multiple=True, metavar="FILE",
              help="The lyrics of the audio file in the same position (repeat once per audio file).")
@click.option("--lyrics-dir", metavar="DIR", help="Lyrics as DIR/<audio file name without extension>.txt.")
@click.option("--songs", "songs_csv", metavar="CSV", help="A CSV with columns audio, lyrics (and optionally id).")
@click.option("--windows", callback=_windows, metavar="N|all",
              help="Score N evenly spaced windows of the trained duration (all: cover the whole song) and "
                   "report their mean; default: the run's evaluation crop.")
@click.option("--per-window", is_flag=True, help="Also print each window's values.")
@json_option()
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Windows per forward pass (default: the run's).")
@click.option("--cache-dir", metavar="DIR",
              help="Cache of spectrograms and text encodings (default: the run's; .merx/cache for a model folder).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@strict_option()
@db_option()
def predict_cmd(source, paths, lyrics, lyrics_dir, songs_csv, windows, per_window, as_json, as_csv, batch_size,
                cache_dir, device, strict, db):
    """Predict the emotion of songs with a trained run (run12) or an exported model folder.

    Per song: valence and arousal (regression) or the quadrant's class probabilities
    (classification), and the quadrant. A lyrics-only model takes lyrics files instead of audio.
    Songs whose files cannot be read are listed at the end and make the exit status 1; the
    others are predicted."""
    from merx.inference import load, predict
    from merx.inference.inputs import songs_from_arguments

    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    if per_window and windows is None:
        raise UsageError("--per-window needs --windows N or --windows all")
    trained = load(source, db=db, strict=strict, device=device)
    for warning in trained.warnings:
        click.echo(click.style("warning: ", fg="yellow") + clean(warning), err=True)
    if windows is not None and not trained.model.uses_audio:
        raise UsageError(f"{trained.label} reads only lyrics: --windows chooses audio windows", hint="leave it out")
    songs = songs_from_arguments(list(paths), list(lyrics), lyrics_dir, songs_csv,
                                 trained.model.uses_audio, trained.model.uses_text)
    result = predict(trained, songs, windows=windows, batch_size=batch_size, cache_dir=cache_dir,
                     progress=sys.stderr.isatty())
    if as_json:
        from merx.commands.output import json_out

        json_out({"model": trained.label, "task": result.task,
                  "songs": [p.to_dict(per_window) for p in result.songs],
                  "failures": [f.to_dict() for f in result.failures]})
    elif as_csv:
        click.echo(_csv(result, per_window), nl=False)
    else:
        _print_table(trained, result, per_window)
    if result.failures:
        _print_failures(result.failures)
        click.get_current_context().exit(1)


def _csv(result, per_window: bool) -> str:
    import csv
    import io

    from merx.data.songs import QUADRANTS

    values = ["valence", "arousal"] if result.task == "regression" else [f"prob_{q}" for q in QUADRANTS]
    header = ["song", "audio", "lyrics"] + (["window", "start_s"] if per_window else []) + ["quadrant"] + values
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)

    def numbers(item):
        if result.task == "regression":
            return [repr(item["valence"]), repr(item["arousal"])]
        return [repr(item["probs"][q]) for q in QUADRANTS]

    for p in result.songs:
        files = [p.song, p.audio_path or "", p.lyrics_path or ""]
        if per_window:
            for i, w in enumerate(p.windows, 1):
                writer.writerow(files + [i, "" if w["start_s"] is None else repr(w["start_s"]), w["quadrant"]]
                                + numbers(w))
        mean = {"valence": p.valence, "arousal": p.arousal, "probs": p.probs}
        writer.writerow(files + (["mean", ""] if per_window else []) + [p.quadrant] + numbers(mean))
    return buf.getvalue()


def _print_table(trained, result, per_window: bool) -> None:
    from rich import box
    from rich.table import Table

    from merx.data.songs import QUADRANTS

    regression = result.task == "regression"
    t = Table(title=plain(f"{trained.label}: {result.task}, {len(result.songs)} song(s)"), title_justify="left",
              box=box.SIMPLE_HEAD)
    t.add_column("song")
    t.add_column("quadrant" + (" (implied)" if regression else ""))
    cols = ["valence", "arousal"] if regression else [f"P({q})" for q in QUADRANTS]
    for c in cols:
        t.add_column(c, justify="right")
    t.add_column("windows", justify="right")

    def cells(item):
        if regression:
            return [f"{item['valence']:.3f}", f"{item['arousal']:.3f}"]
        return [f"{item['probs'][q]:.3f}" for q in QUADRANTS]

    for p in result.songs:
        t.add_row(plain(p.song), p.quadrant, *cells({"valence": p.valence, "arousal": p.arousal, "probs": p.probs}),
                  str(len(p.windows)))
        if per_window:
            for w in p.windows:
                start = "" if w["start_s"] is None else f"{w['start_s']:.1f}s"
                t.add_row(plain(f"  @ {start}", "dim"), w["quadrant"], *cells(w), "")
    console().print(t)


def _print_failures(failures) -> None:
    from rich.table import Table

    t = Table(title=f"{len(failures)} song(s) not predicted", title_justify="left", title_style="red")
    for col in ("song", "file", "problem", "fix"):
        t.add_column(col)
    for f in failures:
        t.add_row(plain(f.song), plain(f.path or "-"), plain(f.reason), plain(f.fix))
    console(stderr=True).print(t)


def attach(cli) -> None:
    cli.add_command(predict_cmd)
