"""CLI commands: compare, report and export.

Targets name runs (``run12`` or ``12``), groups of seeds (``name@3f2a9c1d`` or ``@3f2a``, a
prefix of the group hash, as ``merx show`` prints it), experiments (every completed run, one
group per config) or ``tag:NAME``. The work lives in ``merx.compare``, ``merx.report`` and
``merx.export``; these functions parse, call and print."""

from __future__ import annotations

import click

from merx.commands.options import STATUSES, db_option, json_option
from merx.commands.output import clean, console, json_out, plain


@click.command("compare")
@click.argument("targets", nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True,
              help="Show every config key, plugin and version, not only those that differ.")
@click.option("--metric", "metrics", multiple=True, metavar="METRIC",
              help="Test this metric (repeatable; default: the task's headline metrics).")
@click.option("--primary", metavar="METRIC", default=None,
              help="The confirmatory metric (default: macro_f1 for classification, va_mae for regression); "
                   "every other test is exploratory and Holm-adjusted.")
@click.option("--resamples", default=2000, show_default=True, help="Bootstrap resamples per metric.")
@json_option("The same content as JSON.")
@db_option()
def compare_cmd(targets, show_all, metrics, primary, resamples, as_json, db):
    """What differed between runs or groups, what it changed, and whether the change is real.

    TARGETS: run ids (run12), groups (name@3f2a9c1d, @3f2a), experiment names (one group per
    config) or tag:NAME. Shows the config keys that differ, data/plugin/version differences,
    test metrics beside the first target's with baselines, and a paired test: bootstrap
    interval and McNemar for two runs on the same test songs, a t-test across seeds for
    groups. One primary metric per task is the confirmatory test; the others are exploratory,
    their p-values Holm-adjusted over every test shown."""
    from merx.compare import compare, render, resolve_subjects
    from merx.store import RunStore

    store = RunStore(db)
    subjects = resolve_subjects(store, list(targets))
    result = compare(store, subjects, show_all=show_all, metrics=list(metrics) or None, n_resamples=resamples,
                     primary=primary)
    if as_json:
        json_out(result)
        return
    render(result, console())


@click.command("report")
@click.argument("target")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the PNG files and index.html (default: reports/TARGET).")
@db_option()
def report_cmd(target, out_dir, db):
    """Plots of a run or a group and an HTML page: learning curves, confusion matrix, and
    predicted vs true valence/arousal with the quadrant lines and MERGE's hole."""
    from merx.compare import CompareError, resolve_subjects
    from merx.report import write_report
    from merx.store import RunStore

    store = RunStore(db)
    subjects = resolve_subjects(store, [target])
    if len(subjects) != 1:
        raise CompareError(f"{target!r} holds {len(subjects)} groups; report one of them: "
                           + ", ".join(s.label for s in subjects))
    subject = subjects[0]
    out = out_dir or f"reports/{subject.label.replace('@', '-')}"
    report = write_report(store, subject.runs, out)
    from rich.text import Text

    out = console()
    for name, path in report.plots.items():
        out.print(plain(f"{name}: {path}"))
    out.print(Text.assemble("open ", plain(report.html, "bold"), " in a browser"))


@click.command("export")
@click.argument("targets", nargs=-1)
@click.option("--what", type=click.Choice(["runs", "metrics", "baselines", "epochs", "predictions"]),
              default="runs", show_default=True, help="Which records (csv / json).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "markdown", "latex"]), default="csv",
              show_default=True, help="csv / json: records; markdown / latex: a comparison table.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File to write (default: stdout).")
@click.option("--metric", "metrics", multiple=True, metavar="METRIC", help="Table columns (markdown / latex).")
@click.option("--experiment", help="Without TARGETS: only runs of this experiment.")
@click.option("--tag", help="Without TARGETS: only runs with this tag.")
@click.option("--status", type=click.Choice(STATUSES), help="Without TARGETS: only runs with this status.")
@db_option()
def export_cmd(targets, what, fmt, out, metrics, experiment, tag, status, db):
    """Write runs, metrics, epochs or predictions as CSV or JSON, or a comparison table as
    Markdown or LaTeX (mean ± std over seeds, best in bold).

    TARGETS as for merx compare; none means every run (filtered by --experiment, --tag,
    --status)."""
    from merx import export
    from merx.compare import CompareError, resolve_subjects, subjects_from_runs
    from merx.store import RunStore

    store = RunStore(db)
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
        # Printed, so without control characters; --out FILE keeps the records as stored.
        click.echo(clean(text), nl=False)
        return
    with open(out, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    click.echo(clean(f"wrote {out}"), err=True)


def attach(cli) -> None:
    for command in (compare_cmd, report_cmd, export_cmd):
        cli.add_command(command)
