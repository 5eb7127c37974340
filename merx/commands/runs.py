"""CLI commands about recorded runs: ``runs`` (the list), ``show`` (one run), ``tag`` and ``note``."""

from __future__ import annotations

import click

from merx.commands.options import STATUSES, db_option, json_option
from merx.commands.output import clean, console, fmt, json_out, metrics_table, plain, print_truth_and_notes


@click.command("runs")
@click.option("--experiment", help="Only runs of this experiment.")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--tag", help="Only runs with this tag (merx tag RUN TAG).")
@click.option("--group", "group", metavar="HASH", help="Only runs of this group (a prefix of its hash).")
@click.option("--since", metavar="WHEN", help="Started at or after: 2025-03-01, 2025-03-01T14:00, or 7d / 12h ago.")
@click.option("--until", metavar="WHEN", help="Started before the end of: 2025-03-01 (that day included), ...")
@click.option("--sort", "sort_metric", metavar="METRIC", help="Order by this test metric, best first.")
@click.option("--ascending/--descending", default=None,
              help="Direction of --sort (default: best first: ascending for errors such as MAE).")
@click.option("--limit", default=20, show_default=True)
@json_option()
@db_option()
def runs_cmd(experiment, status, tag, group, since, until, sort_metric, ascending, limit, as_json, db):
    """List recent runs, newest first (or best first with --sort METRIC); `merx show RUN` has the rest."""
    from merx.metrics import higher_is_better
    from merx.store import RunStore

    if sort_metric is not None and ascending is None:
        ascending = higher_is_better(sort_metric) is False
    rows = RunStore(db).list_runs(experiment=experiment, status=status, limit=limit, tag=tag, group_hash=group,
                                  since=since, until=until, sort_metric=sort_metric, ascending=bool(ascending))
    if as_json:
        json_out(rows)
        return
    from rich.text import Text

    out = console()
    out.print(runs_table(rows, sort_metric))
    lost = [f"run{r['id']}" for r in rows if r["status"] == "lost"]
    if lost:
        out.print(plain(f"lost: {', '.join(lost)} (process gone, or silent for {_timeout():g} s); "
                        "merx resume RUN continues one"))
    # Below the table, not in a column: free text would squeeze every other column at 80 wide.
    for r in rows:
        if r.get("tags") or r.get("note"):
            out.print(Text.assemble((f"run{r['id']}: ", "bold"), plain(_annotation(r))))


def _timeout() -> float:
    from merx.store.liveness import heartbeat_timeout

    return heartbeat_timeout()


