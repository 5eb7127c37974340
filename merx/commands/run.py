"""CLI commands: ``merx run`` (one experiment, its seeds, or its sweep; ``--dry-run`` builds only)
and ``merx resume`` (an interrupted, failed or lost run, continued under its id)."""

from __future__ import annotations

import click

from merx.commands.options import db_option, experiment_argument, set_option
from merx.commands.output import console, metrics_table, plain


@click.command("run")
@experiment_argument(required=False)
@set_option()
@click.option("--seeds", metavar="N|LIST", default=None,
              help="Run N seeds (seed, seed+1, ...) or the listed ones (0,7,42), recorded as one group; "
                   "overrides the file's [sweep] seeds / train.seeds.")
@click.option("--rerun", is_flag=True, help="With seeds or a [sweep]: also run configs that already completed.")
@click.option("--best-by", metavar="METRIC", default=None,
              help="Test metric that marks the best cell of a sweep (default: the monitored one).")
@click.option("--dry-run", is_flag=True, help="Resolve, build the model, print parameter counts, and exit.")
@click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default=None,
              help="Where the runs execute: this machine, Ray tasks, Slurm jobs (default: [executor] name, else "
                   "local).")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="local: N runs at once in worker processes, spread over the GPUs (default 1: in this process).")
@click.option("--cpus-per-run", type=click.IntRange(min=1), default=None, metavar="N",
              help="ray, slurm: CPU cores per run.")
@click.option("--gpus-per-run", type=click.FloatRange(min=0), default=None, metavar="X",
              help="ray: GPUs per run, fractions allowed (0.25); slurm: whole GPUs per job.")
@click.option("--max-retries", type=click.IntRange(min=0), default=None, metavar="N",
              help="Resume a run whose worker died up to N times (default: [executor] max_retries, else 1).")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="ray: the cluster to join (default $RAY_ADDRESS; none: a local Ray instance).")
@click.option("--partition", default=None, help="slurm: the partition to submit to.")
@click.option("--time", "time_min", type=click.IntRange(min=1), default=None, metavar="MINUTES",
              help="slurm: time limit of each job.")
@click.option("--resume", "resume_run", metavar="RUN", default=None,
              help="Continue RUN (interrupted, failed or lost) instead of starting one: as merx resume RUN.")
@db_option()
def run_cmd(file, sets, seeds, rerun, best_by, dry_run, resume_run, db, **executor):
    """Train and evaluate the experiment in FILE; record everything in the results database.

    With --seeds, or a [sweep] table in FILE, runs every cell × seed, skips configs that already
    completed (unless --rerun), resumes those whose run was lost or interrupted, and ends with a
    summary table, the best cell marked. --executor and --jobs run them in parallel: see the
    README's "Scaling out"."""
    from merx.commands.plan import load_plan
    from merx.errors import UsageError

    if resume_run is not None:
        if file or sets or seeds or rerun or dry_run or any(v is not None for v in executor.values()):
            raise UsageError("--resume RUN continues the run with its own recorded config in this process: give "
                             "no FILE, --set, --seeds, --rerun, --dry-run or executor option with it")
        _resume(resume_run, db)
        return
    if file is None:
        raise UsageError("missing the experiment FILE: merx run FILE (or merx run --resume RUN)")

    plan = load_plan(file, sets, seeds, db=db)
    settings = _executor_settings(plan, executor)
    if not plan.is_single or settings.name != "local" or settings.jobs > 1:
        _run_plan(plan, rerun, best_by, dry_run, db, settings)
        return
    cfg = plan.cells[0].configs[0]
    if dry_run:
        _print_dry_run(cfg)
        return
    from merx.pipeline import run
    from merx.store import RunStore

    store = RunStore(db, write=True)  # a read-only, damaged or locked database fails here, before any work
    _single(store, lambda out: run(cfg, file, store, progress=True, console=out),
            "the run had not started yet (its data and features were being prepared), so nothing was recorded")


@click.command("resume")
@click.argument("run_id", metavar="RUN")
@db_option()
def resume_cmd(run_id, db):
    """Continue RUN (interrupted, failed or lost) under its own id, from its last finished epoch.

    The remaining epochs see the data order and random draws of a run that was never stopped;
    the epochs already recorded are kept. merx runs shows which runs are lost."""
    _resume(run_id, db)


def _resume(run_id, db):
    from merx.pipeline import resume
    from merx.store import RunStore

    store = RunStore(db, write=True)
    _single(store, lambda out: resume(store, run_id, progress=True, console=out),
            "the run had not been taken up again yet (its data and features were being prepared); "
            "it is recorded as it was, and merx resume can be run again")


def _single(store, start, not_recorded: str):
    """Run one training (``start(console) -> RunResult``), then print its metrics beside baselines."""
    from merx.interrupts import interrupted_error, sigterm_as_interrupt

    out = console()
    with sigterm_as_interrupt():  # SIGTERM (timeout, Slurm, docker stop) ends the run as Ctrl-C does
        try:
            result = start(out)
        except KeyboardInterrupt as exc:
            raise interrupted_error(
                exc, "{run} is recorded as 'interrupted' with its finished epochs (merx show {run}; "
                     "merx resume {run} continues it)", not_recorded) from None
    out.print(metrics_table(f"run{result.run_id} test metrics (best epoch {result.best_epoch} of "
                            f"{result.epochs_run}) beside baselines fitted on the training split",
                            result.test_metrics, result.baselines))
    from rich.text import Text

    out.print(Text.assemble("recorded as ", (f"run{result.run_id}", "bold"),
                            plain(f" in {store.location}; `merx show run{result.run_id}`")))


