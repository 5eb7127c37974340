"""The ``merx`` command line: parse, call, render. Heavy work lives elsewhere, imported lazily."""

from __future__ import annotations

import json
import sys
import warnings

import click

from merx import __version__


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _plugin_warnings_to_stderr() -> None:
    """Show plugin problems as one readable line each, not as python warnings with tracebacks."""
    from merx.plugins import PluginWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            click.echo(click.style("warning: ", fg="yellow") + str(message), err=True)
        else:
            _original(message, category, filename, lineno, file, line)

    _original = warnings.showwarning
    warnings.showwarning = show


def fail(message: str, code: int = 2, hint: str | None = None):
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    if hint:
        click.echo(click.style("hint: ", fg="cyan") + hint, err=True)
    sys.exit(code)


class MerxGroup(click.Group):
    """Loads plugin commands (``register_commands``) the first time the command list is needed."""

    _plugins_loaded = False

    def _load_plugin_commands(self, ctx):
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from merx.plugins import get_registry

        try:
            get_registry().pm.hook.register_commands(cli=self)
        except Exception as exc:  # a plugin's command must not take the CLI down
            click.echo(click.style("warning: ", fg="yellow") + f"a plugin failed in register_commands: {exc}",
                       err=True)

    def list_commands(self, ctx):
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._load_plugin_commands(ctx)
            cmd = super().get_command(ctx, name)
        return cmd


@click.group(cls=MerxGroup)
@click.version_option(__version__, prog_name="merx")
@click.option("--plugins-dir", multiple=True, type=click.Path(file_okay=False),
              help="Extra folder of local plugin files (besides ./plugins).")
@click.option("--no-local-plugins", is_flag=True, help="Do not load ./plugins or --plugins-dir files.")
def cli(plugins_dir, no_local_plugins):
    """merx: bimodal (audio + lyrics) music emotion recognition experiments.

    Write an experiment as a TOML file, then `merx run FILE`."""
    import os

    from merx.plugins import set_plugin_dirs

    if no_local_plugins:
        os.environ["MERX_NO_LOCAL_PLUGINS"] = "1"
    set_plugin_dirs(list(plugins_dir))
    _plugin_warnings_to_stderr()


# -- plugins --------------------------------------------------------------------------------

@cli.command("list-plugins")
@click.option("--kind", type=click.Choice(["data_sources", "audio_augmentations", "text_augmentations",
                                           "audio_towers", "text_towers", "fusions"]),
              help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--requirements", is_flag=True,
              help="Print a requirements line (dist==version) per installed plugin distribution.")