def runs_table(rows: list[dict], sort_metric: str | None = None):
    """The columns that tell runs apart at a glance, narrow enough for 80 columns; `merx show`
    has the rest (task, group, times, epochs)."""
    from rich import box
    from rich.table import Table

    t = Table(title=plain("runs" + (f", best {sort_metric} first" if sort_metric else "")), title_justify="left",
              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    # Names never wrap; the headline gives way first.
    t.add_column("run", no_wrap=True)
    t.add_column("experiment", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("fusion", no_wrap=True)
    t.add_column("seed", no_wrap=True, justify="right")
    if sort_metric:
        t.add_column(plain(sort_metric), justify="right", no_wrap=True)
    t.add_column("headline")
    for r in rows:
        metrics = r.get("metrics") or {}
        cells = [f"run{r['id']}", r["experiment"], r["status"], _model_cell(r.get("config") or {}), fmt(r.get("seed"))]
        cells += [fmt(metrics.get(sort_metric))] if sort_metric else []
        cells += [headline(metrics)]
        t.add_row(*map(plain, cells))
    return t


def _annotation(run: dict) -> str:
    return ", ".join(run.get("tags") or []) + (f" — {run['note']}" if run.get("note") else "")


def _model_cell(cfg: dict) -> str:
    """The fusion of a bimodal run, else which modality a single-modality run used."""
    model = cfg.get("model") or {}
    modalities = model.get("modalities", "both")
    if modalities != "both":
        return f"{modalities} only"
    return (model.get("fusion") or {}).get("name") or "-"


def headline(metrics: dict) -> str:
    """The (implied) quadrant macro-F1, and on a second line the V/A errors of a regression run."""
    for key in ("macro_f1", "quadrant_macro_f1"):
        if metrics.get(key) is not None:
            maes = [f"{d[0].upper()} MAE {metrics[f'{d}_mae']:.3f}" for d in ("valence", "arousal")
                    if metrics.get(f"{d}_mae") is not None]
            return f"{key} {metrics[key]:.3f}" + ("\n" + ", ".join(maes) if maes else "")
    return "-"


@click.command("show")
@click.argument("run_id")
@json_option()
@db_option()
def show_cmd(run_id, as_json, db):
    """Show one run: config, learning curve, test metrics beside baselines, plugins, failures."""
    from merx.store import RunStore

    run = RunStore(db).get_run(run_id)
    if as_json:
        json_out(run)
        return
    from rich.table import Table
    from rich.text import Text

    from merx.compare import group_label
    from merx.config import to_toml

    out = console()
    out.print(Text.assemble((f"run{run['id']}", "bold"), " ", plain(run["experiment"]), " — ",
                            plain(run["status"], "bold"),
                            plain(f" ({run['task']}, seed {run['seed']}, {run.get('device') or '?'}); started "
                                  f"{run['started_at']}, {fmt(run.get('wall_seconds'))} s; config hash "
                                  f"{run['config_hash']}, group {group_label(run['experiment'], run['group_hash'])}")))
    if run.get("error"):
        out.print(Text.assemble(("error: ", "red"), plain(run["error"])))
    if run["status"] == "lost":
        out.print(Text.assemble(("lost: ", "yellow"), plain(
            f"recorded running, but its process (pid {run.get('pid')} on {run.get('host')}) is gone or silent "
            f"since {run.get('heartbeat_at') or run['started_at']}; merx resume run{run['id']} continues it")))
    if run.get("experiment_file"):
        out.print(plain(f"file: {run['experiment_file']}; git: {run.get('git_commit') or '-'}"))
    out.print(plain(to_toml(run["config"]).rstrip(), style="dim"))
    epochs = run.get("epochs") or {}
    if epochs:
        cols = ["train_loss", "val_loss"]
        monitor = run["config"]["train"]["early_stopping"]["monitor"]
        if monitor not in cols:
            cols.append(monitor)
        cols += ["grad_norm_pre_clip"]
        t = Table(title="learning curve", title_justify="left")
        t.add_column("epoch", justify="right")
        for c in cols:
            t.add_column(plain(c), justify="right")
        for e in sorted(epochs, key=int):
            mark = " *" if run.get("best_epoch") is not None and int(e) == run["best_epoch"] else ""
            t.add_row(f"{e}{mark}", *(fmt(epochs[e].get(c)) for c in cols))
        out.print(t)
        out.print("* best epoch (its weights were restored for the test evaluation)")
    test = (run.get("metrics") or {}).get("test") or {}
    if test:
        out.print(metrics_table("test metrics beside baselines", test, run.get("baselines") or {}))
    if run.get("plugins"):
        out.print(plain("plugins: " + ", ".join(plugin_label(p) for p in run["plugins"])))
    notes: dict[str, list] = {}
    for n in run.get("data_notes") or []:
        notes.setdefault(n["kind"], []).append(n["song_id"])
    print_truth_and_notes(out, run["task"], notes)
    fails = run.get("failures") or []
    if fails:
        t = Table(title=f"{len(fails)} songs failed", title_justify="left", title_style="yellow")
        for col in ("song", "stage", "reason"):
            t.add_column(col)
        for f in fails:
            t.add_row(plain(f["song_id"]), plain(f["stage"]), plain(f["reason"]))
        out.print(t)


def plugin_label(record: dict) -> str:
    """A plugin a run used, with where it came from: ``fusion:lmf (lowrank-fusion 0.1.0)``."""
    from merx.hookspecs import KINDS
    from merx.plugins import provenance_label

    kind = KINDS[record["kind"]].singular if record["kind"] in KINDS else record["kind"]
    return f"{kind}:{provenance_label(record)}"


@click.command("tag")
@click.argument("run_id")
@click.argument("tags", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove these tags instead of adding them.")
@db_option()
def tag_cmd(run_id, tags, remove, db):
    """Add tags to a run (merx tag run12 baseline), or remove them with --remove.

    Find tagged runs with merx runs --tag TAG; compare them with merx compare tag:TAG."""
    from merx.store import RunStore

    store = RunStore(db)
    now = store.tag_run(run_id, remove=tags) if remove else store.tag_run(run_id, add=tags)
    click.echo(clean(f"run{store.parse_run_id(run_id)} tags: {', '.join(now) or '(none)'}"))


@click.command("note")
@click.argument("run_id")
@click.argument("text", required=False)
@click.option("--clear", is_flag=True, help="Remove the note.")
@db_option()
def note_cmd(run_id, text, clear, db):
    """Give a run a note (merx note run12 "lr too high"); without TEXT, print it."""
    from merx.store import RunStore

    store = RunStore(db)
    rid = store.parse_run_id(run_id)
    if clear or text is not None:
        store.update_run(rid, note=None if clear else text)
    note = store.get_run(rid).get("note")
    click.echo(clean(f"run{rid}: {note}") if note else f"run{rid} has no note")


def attach(cli) -> None:
    for command in (runs_cmd, show_cmd, tag_cmd, note_cmd):
        cli.add_command(command)
