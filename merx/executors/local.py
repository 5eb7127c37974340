"""``--executor local --jobs N``: N worker processes at once on this machine.

Each job slot has its own ``python -m merx.executors.worker`` process, fed one task at a time
and kept for the next (Python and torch are imported once per slot, not once per run), rather
than a ``ProcessPoolExecutor``: a worker killed by the kernel (out of memory) or by hand then
loses only its run, and the slot gets a fresh worker, where a killed pool worker breaks the pool
and every run queued on it. Slots are spread over the visible GPUs round-robin
(``CUDA_VISIBLE_DEVICES``), several per GPU when there are more jobs than GPUs; the machine's CPU
cores are split between the slots (torch threads), so N runs do not each start one thread per core.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from merx.executors.task import Outcome, Task

#: Seconds a cancelled worker gets to record its run as interrupted before it is killed.
CANCEL_GRACE = 30.0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch CUDA build, no driver: a CPU machine
        return []


class _Worker:
    """One job slot's worker process and the task it is running (None: idle)."""

    def __init__(self, proc: subprocess.Popen, slot: int, log: Path):
        self.proc, self.slot, self.log = proc, slot, log
        self.task: Task | None = None


class LocalBackend:
    """``jobs`` job slots, each served by one long-lived worker process (started on first use,
    started again when it dies); the driver queues what does not fit."""

    def __init__(self, jobs: int, gpus: list[str] | None = None, cores: int | None = None):
        self.capacity = jobs
        self.gpus = visible_gpus() if gpus is None else gpus
        self.threads = max(1, (cores or usable_cores()) // jobs)
        self.folder = Path(tempfile.mkdtemp(prefix="merx-jobs-"))
        self.workers: dict[int, _Worker] = {}  # slot -> its worker

    def describe(self) -> str:
        where = (f"{len(self.gpus)} GPU(s) ({', '.join(self.gpus)})" if self.gpus
                 else f"CPU, {self.threads} thread(s) each")
        return f"{self.capacity} local worker process(es) at once on {where}"

    def _worker(self, slot: int, task: Task) -> _Worker:
        worker = self.workers.get(slot)
        if worker is not None and worker.proc.poll() is None:
            return worker
        env = {**os.environ, **task.env}
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        if self.gpus and not _names_a_gpu(task.config):
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        log = self.folder / f"worker{slot}.log"
        with open(log, "ab") as out:
            # Its own session: Ctrl-C in a terminal reaches the driver only, which cancels the
            # workers itself (SIGINT) and waits for each to record its run as interrupted.
            proc = subprocess.Popen([sys.executable, "-m", "merx.executors.worker"], stdin=subprocess.PIPE,
                                    env=env, cwd=task.cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
        worker = self.workers[slot] = _Worker(proc, slot, log)
        return worker

    def submit(self, task: Task) -> None:
        slot = next(i for i in range(self.capacity) if i not in self.workers or self.workers[i].task is None)
        task.threads = task.threads or self.threads
        worker = self._worker(slot, task)
        stem = self.folder / f"task{task.index}-{task.attempt}"
        stem.with_suffix(".json").write_text(json.dumps(task.to_json()))
        worker.task = task
        try:
            worker.proc.stdin.write(f"{stem.with_suffix('.json')}\t{stem.with_suffix('.out')}\n")
            worker.proc.stdin.flush()
        except OSError:  # it died since the check: poll reports the task lost
            pass

    def poll(self, timeout: float) -> list[tuple[Task, Outcome]]:
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for worker in self.workers.values():
                if worker.task is None:
                    continue
                out = self.folder / f"task{worker.task.index}-{worker.task.attempt}.out"
                if out.exists():
                    done.append((worker.task, Outcome(**json.loads(out.read_text()))))
                    worker.task = None
                elif (code := worker.proc.poll()) is not None:
                    why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                    done.append((worker.task, Outcome("lost", None, f"worker process {why}{_tail(worker.log)}")))
                    worker.task = None
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.1)

    def in_flight(self) -> int:
        return sum(w.task is not None for w in self.workers.values())

    def cancel(self) -> list[tuple[Task, Outcome]]:
        """SIGINT to every worker, as Ctrl-C would have sent it in the terminal (each records its
        run as interrupted), then wait for them; one that does not end in time is killed."""
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + CANCEL_GRACE
        for worker in self.workers.values():
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        return self.poll(0)

    def close(self) -> None:
        for worker in self.workers.values():  # end of input: each idle worker exits
            with contextlib.suppress(OSError):
                worker.proc.stdin.close()
        for worker in self.workers.values():
            try:
                worker.proc.wait(10)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _names_a_gpu(cfg: dict) -> bool:
    """``train.device = "cuda:1"`` picks a GPU itself; narrowing what it sees would hide that one."""
    return ":" in str(cfg.get("train", {}).get("device", ""))


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""