def list_plugins(kind, as_json, requirements):
    """Show installed plugins of every kind: name, origin, settings, description; then every
    loaded plugin module with the hooks it implements."""
    from importlib import metadata

    from merx.hookspecs import KINDS
    from merx.plugins import get_registry

    reg = get_registry()
    kinds = [kind] if kind else list(KINDS)

    # Every loaded plugin module, in load order: pluggy names each "origin:source" (merx.plugins).
    modules = []
    for plugin_name, module in reg.pm.list_name_plugin():
        origin, _, source = plugin_name.partition(":")
        version = next((p.version for ps in reg.plugins.values() for p in ps.values()
                        if p.origin == origin and p.source == source), None)
        if origin == "distribution" and version is None:
            try:
                version = metadata.version(source)
            except metadata.PackageNotFoundError:
                pass
        hooks = sorted(h.name for h in reg.pm.get_hookcallers(module) or [])
        modules.append({"origin": origin, "source": source, "version": version, "hooks": hooks})
    hooks_of = {(m["origin"], m["source"]): m["hooks"] for m in modules}

    if requirements:
        dists = sorted({(m["source"], m["version"]) for m in modules if m["origin"] == "distribution"})
        for dist, version in dists:
            click.echo(f"{dist}=={version}" if version else dist)
        local = [m["source"] for m in modules if m["origin"] == "local file"]
        if local:
            # On stderr, so that `merx list-plugins --requirements > requirements.txt` stays clean.
            click.echo("# local plugin files are not installable; copy them with the project: "
                       + ", ".join(local), err=True)
        if not dists:
            click.echo("# no plugin distributions installed (built-ins come with merx)", err=True)
        return
    if as_json:
        out = {}
        for k in kinds:
            out[k] = [{"name": p.name, "origin": p.origin, "source": p.source, "version": p.version,
                       "hook": p.hook, "hooks": hooks_of.get((p.origin, p.source), [p.hook]),
                       "summary": p.summary,
                       "params": [{"name": q.name, "required": q.required,
                                   "default": None if q.required else q.default} for q in p.params]}
                      for p in (reg.plugins[k][n] for n in reg.names(k))]
        click.echo(json.dumps(out, indent=2, default=repr))
        return
    from rich.table import Table

    console = _console()
    for k in kinds:
        table = Table(title=f"{k.replace('_', ' ')} — {KINDS[k].description}", title_justify="left",
                      show_lines=False, expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("origin", style="magenta")
        table.add_column("settings (defaults)")
        table.add_column("description")
        for name in reg.names(k):
            p = reg.plugins[k][name]
            table.add_row(name, p.origin_label, ", ".join(q.describe() for q in p.params) or "-", p.summary)
        if not reg.plugins[k]:
            table.add_row("-", "-", "-", "(none installed)")
        console.print(table)
    if kind:
        return
    local = any(m["origin"] == "local file" for m in modules)
    table = Table(title="plugin modules and the hooks they implement", title_justify="left", expand=False,
                  caption=("local plugin files are code that runs: --no-local-plugins or "
                           "MERX_NO_LOCAL_PLUGINS=1 skips them") if local else None, caption_justify="left")
    table.add_column("module", style="bold")
    table.add_column("origin", style="magenta")
    table.add_column("hooks")
    for m in modules:
        origin = {"distribution": f"{m['source']} {m['version'] or ''}".strip(), "local file": "local file"}
        table.add_row(m["source"], origin.get(m["origin"], m["origin"]), ", ".join(m["hooks"]) or "-")
    console.print(table)


# -- config ---------------------------------------------------------------------------------

def _load_plan(file, sets):
    """The experiment's runs: a plain file is one cell and one seed; ``[sweep]``/seeds give more."""
    from merx.config import ConfigError
    from merx.sweep import load_plan

    try:
        return load_plan(file, list(sets))
    except ConfigError as exc:
        fail(str(exc), 2)


def _load_config(file, sets):
    """The resolved config of FILE (for a sweep, its first cell and seed)."""
    return _load_plan(file, sets).cells[0].configs[0]


@cli.command("config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def config_cmd(file, sets, as_json):
    """Print the resolved config of FILE: extends followed, overrides applied, every default filled."""
    from merx.config import config_hash, to_toml

    plan = _load_plan(file, sets)
    cfg = plan.cells[0].configs[0]
    if as_json:
        click.echo(json.dumps(cfg, indent=2))
    else:
        click.echo(f"# resolved from {file}; config hash {config_hash(cfg)}")
        if not plan.is_single:
            click.echo(f"# {plan.size} runs: {len(plan.cells)} cell(s) of {', '.join(plan.keys) or 'this config'}"
                       f" x seeds {plan.seeds}; shown: the first ({plan.cells[0].label}, seed {plan.seeds[0]})")
        click.echo(to_toml(cfg), nl=False)



# -- data and features ----------------------------------------------------------------------

def _friendly_errors(fn):
    """Turn the errors a user can fix into one clear message and exit status 2 (1 for failed runs)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from merx.errors import MerxError

        try:
            return fn(*args, **kwargs)
        except MerxError as exc:
            fail(str(exc), exc.exit_code, exc.hint)

    return wrapper


def _print_prepare(console, cfg, prepared):
    from rich.table import Table

    from merx.data.songs import QUADRANTS

    counts = prepared.table.counts()
    t = Table(title=f"{cfg['name']}: songs per split and quadrant", title_justify="left")
    t.add_column("split")
    for q in QUADRANTS:
        t.add_column(q, justify="right")
    t.add_column("total", justify="right", style="bold")
    for split, row in counts.items():
        t.add_row(split, *(str(row[q]) for q in QUADRANTS), str(sum(row.values())))
    console.print(t)
    fs = prepared.features
    if fs is not None:
        console.print(f"features: {fs.computed} computed, {fs.hits} from cache "
                      f"({prepared.timings['feature_seconds']:.1f} s); dB reference power {prepared.ref_power:g}")
    for w in prepared.overlap_warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    fails = prepared.table.failures
    if fails:
        ft = Table(title=f"{len(fails)} songs could not be used", title_justify="left", title_style="yellow")
        for col in ("song", "stage", "reason"):
            ft.add_column(col)
        for f in fails:
            ft.add_row(f.song_id, f.stage, f.reason)
        console.print(ft)
    else:
        console.print("no failures")


@cli.command("prepare")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting (repeatable).")
@_friendly_errors
def prepare_cmd(file, sets):
    """Run the data and feature stages of FILE alone: songs, failures, cached features."""
    from merx.pipeline import prepare

    cfg = _load_config(file, sets)
    console = _console()
    prepared = prepare(cfg, progress=True)
    _print_prepare(console, cfg, prepared)


# -- runs -----------------------------------------------------------------------------------

def _store(db):
    from merx.store import RunStore

    return RunStore(db)


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _metrics_table(title, metrics: dict, baselines: dict | None = None):
    from rich.table import Table

    baselines = baselines or {}
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("model", style="bold green", justify="right")
    for name in baselines:
        t.add_column(name, justify="right", style="dim")
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        t.add_row(key, _fmt(value), *(_fmt(b.get(key)) for b in baselines.values()))
    return t


def _dry_run(cfg):
    from rich.table import Table

    from merx.models.params import parameter_counts
    from merx.pipeline import build
    from merx.plugins import get_registry

    # Counts depend on the architecture alone, so no weights are loaded: a dry run of an
    # experiment using a hub model works before that model was ever downloaded.
    from merx.pipeline import build_augmentations

    build_augmentations(cfg)  # a missing WordNet or a bad mask width shows here too
    model = build(cfg, get_registry(), pretrained=False)
    t = Table(title=f"{cfg['name']}: parameters (architecture only, no weights loaded)", title_justify="left")
    for col in ("part", "module", "total", "trainable"):
        t.add_column(col, justify="left" if col in ("part", "module") else "right")
    for row in parameter_counts(model):
        t.add_row(row.part, row.module, f"{row.total:,}", f"{row.trainable:,}")
    _console().print(t)


@cli.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting (repeatable).")
@click.option("--seeds", metavar="N|LIST", default=None,
              help="Run N seeds (seed, seed+1, ...) or the listed ones (0,7,42), recorded as one group; "
                   "overrides the file's [sweep] seeds / train.seeds.")
@click.option("--rerun", is_flag=True, help="With seeds or a [sweep]: also run configs that already completed.")
@click.option("--best-by", metavar="METRIC", default=None,
              help="Test metric that marks the best cell of a sweep (default: the monitored one).")
@click.option("--dry-run", is_flag=True, help="Resolve, build the model, print parameter counts, and exit.")
@click.option("--db", envvar="MERX_DB", default=None, help="Results database (file or URL; default results.db).")
@_friendly_errors
def run_cmd(file, sets, seeds, rerun, best_by, dry_run, db):
    """Train and evaluate the experiment in FILE; record everything in the results database.

    With --seeds, or a [sweep] table in FILE, runs every cell × seed, skips configs that already
    completed (unless --rerun) and ends with a summary table, the best cell marked."""

    def run_plan_cmd(plan):
        """``merx run`` with seeds or a sweep: every cell × seed, then the summary table."""
        from rich.table import Table

        from merx.compare import group_label
        from merx.config import config_hash
        from merx.sweep import completed_run, render_summary, run_plan, summary

        console = _console()
        store = _store(db)
        console.print(f"{plan.file}: {len(plan.cells)} cell(s) × {len(plan.seeds)} seed(s) "
                      f"({', '.join(map(str, plan.seeds))}) = {plan.size} runs")
        if dry_run:
            t = Table(title="plan", title_justify="left")
            for col in ("cell", "seed", "config hash", "status"):
                t.add_column(col)
            for cell in plan.cells:
                for cfg in cell.configs:
                    done = None if rerun else completed_run(store, cfg)
                    t.add_row(cell.label, str(cfg["seed"]), config_hash(cfg),
                              f"done as run{done}: skipped" if done else "to run")
            console.print(t)
            _dry_run(plan.cells[0].configs[0])
            return
        try:
            result = run_plan(plan, store, rerun=rerun, console=console, progress=True)
        except KeyboardInterrupt:
            fail("interrupted: the current run is recorded as 'interrupted'; finished runs are kept, and "
                 "running the same command again skips them", 130)
        table = summary(store, result, best_by)
        render_summary(table, console)
        groups = {group_label(c.configs[0]["name"], config_hash(c.configs[0], include_seed=False)) for c in plan.cells}
        console.print(f"recorded in {store.location}; `merx compare {' '.join(sorted(groups))}` compares the cells")
        if result.failed:
            fail(f"{len(result.failed)} of {plan.size} runs failed (merx runs --status failed)", 1)

    from merx.sweep import load_plan

    plan = load_plan(file, list(sets), seeds)
    if not plan.is_single:
        run_plan_cmd(plan)
        return
    cfg = plan.cells[0].configs[0]
    if dry_run:
        _dry_run(cfg)
        return
    from merx.pipeline import run

    console = _console()
    store = _store(db)
    try:
        result = run(cfg, file, store, progress=True, console=console)
    except KeyboardInterrupt:
        fail("interrupted: the run is recorded as 'interrupted' with its finished epochs "
             "(merx runs --status interrupted)", 130)
    except Exception as exc:
        from merx.train import TrainingDiverged

        if isinstance(exc, TrainingDiverged):
            fail(str(exc), 1)
        raise
    console.print(_metrics_table(f"run{result.run_id} test metrics (best epoch {result.best_epoch} of "
                                 f"{result.epochs_run}) beside baselines fitted on the training split",
                                 result.test_metrics, result.baselines))
    console.print(f"recorded as [bold]run{result.run_id}[/bold] in {store.location}; `merx show run{result.run_id}`")


@cli.command("runs")
@click.option("--experiment", help="Only runs of this experiment.")
@click.option("--status", type=click.Choice(["running", "completed", "failed", "interrupted"]))
@click.option("--tag", help="Only runs with this tag (merx tag RUN TAG).")
@click.option("--group", "group", metavar="HASH", help="Only runs of this group (a prefix of its hash).")
@click.option("--since", metavar="WHEN", help="Started at or after: 2025-03-01, 2025-03-01T14:00, or 7d / 12h ago.")
@click.option("--until", metavar="WHEN", help="Started before the end of: 2025-03-01 (that day included), ...")
@click.option("--sort", "sort_metric", metavar="METRIC", help="Order by this test metric, best first.")
@click.option("--ascending/--descending", default=None,
              help="Direction of --sort (default: best first: ascending for errors such as MAE).")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--db", envvar="MERX_DB", default=None, help="Results database (file or URL; default results.db).")
@_friendly_errors
def runs_cmd(experiment, status, tag, group, since, until, sort_metric, ascending, limit, as_json, db):
    """List recent runs, newest first (or best first with --sort METRIC)."""
    from merx.compare import higher_is_better

    if sort_metric is not None and ascending is None:
        ascending = higher_is_better(sort_metric) is False
    rows = _store(db).list_runs(experiment=experiment, status=status, limit=limit, tag=tag, group_hash=group,
                                since=since, until=until, sort_metric=sort_metric, ascending=bool(ascending))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.table import Table

    t = Table(title="runs" + (f", best {sort_metric} first" if sort_metric else ""), title_justify="left")
    annotated = any(r.get("tags") or r.get("note") for r in rows)
    cols = ["run", "experiment", "status", "task", "seed", "group", "started", "best/epochs"]
    cols += [sort_metric] if sort_metric else []
    cols += ["headline"] + (["tags / note"] if annotated else [])
    for col in cols:
        t.add_column(col, justify="right" if col == sort_metric else "left", no_wrap=col in ("run", "group"))
    for r in rows:
        cells = [f"run{r['id']}", r["experiment"], r["status"], r["task"], _fmt(r.get("seed")),
                 (r.get("group_hash") or "")[:8], str(r["started_at"])[:16].replace("T", " "),
                 f"{_fmt(r.get('best_epoch'))}/{_fmt(r.get('epochs_run'))}"]
        cells += [_fmt((r.get("metrics") or {}).get(sort_metric))] if sort_metric else []
        cells += [_headline(r.get("metrics") or {})]
        if annotated:
            cells += [", ".join(r.get("tags") or []) + (f" — {r['note']}" if r.get("note") else "")]
        t.add_row(*cells)
    _console().print(t)


def _headline(metrics: dict) -> str:
    for key in ("macro_f1", "quadrant_macro_f1"):
        if metrics.get(key) is not None:
            maes = [f"{d[0].upper()} MAE {metrics[f'{d}_mae']:.3f}" for d in ("valence", "arousal")
                    if metrics.get(f"{d}_mae") is not None]
            return ", ".join([f"{key} {metrics[key]:.3f}", *maes])
    return "-"


@cli.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--db", envvar="MERX_DB", default=None, help="Results database (file or URL; default results.db).")
@_friendly_errors
def show_cmd(run_id, as_json, db):
    """Show one run: config, learning curve, test metrics beside baselines, failures."""
    store = _store(db)
    run = store.get_run(run_id)
    if as_json:
        click.echo(json.dumps(run, indent=2, default=str))
        return
    from rich.table import Table

    from merx.config import flatten, to_toml

    console = _console()
    console.print(f"[bold]run{run['id']}[/bold] {run['experiment']} — [bold]{run['status']}[/bold]"
                  f" ({run['task']}, seed {run['seed']}, {run.get('device') or '?'}); started {run['started_at']}"
                  f", {_fmt(run.get('wall_seconds'))} s; config hash {run['config_hash']}")
    if run.get("error"):
        console.print(f"[red]error:[/red] {run['error']}")
    if run.get("experiment_file"):
        console.print(f"file: {run['experiment_file']}; git: {run.get('git_commit') or '-'}")
    from rich.text import Text

    # Text, not markup: "[train.lr]" section headers would otherwise be read as rich tags.
    console.print(Text(to_toml(run["config"]).rstrip(), style="dim"))
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
            t.add_column(c, justify="right")
        for e in sorted(epochs, key=int):
            mark = " *" if run.get("best_epoch") is not None and int(e) == run["best_epoch"] else ""
            t.add_row(f"{e}{mark}", *(_fmt(epochs[e].get(c)) for c in cols))
        console.print(t)
        console.print("* best epoch (its weights were restored for the test evaluation)")
    test = (run.get("metrics") or {}).get("test") or {}
    if test:
        console.print(_metrics_table("test metrics beside baselines", test, run.get("baselines") or {}))
    if run.get("plugins"):
        console.print("plugins: " + ", ".join(f"{p['kind']}:{p['name']} ({p['origin']}"
                                              f"{' ' + p['version'] if p.get('version') else ''})"
                                              for p in run["plugins"]))
    fails = run.get("failures") or []
    if fails:
        t = Table(title=f"{len(fails)} songs failed", title_justify="left", title_style="yellow")
        for col in ("song", "stage", "reason"):
            t.add_column(col)
        for f in fails:
            t.add_row(f["song_id"], f["stage"], f["reason"])
        console.print(t)


def _attach_command_modules():
    import importlib

    from merx.commands import MODULES

    for name in MODULES:
        importlib.import_module(name).attach(cli)


_attach_command_modules()


def main():
    cli(prog_name="merx")


if __name__ == "__main__":
    main()
