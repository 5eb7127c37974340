"""CLI commands: compare, report, export, tag and note.

Targets name runs (``run12`` or ``12``), groups of seeds (``name@3f2a9c1d`` or ``@3f2a``, a
prefix of the group hash that ``merx runs`` shows), experiments (every completed run, one
group per config) or ``tag:NAME``. The work lives in ``merx.compare``, ``merx.report`` and
``merx.export``; these functions parse, call and print."""

from __future__ import annotations

import functools
import json

import click

_DB_HELP = "Results database (file or URL; default results.db)."


def _errors(fn):
    """Print what a user can fix (unknown run, bad config, ...) as one line; exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from merx.errors import MerxError

        try:
            return fn(*args, **kwargs)
        except MerxError as exc:
            from merx.cli import fail

            fail(str(exc), exc.exit_code, exc.hint)

    return wrapper


def _store(db):
    from merx.store import RunStore

    return RunStore(db)


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _json_out(obj) -> None:
    # JSON has no NaN: an undefined number is null, as in the results database.
    click.echo(json.dumps(_nan_to_none(obj), indent=2, default=str, allow_nan=False))


def _nan_to_none(v):
    import math

    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    return v


def attach(cli):
    @cli.command("compare")
    @click.argument("targets", nargs=-1, required=True)
    @click.option("--all", "show_all", is_flag=True,
                  help="Show every config key, plugin and version, not only those that differ.")
    @click.option("--metric", "metrics", multiple=True, metavar="METRIC",
                  help="Test this metric (repeatable; default: the task's headline metrics).")
    @click.option("--resamples", default=2000, show_default=True, help="Bootstrap resamples per metric.")
    @click.option("--json", "as_json", is_flag=True, help="The same content as JSON.")
    @click.option("--db", envvar="MERX_DB", default=None, help=_DB_HELP)
    @_errors
    def compare_cmd(targets, show_all, metrics, resamples, as_json, db):
        """What differed between runs or groups, what it changed, and whether the change is real.

        TARGETS: run ids (run12), groups (name@3f2a9c1d, @3f2a), experiment names (one group per
        config) or tag:NAME. Shows the config keys that differ, data/plugin/version differences,
        test metrics beside the first target's with baselines, and a paired test: bootstrap
        interval and McNemar for two runs on the same test songs, a t-test across seeds for
        groups."""
        from merx.compare import compare, render, resolve_subjects

        store = _store(db)
        subjects = resolve_subjects(store, list(targets))
        result = compare(store, subjects, show_all=show_all, metrics=list(metrics) or None, n_resamples=resamples)
        if as_json:
            _json_out(result)
            return
        render(result, _console())

    @cli.command("report")
    @click.argument("target")
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
                  help="Folder for the PNG files and index.html (default: reports/TARGET).")
    @click.option("--db", envvar="MERX_DB", default=None, help=_DB_HELP)
    @_errors
    def report_cmd(target, out_dir, db):
        """Plots of a run or a group and an HTML page: learning curves, confusion matrix, and
        predicted vs true valence/arousal with the quadrant lines and MERGE's hole."""
        from merx.compare import CompareError, resolve_subjects
        from merx.report import write_report

        store = _store(db)
        subjects = resolve_subjects(store, [target])
        if len(subjects) != 1:
            raise CompareError(f"{target!r} holds {len(subjects)} groups; report one of them: "
                               + ", ".join(s.label for s in subjects))
        subject = subjects[0]
        out = out_dir or f"reports/{subject.label.replace('@', '-')}"
        report = write_report(store, subject.runs, out)
        console = _console()
        for name, path in report.plots.items():
            console.print(f"{name}: {path}")
        console.print(f"open [bold]{report.html}[/bold] in a browser")

    @cli.command("export")
    @click.argument("targets", nargs=-1)
    @click.option("--what", type=click.Choice(["runs", "metrics", "baselines", "epochs", "predictions"]),
                  default="runs", show_default=True, help="Which records (csv / json).")
    @click.option("--format", "fmt", type=click.Choice(["csv", "json", "markdown", "latex"]), default="csv",
                  show_default=True, help="csv / json: records; markdown / latex: a comparison table.")
    @click.option("--out", type=click.Path(dir_okay=False), default=None, help="File to write (default: stdout).")
    @click.option("--metric", "metrics", multiple=True, metavar="METRIC", help="Table columns (markdown / latex).")
    @click.option("--experiment", help="Without TARGETS: only runs of this experiment.")
    @click.option("--tag", help="Without TARGETS: only runs with this tag.")
    @click.option("--status", type=click.Choice(["running", "completed", "failed", "interrupted"]),
                  help="Without TARGETS: only runs with this status.")
    @click.option("--db", envvar="MERX_DB", default=None, help=_DB_HELP)
    @_errors
    def export_cmd(targets, what, fmt, out, metrics, experiment, tag, status, db):
        """Write runs, metrics, epochs or predictions as CSV or JSON, or a comparison table as
        Markdown or LaTeX (mean ± std over seeds, best in bold).

        TARGETS as for merx compare; none means every run (filtered by --experiment, --tag,
        --status)."""
        from merx import export
        from merx.compare import CompareError, resolve_subjects, subjects_from_runs

        store = _store(db)
        if targets:
            subjects = resolve_subjects(store, list(targets))
        else:
            listed = store.list_runs(experiment=experiment, status=status, tag=tag, limit=None)
            subjects = subjects_from_runs([store.get_run(r["id"]) for r in listed
                                           if fmt in ("csv", "json") or r["status"] == "completed"])
        if not subjects:
            raise CompareError(f"no runs to export from {store.location} with these filters")
        if fmt in ("markdown", "latex"):
            try:
                text = (export.markdown_table if fmt == "markdown" else export.latex_table)(
                    subjects, list(metrics) or None)
            except ValueError as exc:
                raise CompareError(str(exc)) from None
        else:
            ids = sorted({i for s in subjects for i in s.ids})
            text = export.dumps(export.rows(store, what, ids), fmt)
        if out is None:
            click.echo(text, nl=False)
            return
        with open(out, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        click.echo(f"wrote {out}", err=True)

    @cli.command("tag")
    @click.argument("run_id")
    @click.argument("tags", nargs=-1, required=True)
    @click.option("--remove", is_flag=True, help="Remove these tags instead of adding them.")
    @click.option("--db", envvar="MERX_DB", default=None, help=_DB_HELP)
    @_errors
    def tag_cmd(run_id, tags, remove, db):
        """Add tags to a run (merx tag run12 baseline), or remove them with --remove.

        Find tagged runs with merx runs --tag TAG; compare them with merx compare tag:TAG."""
        store = _store(db)
        now = store.tag_run(run_id, remove=tags) if remove else store.tag_run(run_id, add=tags)
        click.echo(f"run{store.parse_run_id(run_id)} tags: {', '.join(now) or '(none)'}")

    @cli.command("note")
    @click.argument("run_id")
    @click.argument("text", required=False)
    @click.option("--clear", is_flag=True, help="Remove the note.")
    @click.option("--db", envvar="MERX_DB", default=None, help=_DB_HELP)
    @_errors
    def note_cmd(run_id, text, clear, db):
        """Give a run a note (merx note run12 "lr too high"); without TEXT, print it."""
        store = _store(db)
        rid = store.parse_run_id(run_id)
        if clear or text is not None:
            store.update_run(rid, note=None if clear else text)
        note = store.get_run(rid).get("note")
        click.echo(f"run{rid}: {note}" if note else f"run{rid} has no note")
