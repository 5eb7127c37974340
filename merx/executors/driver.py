"""The sweep driver for executors that run several cells at once (local jobs, Ray, Slurm).

It decides what each cell × seed needs (``merx.sweep.cell_state``: nothing, a resume or a fresh
run, as the sequential sweep and the dry-run plan do), hands the tasks to a backend, shows progress as
outcomes arrive, resumes a run whose worker died up to ``max_retries`` times, and on Ctrl-C
cancels what is in flight (each worker records its run as interrupted) before it stops.

A backend has ``capacity`` (tasks at once; None: all, the cluster queues them), ``submit(task)``,
``poll(timeout) -> [(task, outcome)]``, ``in_flight()``, ``cancel() -> [(task, outcome)]``,
``close()`` and ``describe()``. Outcomes are ``completed``, ``failed``, ``interrupted`` or
``lost`` (the worker vanished; only the backend can tell).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from merx.config import config_hash
from merx.executors.task import Outcome, Task, passed_env


@dataclass
class Counts:
    total: int
    done: int = 0
    failed: int = 0
    lost: int = 0
    interrupted: int = 0

    def text(self, running: int, queues: bool = False) -> str:
        state = "running or queued" if queues else "running"
        return (f"{self.done}/{self.total} done, {running} {state}, {self.failed} failed, {self.lost} lost"
                + (f", {self.interrupted} interrupted" if self.interrupted else ""))


def run_with(backend, plan, store, rerun: bool = False, max_retries: int = 1, console=None):
    """Run ``plan`` on ``backend``; returns a ``merx.sweep.SweepResult``. Ctrl-C cancels the runs
    in flight, waits for them to record themselves interrupted, and propagates."""
    from merx.sweep import CellRun, SweepResult, cell_state

    result = SweepResult(plan)
    counts = Counts(plan.size)
    labels: dict[int, str] = {}
    queue: deque[Task] = deque()
    cwd, env = _cwd(), passed_env()
    newest = store.list_runs(limit=1)
    floor = newest[0]["id"] if newest else 0  # runs recorded after this one are this sweep's

    def say(text: str) -> None:
        if console is not None:
            console.print(text, highlight=False)

    k = 0
    for cell in plan.cells:
        for cfg in cell.configs:
            labels[k] = f"[{k + 1}/{plan.size}] {_escape(cell.label)}, seed {cfg['seed']}"
            h = config_hash(cfg)
            state, run_id = ("new", None) if rerun else cell_state(store, cfg)
            if state == "done":
                result.runs.append(CellRun(cell.index, cfg["seed"], h, "skipped", run_id))
                counts.done += 1
                say(f"[dim]{labels[k]}: already completed as run{run_id}, skipped (--rerun runs it again)[/dim]")
            else:
                if state == "resume":
                    say(f"{labels[k]}: resuming run{run_id}, which was lost or interrupted")
                queue.append(Task(k, cell.index, cfg["seed"], cfg, h, plan.file, store.url, cwd, resume_run=run_id,
                                  env=env))
            k += 1
    if not queue:
        return result
    say(f"{len(queue)} run(s) on {backend.describe()}")

    def finish(task: Task, out: Outcome) -> None:
        where = labels[task.index]
        recorded = _recorded_run(store, task, floor) if out.status == "lost" else None
        if recorded is not None and recorded[1] == "completed":  # died after its run was complete
            out = Outcome("completed", recorded[0])
        if out.status == "lost" and task.attempt < max_retries:
            resume_run = recorded and recorded[0]
            again = f"resuming run{resume_run}" if resume_run is not None else "starting it again (nothing recorded)"
            say(f"[yellow]{where}: lost[/yellow] ({_escape(out.error or '')}); {again}, "
                f"retry {task.attempt + 1} of {max_retries}")
            queue.append(task.retry(resume_run))
            return
        run = f"run{out.run_id}" if out.run_id is not None else "(not recorded)"
        if out.status == "completed":
            counts.done += 1
            now = counts.text(backend.in_flight(), backend.capacity is None)
            say(f"{where}: completed as [bold]{run}[/bold]  [dim]{now}[/dim]")
        elif out.status == "failed":
            counts.failed += 1
            say(f"[red]{where} failed as {run}:[/red] {_escape(out.error or '')}")
        elif out.status == "interrupted":
            counts.interrupted += 1
            say(f"[yellow]{where}: interrupted as {run}[/yellow]" if out.run_id is not None
                else f"[yellow]{where}: cancelled before it started[/yellow]")
        else:
            counts.lost += 1
            run_id = out.run_id if out.run_id is not None else (recorded and recorded[0])
            out = Outcome("lost", run_id, out.error)
            say(f"[red]{where}: lost[/red] ({_escape(out.error or '')}); gave up after {task.attempt} retries"
                + (f" (merx resume run{run_id})" if run_id is not None else ""))
        result.runs.append(CellRun(task.cell, task.seed, task.config_hash, out.status, out.run_id, out.error))

    def ready(task: Task) -> bool:
        """A lost run on another host stays ``running`` until its heartbeat lapses: resuming it
        before then would be refused, so its retry waits (the local host knows at once)."""
        if task.resume_run is None or task.attempt == 0:
            return True
        if store.get_run(task.resume_run)["status"] != "running":
            return True
        if task.index not in waiting:
            waiting.add(task.index)
            say(f"{labels[task.index]}: waiting until run{task.resume_run}'s heartbeat lapses "
                "(MERX_HEARTBEAT_TIMEOUT) before resuming it")
        return False

    waiting: set[int] = set()
    # On a terminal, a status line under the per-run lines keeps the counts and the time in view
    # between outcomes (a run can take hours); elsewhere (logs, CI) the per-run lines say it all.
    live = console.status("") if console is not None and console.is_terminal else None
    started = time.monotonic()
    if live is not None:
        live.start()
    try:
        while queue or backend.in_flight():
            held = []
            while queue and (backend.capacity is None or backend.in_flight() < backend.capacity):
                task = queue.popleft()
                if ready(task):
                    backend.submit(task)
                else:
                    held.append(task)
            queue.extend(held)
            if live is not None:
                elapsed = int(time.monotonic() - started)
                live.update(f"{counts.text(backend.in_flight(), backend.capacity is None)}; "
                            f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d} elapsed")
            if held and not backend.in_flight():
                time.sleep(1.0)
            for task, out in backend.poll(0.5):
                finish(task, out)
    except KeyboardInterrupt:
        say(f"[yellow]cancelling {backend.in_flight()} run(s) in flight and {len(queue)} queued…[/yellow]")
        for task, out in backend.cancel():
            if out.status != "completed":
                recorded = _recorded_run(store, task, floor)
                out = Outcome("interrupted", out.run_id or (recorded and recorded[0]), out.error)
            finish(task, out)
        raise
    finally:
        if live is not None:
            live.stop()
        backend.close()
    say(f"[bold]{counts.text(0)}[/bold]")
    return result


def _recorded_run(store, task: Task, floor: int) -> tuple[int, str] | None:
    """``(run id, status)`` of the run ``task`` recorded before its worker died, if any: the one
    it resumed, else its config's newest run begun during this sweep (id above ``floor``); a
    worker records its run before the first epoch, after preparing the data."""
    if task.resume_run is not None:
        return task.resume_run, store.get_run(task.resume_run)["status"]
    rows = store.list_runs(config_hash=task.config_hash, limit=1)
    if rows and rows[0]["id"] > floor:
        return rows[0]["id"], rows[0]["status"]
    return None


def _cwd() -> str:
    import os

    return os.getcwd()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
