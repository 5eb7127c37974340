"""Seeds and sweeps: one experiment file becomes cells × seeds of resolved configs, run in turn.

An experiment file may declare a grid in a ``[sweep]`` table, one list of values per flattened
config key, and the seeds to run::

    [sweep]
    "model.fusion.name" = ["concat", "audio_attention", "cross_attention"]
    "train.lr.head" = [1e-3, 3e-4]
    seeds = 3            # seeds seed, seed+1, seed+2; or a list: seeds = [0, 7, 42]

Seeds may also be given as ``train.seeds`` (same forms) or on the command line
(``merx run FILE --seeds 5`` or ``--seeds 0,7,42``, which wins over the file). Neither
``[sweep]`` nor ``train.seeds`` is part of the resolved config: they say which configs to run,
not what one run computes, so a run's ``config_hash`` is the same whether it was started
alone, in a group of seeds or in a sweep. That is what lets a sweep skip every cell whose
identical config (same ``config_hash``) already completed, unless ``--rerun``.

The runs of one cell differ only by seed, so they share a ``group_hash``: ``merx compare``
reports them as a group (mean ± std, 95 % interval, a paired test across seeds).
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from merx.config import (
    SCHEMA,
    ConfigError,
    apply_sets,
    config_hash,
    flatten,
    key_parts,
    load_file,
    parse_set,
    resolve,
    toml_value,
)

SEEDS_KEY = "seeds"


@dataclass
class Cell:
    """One point of the grid: the swept values, and one resolved config per seed."""

    index: int
    values: dict[str, Any]
    configs: list[dict]

    @property
    def label(self) -> str:
        if not self.values:
            return "(as written)"
        return ", ".join(f"{k}={_short(v)}" for k, v in self.values.items())


@dataclass
class Plan:
    """What ``merx run FILE`` will do: ``cells`` × ``seeds`` runs."""

    file: str
    keys: list[str]
    seeds: list[int]
    cells: list[Cell]
    seeds_given: bool = False
    #: The file's ``[executor]`` table, validated, every default filled (``merx.config.schema.EXECUTOR``).
    executor: dict = field(default_factory=dict)

    @property
    def is_single(self) -> bool:
        """One run, as a plain ``merx run`` without seeds or sweep."""
        return not self.keys and not self.seeds_given and len(self.seeds) == 1

    @property
    def size(self) -> int:
        return sum(len(c.configs) for c in self.cells)


@dataclass
class CellRun:
    """What happened to one (cell, seed): ``completed`` now, ``skipped`` (done before), ``failed``,
    or, under a parallel executor, ``lost`` (its worker died more often than retried) or ``interrupted``."""

    cell: int
    seed: int
    config_hash: str
    status: str
    run_id: int | None = None
    error: str | None = None


@dataclass
class SweepResult:
    plan: Plan
    runs: list[CellRun] = field(default_factory=list)

    @property
    def failed(self) -> list[CellRun]:
        """The runs that did not complete: failed, lost, or interrupted."""
        return [r for r in self.runs if r.status in ("failed", "lost", "interrupted")]


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value)


def parse_seeds(value: Any, base_seed: int, where: str = "seeds", file: str | None = None) -> list[int]:
    """Seeds from a count (``5`` -> base .. base+4), a list (``[0, 7]``), or text (``"5"``, ``"0,7,42"``).

    Errors name ``where`` (``--seeds``, or the key in ``file`` that gave them)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if "," not in text else [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"expected a number of seeds (5) or a list of seeds (0,7,42), got {text!r}",
                              file, where) from None
    if isinstance(value, bool):
        raise ConfigError(f"expected a number of seeds or a list of seeds, got {value!r}", file, where)
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"the number of seeds must be at least 1, got {value}", file, where)
        return list(range(base_seed, base_seed + value))
    integers = isinstance(value, (list, tuple)) and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    if integers and value:
        if len(set(value)) != len(value):
            raise ConfigError(f"seeds repeat: {list(value)}", file, where)
        for s in value:
            # Checked here, not when each seed's config resolves: there the file's `seed` would be blamed.
            problem = SCHEMA["seed"].range_problem(s)
            if problem:
                raise ConfigError(f"every seed {problem[0]}", file, where)
        return list(value)
    raise ConfigError(f"expected a number of seeds (5) or a non-empty list of integer seeds, got {value!r}",
                      file, where)


