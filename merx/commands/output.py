"""How commands print: one rich console setup, user text, numbers, JSON, and the metrics table
that ``run`` and ``show`` share. rich is imported inside the functions (``merx --help`` stays instant).

User text is anything merx did not write itself: experiment names, descriptions, tags, notes,
song ids, failure reasons, plugin names and docs, file paths, error messages. It enters rich
only through :func:`plain` (a ``Text``, which rich never reads as markup), and anything echoed
without rich goes through :func:`clean`, so that neither ``[/bold]`` in a note nor an escape
sequence in a tag reaches the terminal as anything but the characters a user can read. Every
``str`` a :func:`console` prints is cleaned too, as a second line of defence; markup in those
strings is merx's own."""

from __future__ import annotations

import functools
import json
import math
import re

import click

# Escape sequences are removed whole: "\x1b[2J" leaves nothing, not a stray "[2J". 7-bit
# (ESC ...) and 8-bit (C1) introducers alike; an unterminated string sequence loses only its
# introducer, so the text after it stays.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clearing the screen
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC (title, clipboard), DCS, ...
    r"|\x1b[ -/]*[0-~]?"  # any other: ESC c (reset), ESC 7, ...
)
# What is left of C0 (bar tab and newline), DEL and C1: carriage return, backspace and bell
# rewrite or disturb what was printed before them. Unicode's bidirectional embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069) reorder what follows them on screen,
# so "run1 [U+202E]gnp.exe" would display reversed: removed too.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text) -> str:
    """``text`` (or ``str()`` of it) without terminal control characters and escape sequences;
    newlines and tabs stay."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", str(text)))


def plain(text, style: str | None = None):
    """User text as a rich ``Text``: printed as written, never read as markup, without control
    characters (:func:`clean`)."""
    from rich.text import Text

    return Text(clean(text), style=style or "")


def console(stderr: bool = False):
    """A rich console; no highlighting, so that numbers and paths keep the colours we give them."""
    return _console_class()(stderr=stderr, highlight=False)


@functools.cache
def _console_class():
    from rich.console import Console

    class MerxConsole(Console):
        # Every str rich prints (print's arguments, table cells, titles, headers) passes here.
        def render_str(self, text, **kwargs):
            return super().render_str(clean(text), **kwargs)

    return MerxConsole


def fmt(value) -> str:
    """A cell: ``-`` for nothing, four decimals for a float."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def json_out(obj) -> None:
    # JSON has no NaN: an undefined number is null, as in the results database.
    click.echo(json.dumps(_nan_to_none(obj), indent=2, default=str, allow_nan=False))


def _nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    return v


def metrics_table(title: str, metrics: dict, baselines: dict | None = None):
    """Numeric metrics of a model, one row each, with a column per baseline beside it."""
    from rich.table import Table

    baselines = baselines or {}
    t = Table(title=plain(title), title_justify="left")
    t.add_column("metric")
    t.add_column("model", style="bold green", justify="right")
    for name in baselines:
        t.add_column(plain(name), justify="right", style="dim")
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        t.add_row(plain(key), fmt(value), *(fmt(b.get(key)) for b in baselines.values()))
    return t


def print_truth_and_notes(out, task: str, notes: dict[str, list]) -> None:
    """The truth ``task`` is scored against, and how many songs each data note applies to
    (``notes``: ``{kind: [song id, ...]}``), with a few ids: a researcher reads how far the
    dataset's label and its valence/arousal disagree before trusting a quadrant score."""
    from rich.text import Text

    from merx.data.songs import NOTE_KINDS, TRUTH

    out.print(Text.assemble(("truth: ", "bold"), plain(f"{task} runs are scored against {TRUTH[task]}")))
    for kind, text in NOTE_KINDS.items():
        ids = [str(i) for i in notes.get(kind, [])]
        shown = f" ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})" if ids else ""
        out.print(plain(f"data note: {len(ids)} song(s): {text}{shown}", style="yellow" if ids else "dim"))
