"""User text (experiment names, tags, notes, song ids, failure reasons, plugin docs, paths,
error messages) is printed as it was written: never read as rich markup, never able to send
the terminal a control sequence. Real runs in a real SQLite file, the real ``merx`` group."""

import re

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.config import apply_sets, config_hash, resolve
from merx.store import RunStore

# Text a user (or a data file) can put in the results database, and what must come out.
NAME = "[red]x[/red]"
TAG = "[/bold]"
# U+202E would display the rest of the line reversed ("gnp.exe" as "exe.png").
NOTE = "lr [/x] too \x1b[2Jhigh\x07 [b]really[/b]\x9b31m\u202e"
NOTE_SHOWN = "lr [/x] too high [b]really[/b]"
OTHER = "[bold]b|c*"
SONG = "[red]s1[/red]"
REASON = "bad [/bold] \x1b]0;owned\x07header\r"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def merx(*args, **kw):
    # Wide, so that rich wraps no cell: assertions read whole values.
    return CliRunner(env={"COLUMNS": "250"}).invoke(cli, [str(a) for a in args], **kw)


def visible(output: str) -> str:
    assert not CONTROL.search(output), repr(CONTROL.findall(output))
    return output


def hand_cfg(name, seed=0, description="", **sets):
    raw = apply_sets({"name": name, "description": description, "task": "regression", "seed": seed},
                     [f"{k}={v}" for k, v in sets.items()])
    return resolve(raw, "hand.toml")


def record(store, cfg, **extra):
    rid = store.start_run(experiment=cfg["name"], experiment_file="exp/[bold]odd[/bold].toml", config=cfg,
                          config_hash=config_hash(cfg), group_hash=config_hash(cfg, include_seed=False),
                          seed=cfg["seed"], task=cfg["task"], device="cpu", versions={"torch": "2.13.0"},
                          git_commit="abc123", description=cfg["description"])
    store.add_epoch(rid, 1, {"train_loss": 0.5, "val_loss": 0.6, "val_va_mae": 0.3})
    store.add_metrics(rid, "test", {"valence_mae": 0.2, "arousal_mae": 0.25})
    store.add_failures(rid, extra.get("failures", []))
    store.add_plugins(rid, extra.get("plugins", []))
    store.finish_run(rid, extra.get("status", "completed"), error=extra.get("error"), best_epoch=1, epochs_run=1)
    return rid


@pytest.fixture
def db(tmp_path):
    """run1: every field holds markup or control characters; run2: a plain neighbour to compare with."""
    path = tmp_path / "r.db"
    store = RunStore(path)
    record(store, hand_cfg(NAME, description="[i]desc[/i]"),
           failures=[{"song_id": SONG, "stage": "audio", "reason": REASON}],
           plugins=[{"kind": "fusions", "name": "[b]f", "origin": "local file", "source": "/p/[/x]/f.py",
                     "version": None}])
    record(store, hand_cfg(OTHER, seed=1, **{"train.lr.head": 3e-3}))
    store.tag_run(1, add=[TAG, "\x1b[2J"])
    store.update_run(1, note=NOTE)
    store.close()
    return path


def test_runs_prints_names_tags_and_notes_literally(db):
    result = merx("runs", "--db", db)
    assert result.exit_code == 0, result.output
    out = visible(result.stdout)
    assert NAME in out and OTHER in out
    # The whole escape sequence goes, not only its ESC: "[2J" left behind would be noise.
    assert f"run1: {TAG},  — {NOTE_SHOWN}" in out and "[2J" not in out


def test_runs_title_takes_the_sort_metric_as_text(db):
    result = merx("runs", "--sort", "[/x]", "--db", db)
    assert result.exit_code == 0, result.output
    assert "best [/x] first" in result.stdout


def test_show_prints_every_user_field_literally(db):
    result = merx("show", "run1", "--db", db)
    assert result.exit_code == 0, result.output
    out = visible(result.stdout)
    assert f"run1 {NAME} — completed" in out
    assert "file: exp/[bold]odd[/bold].toml" in out
    assert SONG in out and "bad [/bold] header" in out
    assert "fusion:[b]f (local: /p/[/x]/f.py)" in out
    assert 'description = "[i]desc[/i]"' in out


def test_show_prints_a_failed_runs_error_literally(tmp_path):
    store = RunStore(tmp_path / "r.db")
    record(store, hand_cfg("e"), status="failed", error="ValueError: [/red] \x1b[31mboom")
    result = merx("show", "1", "--db", tmp_path / "r.db")
    assert result.exit_code == 0, result.output
    assert "error: ValueError: [/red] boom" in visible(result.stdout)


def test_compare_prints_names_and_values_literally(db):
    result = merx("compare", "run1", "run2", "--db", db)
    assert result.exit_code == 0, result.output
    out = visible(result.stdout)
    assert NAME in out and OTHER in out
    assert "[i]desc[/i]" in out  # a differing config value
    assert "[b]f (local: /p/[/x]/f.py)" in out  # a plugin only run1 used, spelt as merx show spells it


def test_an_error_line_carries_no_control_characters():
    # click strips colour codes from what it echoes off a terminal, but not a window title (OSC)
    # or a carriage return: the error line must.
    result = merx("config", "bad\x1b]0;owned\x07\r.toml")
    assert result.exit_code == 2
    assert visible(result.stderr).startswith("error: bad.toml")