def load_plan(file: str, sets: list[str] | tuple = (), seeds: str | int | list | None = None,
              registry=None) -> Plan:
    """Read ``file`` (extends and ``--set`` overrides applied), take out ``[sweep]`` and
    ``train.seeds``, and resolve one config per cell and seed. Every config is validated here,
    before anything runs: a typo in the last cell fails at once, not after hours."""
    file = str(file)
    raw = apply_sets(load_file(file), list(sets))
    sweep = raw.pop("sweep", None)
    if sweep is None:
        sweep = {}
    if not isinstance(sweep, dict):
        raise ConfigError("expected a table of config keys, each with a list of values", file, "sweep")
    sweep = dict(sweep)
    executor = _executor_table(raw.pop("executor", None), file)
    file_seeds = sweep.pop(SEEDS_KEY, None)
    seeds_key = f"sweep.{SEEDS_KEY}"
    train = raw.get("train")
    if isinstance(train, dict) and SEEDS_KEY in train:
        train = raw["train"] = dict(train)
        if file_seeds is not None:
            raise ConfigError("seeds are given twice, in [sweep] and in [train]: keep one", file, "train.seeds")
        file_seeds, seeds_key = train.pop(SEEDS_KEY), f"train.{SEEDS_KEY}"
    grid = flatten(sweep)
    for key, values in grid.items():
        try:
            key_parts(key)
        except ConfigError as exc:
            raise ConfigError(exc.message, file, "sweep") from None
        if not isinstance(values, list) or not values:
            raise ConfigError(f"a swept key needs a non-empty list of values, got {values!r} "
                              f'(e.g. "model.fusion.name" = ["concat", "cross_attention"])', file, f"sweep.{key}")
    if "seed" in grid:
        raise ConfigError("list the seeds as seeds = [...] (or --seeds), not as a swept 'seed': the runs of one "
                          "cell differ only by seed and form its group", file, "sweep.seed")
    overridden = {parse_set(item)[0] for item in sets} & set(grid)
    if overridden:
        key = sorted(overridden)[0]
        raise ConfigError(f"--set {key} overrides a key the sweep varies: remove it from [sweep] or from --set",
                          file, f"sweep.{key}")

    base = resolve(copy.deepcopy(raw), file, registry)
    given = seeds if seeds is not None else file_seeds
    seed_list = parse_seeds(given, base["seed"], *(("--seeds", None) if seeds is not None else (seeds_key, file))) \
        if given is not None else [base["seed"]]

    keys = list(grid)
    cells = []
    for index, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        values = dict(zip(keys, combo, strict=True))
        configs = []
        try:
            # The cell's values are the file's own ([sweep]), not options: origin=None.
            cell_raw = apply_sets(raw, [f"{k}={toml_value(v)}" for k, v in values.items()], origin=None)
            for seed in seed_list:
                seeded = copy.deepcopy(cell_raw)
                seeded["seed"] = seed
                configs.append(resolve(seeded, file, registry))
        except ConfigError as exc:
            if not values:
                raise
            raise _cell_error(exc, file, values) from exc
        cells.append(Cell(index, values, configs))
    return Plan(file, keys, seed_list, cells, seeds_given=given is not None, executor=executor)


def _executor_table(table: Any, file: str) -> dict:
    """The file's ``[executor]`` table checked against its schema, defaults filled in."""
    from merx.config.schema import EXECUTOR
    from merx.config.validate import validate

    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError("expected a table (e.g. [executor] with name = \"ray\")", file, "executor")
    return validate(table, EXECUTOR, file, "executor.", None)


def _cell_error(exc: ConfigError, file: str, values: dict) -> ConfigError:
    """A cell's error as the file's: the values came from its [sweep] table, never from an option.

    The key stays on the error (``sweep.<key>`` when it is a swept key's own value) for callers;
    the message keeps the resolved key, as the cell's label says which values were combined."""
    label = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
    inner = ": ".join(x for x in (exc.file if exc.file != file else None, exc.key, exc.message) if x)
    out = ConfigError(f"sweep cell {label}: {inner}", file, hint=exc.hint)
    swept = next((k for k in values if exc.key and (exc.key == k or exc.key.startswith((f"{k}.", f"{k}[")))), None)
    out.key = f"sweep.{swept}" if swept else exc.key
    return out


# -- running --------------------------------------------------------------------------------

#: Statuses of a cell's newest run that a sweep continues rather than starting the cell again:
#: a run stopped from outside (its worker died, Ctrl-C, a pre-empted job). Narrower than
#: ``merx.store.RESUMABLE``, what ``merx resume`` takes when asked: a failed run stopped on its own
#: error, so a sweep runs that cell afresh rather than resuming it unasked.
SWEEP_RESUMES = ("lost", "interrupted")


def cell_state(store, cfg: dict) -> tuple[str, int | None]:
    """What a cell × seed needs: ``("done", run)`` (a completed run has exactly this config),
    ``("resume", run)`` (its newest run is one of :data:`SWEEP_RESUMES`) or ``("new", None)``.
    The one answer for every sweep: sequential, the executors' driver and the dry-run plan."""
    h = config_hash(cfg)
    done = store.list_runs(config_hash=h, status="completed", limit=1)
    if done:
        return "done", done[0]["id"]
    newest = store.list_runs(config_hash=h, limit=1)
    if newest and newest[0]["status"] in SWEEP_RESUMES:
        return "resume", newest[0]["id"]
    return "new", None