def _executor_settings(plan, given: dict):
    """The file's ``[executor]`` table with the options given on the command line over it."""
    from merx.config.settings import ExecutorSettings
    from merx.errors import UsageError

    names = {"executor": "name", "time_min": "time"}
    over = {names.get(k, k): v for k, v in given.items() if v is not None}
    settings = ExecutorSettings.from_table({**plan.executor, **over})
    for option, key in _ONLY_FOR.items():
        if given.get(key) is not None and settings.name not in _ONLY_FOR_EXECUTORS[option]:
            raise UsageError(f"{option} does not apply to --executor {settings.name}",
                             hint=f"it is for --executor {' or '.join(_ONLY_FOR_EXECUTORS[option])}")
    return settings


#: Options that mean something to some executors only: given to another, they are a mistake.
_ONLY_FOR = {"--jobs": "jobs", "--cpus-per-run": "cpus_per_run", "--gpus-per-run": "gpus_per_run",
             "--ray-address": "ray_address", "--partition": "partition", "--time": "time_min"}
_ONLY_FOR_EXECUTORS = {"--jobs": ("local",), "--cpus-per-run": ("ray", "slurm"), "--gpus-per-run": ("ray", "slurm"),
                       "--ray-address": ("ray",), "--partition": ("slurm",), "--time": ("slurm",)}


def _run_plan(plan, rerun, best_by, dry_run, db, settings):
    """``merx run`` with seeds, a sweep or an executor: every cell × seed, then the summary table."""
    from rich.table import Table

    from merx.compare import group_label
    from merx.config import config_hash
    from merx.errors import RunError
    from merx.interrupts import interrupted_error, sigterm_as_interrupt
    from merx.store import RunStore
    from merx.sweep import cell_state, render_summary, run_plan, summary

    out = console()
    store = RunStore(db, write=not dry_run)
    out.print(plain(f"{plan.file}: {len(plan.cells)} cell(s) × {len(plan.seeds)} seed(s) "
                    f"({', '.join(map(str, plan.seeds))}) = {plan.size} runs"))
    if dry_run:
        t = Table(title="plan", title_justify="left")
        for col in ("cell", "seed", "config hash", "status"):
            t.add_column(col)
        for cell in plan.cells:
            for cfg in cell.configs:
                state, rid = ("new", None) if rerun else cell_state(store, cfg)
                t.add_row(plain(cell.label), str(cfg["seed"]), config_hash(cfg),
                          {"done": f"done as run{rid}: skipped", "resume": f"resume run{rid}"}.get(state, "to run"))
        out.print(t)
        _print_dry_run(plan.cells[0].configs[0])
        return
    kept = "finished runs are kept, and running the same command again skips them"
    parallel = settings.name != "local" or settings.jobs > 1
    with sigterm_as_interrupt():
        try:
            if parallel:
                from merx.executors import open_backend
                from merx.executors.driver import run_with

                backend = open_backend(settings)  # a missing extra or an unreachable cluster fails here
                result = run_with(backend, plan, store, rerun=rerun, max_retries=settings.max_retries, console=out)
            else:
                result = run_plan(plan, store, rerun=rerun, console=out, progress=True)
        except KeyboardInterrupt as exc:
            if parallel:
                raise interrupted_error(exc, "", "the runs in flight were cancelled and are recorded as "
                                        f"'interrupted'; {kept} and resumes the interrupted ones") from None
            raise interrupted_error(exc, "the current run, {run}, is recorded as 'interrupted'; " + kept,
                                    "the current run had not started, so nothing of it was recorded; " + kept,
                                    ) from None
    render_summary(summary(store, result, best_by), out)
    groups = {group_label(c.configs[0]["name"], config_hash(c.configs[0], include_seed=False)) for c in plan.cells}
    out.print(plain(f"recorded in {store.location}; `merx compare {' '.join(sorted(groups))}` compares the cells"))
    if result.failed:
        raise RunError(f"{len(result.failed)} of {plan.size} runs failed (merx runs --status failed)", exit_code=1)


def _print_dry_run(cfg) -> None:
    from rich.table import Table

    t = Table(title=plain(f"{cfg['name']}: parameters (architecture only, no weights loaded)"), title_justify="left")
    for col in ("part", "module", "total", "trainable"):
        t.add_column(col, justify="left" if col in ("part", "module") else "right")
    from merx.dry_run import dry_run  # builds the model and runs one forward pass

    for row in dry_run(cfg):
        t.add_row(plain(row.part), plain(row.module), f"{row.total:,}", f"{row.trainable:,}")
    console().print(t)


def attach(cli) -> None:
    cli.add_command(run_cmd)
    cli.add_command(resume_cmd)