def test_tag_and_note_echo_without_control_characters(db):
    result = merx("note", "run1", "--db", db)
    assert result.exit_code == 0 and visible(result.stdout) == f"run1: {NOTE_SHOWN}\n"
    result = merx("tag", "run1", "[x]", "--db", db)
    assert result.exit_code == 0 and visible(result.stdout) == f"run1 tags: {TAG}, , [x]\n"


def test_markdown_export_escapes_names(db):
    store = RunStore(db)
    record(store, hand_cfg(NAME, seed=1, description="[i]desc[/i]"))  # groups of two: labelled by name
    record(store, hand_cfg(OTHER, seed=0, **{"train.lr.head": 3e-3}))
    store.close()
    result = merx("export", NAME, OTHER, "--format", "markdown", "--db", db)
    assert result.exit_code == 0, result.output
    rows = visible(result.stdout).splitlines()[2:]
    assert rows[0].startswith(r"| \[red\]x\[/red\]@") and rows[1].startswith(r"| \[bold\]b\|c\*@")


def test_list_plugins_prints_plugin_text_literally(tmp_path):
    (tmp_path / "[x]plugins").mkdir()
    (tmp_path / "[x]plugins" / "odd.py").write_text(
        "from merx import hookimpl\n\n"
        "@hookimpl\n"
        "def register_fusions(register):\n"
        "    register('odd[/b]', make)\n\n"
        "def make(audio_dim, text_dim, tag: str = '[red]'):\n"
        "    '''[bold]Loud[/bold] fusion [/i]\x1b[2J.'''\n")
    result = merx("--plugins-dir", tmp_path / "[x]plugins", "list-plugins")
    assert result.exit_code == 0, result.output
    out = visible(result.stdout)
    assert "odd[/b]" in out and "[bold]Loud[/bold] fusion [/i]." in out and "tag='[red]'" in out
    assert "[x]plugins" in out


def test_sweep_summary_prints_cell_labels_literally():
    from io import StringIO

    from merx.commands.output import console
    from merx.sweep import render_summary

    summary = {"metric": "[/m]", "higher_is_better": None, "columns": ["[/m]"], "best": None,
               "cells": [{"cell": "model.fusion.name=[red]x[/red]", "values": {},
                          "runs": [{"run": "run1", "seed": 0, "status": "completed", "error": None}],
                          "metrics": {"[/m]": {"mean": 0.5, "std": None, "n": 1, "ci_low": None,
                                               "ci_high": None}}}]}
    out = console()
    out.file = StringIO()
    out.width = 200
    render_summary(summary, out)
    text = out.file.getvalue()
    assert "model.fusion.name=[red]x[/red]" in text and "best by [/m]" in text


def test_prepare_prints_song_ids_and_reasons_literally():
    from io import StringIO
    from types import SimpleNamespace

    from merx.commands.data import _print_prepared
    from merx.commands.output import console
    from merx.data.songs import QUADRANTS, Failure, Song, SongTable

    songs = [Song(id=f"{SONG}{q}", split="train", quadrant=q, valence=0.8, arousal=0.8) for q in QUADRANTS]
    table = SongTable(songs, failures=[Failure(SONG, "audio", REASON)])
    prepared = SimpleNamespace(table=table, features=None, overlap_warnings=["song [/s] is in two splits"])
    out = console()
    out.file = StringIO()
    out.width = 200
    _print_prepared(out, {"name": NAME, "task": "regression"}, prepared)
    text = visible(out.file.getvalue())
    assert f"{NAME}: songs per split" in text and SONG in text and "bad [/bold] header" in text
    assert "warning: song [/s] is in two splits" in text
    # (0.8, 0.8) implies Q1: the songs labelled Q2..Q4 are counted, their ids printed literally.
    assert "data note: 3 song(s): quadrant label differs" in text and f"{SONG}Q2" in text


def test_report_escapes_names_in_the_page_and_draws_dollars_as_text(tmp_path):
    store = RunStore(tmp_path / "r.db")
    record(store, hand_cfg("<b>$\\foo$</b> [/x]"))
    out_dir = tmp_path / "[red]out"
    result = merx("report", "run1", "--out", out_dir, "--db", tmp_path / "r.db")
    assert result.exit_code == 0, result.output
    assert f"open {out_dir / 'index.html'} in a browser" in visible(result.stdout)
    page = (out_dir / "index.html").read_text()
    assert "&lt;b&gt;$\\foo$&lt;/b&gt; [/x]" in page and "<b>$" not in page
    assert (out_dir / "learning_curves.png").stat().st_size > 0


def test_dry_run_table_prints_the_experiment_name_literally(monkeypatch, capsys):
    from types import SimpleNamespace

    import merx.dry_run
    from merx.commands import run

    row = SimpleNamespace(part="fusion", module="[b]Odd[/b]", total=10, trainable=5)
    monkeypatch.setattr(merx.dry_run, "dry_run", lambda cfg: [row])
    monkeypatch.setenv("COLUMNS", "200")
    run._print_dry_run({"name": NAME})
    out = visible(capsys.readouterr().out)
    assert f"{NAME}: parameters" in out and "[b]Odd[/b]" in out


def test_every_string_a_merx_console_prints_loses_its_control_characters():
    # The second line of defence: a str that reaches the console unescaped by mistake.
    from io import StringIO

    from merx.commands.output import console

    out = console()
    out.file = StringIO()
    out.print("a\x1b[2Jb\x1b]52;c;Y2xpcA==\x07c [bold]d[/bold]")
    assert out.file.getvalue() == "abc d\n"