def run_plan(plan: Plan, store, rerun: bool = False, console=None, progress: bool = True) -> SweepResult:
    """Run every cell × seed of ``plan`` in turn, skipping configs that already completed (unless
    ``rerun``) and resuming those whose newest run was lost or interrupted. A run that fails is
    recorded and the sweep goes on; Ctrl-C stops it. (Several at once: ``merx.executors``.)"""
    from merx import pipeline

    result = SweepResult(plan)
    k = 0
    for cell in plan.cells:
        for cfg in cell.configs:
            k += 1
            h = config_hash(cfg)
            where = f"[{k}/{plan.size}] {cell.label}, seed {cfg['seed']}"
            state, done = ("new", None) if rerun else cell_state(store, cfg)
            if state == "done":
                result.runs.append(CellRun(cell.index, cfg["seed"], h, "skipped", done))
                if console is not None:
                    console.print(f"[dim]{where}: already completed as run{done}, skipped "
                                  "(--rerun runs it again)[/dim]")
                continue
            if console is not None:
                console.print(f"[bold]{where}[/bold]" + (f": resuming run{done}, which was lost or interrupted"
                                                         if state == "resume" else ""))
            try:
                if state == "resume":
                    out = pipeline.resume(store, done, progress=progress, console=console)
                else:
                    out = pipeline.run(cfg, plan.file, store, progress=progress, console=console)
                result.runs.append(CellRun(cell.index, cfg["seed"], h, out.status, out.run_id))
            except Exception as exc:  # one failed cell must not cost the others; Ctrl-C still stops
                rows = store.list_runs(config_hash=h, limit=1)
                run_id = rows[0]["id"] if rows and rows[0]["status"] == "failed" else None
                error = f"{type(exc).__name__}: {exc}"
                result.runs.append(CellRun(cell.index, cfg["seed"], h, "failed", run_id, error))
                if console is not None:
                    console.print(f"[red]{where} failed:[/red] {type(exc).__name__}: {exc}")
    return result


# -- the summary ----------------------------------------------------------------------------

def summary(store, result: SweepResult, metric: str | None = None) -> dict:
    """Per cell: its runs and mean ± std of the headline metrics; ``best`` is the index of the
    cell with the best mean ``metric`` (default: :func:`merx.compare.primary_metric`)."""
    from merx.compare import DEFAULT_TESTED, primary_metric
    from merx.metrics import higher_is_better
    from merx.stats import summarize

    plan = result.plan
    first_cfg = plan.cells[0].configs[0]
    metric = metric or primary_metric(first_cfg)
    columns = [metric] + [m for m in DEFAULT_TESTED[first_cfg["task"]] if m != metric]
    rows = []
    for cell in plan.cells:
        runs = [r for r in result.runs if r.cell == cell.index]
        metrics = [store.get_run(r.run_id)["metrics"].get("test", {}) if r.run_id is not None
                   and r.status in ("completed", "skipped")
                   else {} for r in runs]
        rows.append({
            "cell": cell.label, "values": cell.values,
            "runs": [{"run": f"run{r.run_id}" if r.run_id else None, "seed": r.seed, "status": r.status,
                      "error": r.error} for r in runs],
            "metrics": {m: summarize([x.get(m) for x in metrics]).to_dict() for m in columns},
        })
    hib = higher_is_better(metric)
    scored = [(i, row["metrics"][metric]["mean"]) for i, row in enumerate(rows)
              if row["metrics"][metric]["mean"] is not None]
    best = None
    if len(scored) > 1 and hib is not None:  # "best" of one cell says nothing
        best = (max if hib else min)(scored, key=lambda x: x[1])[0]
    return {"metric": metric, "higher_is_better": hib, "columns": columns, "cells": rows, "best": best}


def render_summary(table: dict, console) -> None:
    """The summary as a rich table, the best cell marked. Cell labels quote config values, and
    metric names come from the command line: text, never markup."""
    from rich.text import Text

    from merx.commands.output import plain
    from merx.compare import format_summary, titled_table

    direction = {True: "higher is better", False: "lower is better",
                 None: "direction unknown"}[table["higher_is_better"]]
    t = titled_table(f"sweep summary: mean ± std over seeds; best by {table['metric']} ({direction})")
    t.add_column("")
    t.add_column("cell")
    t.add_column("runs")
    for m in table["columns"]:
        t.add_column(plain(m), justify="right", style="bold" if m == table["metric"] else None)
    for i, row in enumerate(table["cells"]):
        runs = []
        for r in row["runs"]:
            name = r["run"] or "-"
            runs.append(name + {"skipped": " (done before)", "failed": " (failed)", "lost": " (lost)",
                                "interrupted": " (interrupted)"}.get(r["status"], ""))
        best = i == table["best"]
        t.add_row(Text("★ best" if best else "", style="bold green"), plain(row["cell"], "bold" if best else None),
                  plain(", ".join(runs)),
                  *(format_summary(row["metrics"][m], interval=False) for m in table["columns"]))
    console.print(t)
