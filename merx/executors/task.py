"""One cell × seed as a unit of work that any executor can ship to a worker, and what came of it.

A :class:`Task` holds everything a worker needs and nothing of the driver's: the resolved
config, the results database's URL, the working directory and merx's plugin settings. It
pickles (Ray and submitit send it) and turns into JSON (a local worker process reads it), and
:func:`execute` runs it the same way everywhere: one ``merx.pipeline.run``, or
``merx.pipeline.resume`` of a lost or interrupted run, writing to the shared store.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field

#: Environment variables that decide which plugins a worker loads: a worker's registry must be
#: the driver's, or a sweep's cells would resolve differently where they run.
PASSED_ENV = ("MERX_LOAD_PLUGINS", "MERX_NO_LOCAL_PLUGINS", "MERX_PLUGINS_DIR", "MERX_DB_BUSY_TIMEOUT",
              "MERX_HEARTBEAT_TIMEOUT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NUMBA_CACHE_DIR")


@dataclass
class Task:
    """Run (or resume) one cell × seed of a plan. ``index`` is its place in the plan (0-based)."""

    index: int
    cell: int
    seed: int
    config: dict
    config_hash: str
    file: str | None
    db: str
    cwd: str
    resume_run: int | None = None
    attempt: int = 0
    threads: int | None = None
    env: dict = field(default_factory=dict)

    def retry(self, resume_run: int | None) -> Task:
        """The next attempt: resume ``resume_run`` (None: the run never got recorded, start it)."""
        return Task(**{**asdict(self), "resume_run": resume_run, "attempt": self.attempt + 1})

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Outcome:
    """``completed``, ``failed`` (the run raised), ``interrupted`` (cancelled) or ``lost`` (the
    worker died or its job vanished: reported by the executor, never by the worker itself)."""

    status: str
    run_id: int | None = None
    error: str | None = None


def passed_env() -> dict:
    """The driver's plugin and store settings, for its workers."""
    return {k: os.environ[k] for k in PASSED_ENV if k in os.environ}


def execute(task: Task | dict) -> Outcome:
    """Run ``task`` in this process (a worker): its run's every step goes to the shared store.

    A run that raises is ``failed`` (recorded by the pipeline; the sweep goes on); an interrupt
    (the driver cancelling: SIGINT or SIGTERM) is ``interrupted``, the run recorded so."""
    if isinstance(task, dict):
        task = Task(**task)
    os.environ.update(task.env)
    with contextlib.suppress(OSError):  # a cluster node without the driver's folder: stay where the job started
        os.chdir(task.cwd)
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    from merx import pipeline
    from merx.store import RunStore

    store = RunStore(task.db, write=True)
    try:
        if task.resume_run is not None:
            result = pipeline.resume(store, task.resume_run, progress=False)
        else:
            result = pipeline.run(task.config, task.file, store, progress=False)
        return Outcome(result.status, result.run_id)
    except KeyboardInterrupt as exc:
        return Outcome("interrupted", getattr(exc, "run_id", None) or _newest(store, task), "cancelled")
    except Exception as exc:  # recorded as failed by the pipeline; the driver reports it
        return Outcome("failed", _newest(store, task), f"{type(exc).__name__}: {exc}")
    finally:
        store.close()


def _newest(store, task: Task) -> int | None:
    """The run this task recorded, if it got that far: the resumed one, or the newest of its config."""
    if task.resume_run is not None:
        return task.resume_run
    with contextlib.suppress(Exception):
        rows = store.list_runs(config_hash=task.config_hash, limit=1)
        return rows[0]["id"] if rows else None
    return None
