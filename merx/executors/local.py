"""``--executor local --jobs N``: N worker processes at once on this machine.

Each run is its own ``python -m merx.executors.worker`` process, not a process pool's: a worker
killed by the kernel (out of memory) or by hand then loses only its run, where a killed
``ProcessPoolExecutor`` worker breaks the pool and every run queued on it. Runs are spread over
the visible GPUs round-robin by job slot (``CUDA_VISIBLE_DEVICES``), several per GPU when there
are more jobs than GPUs; the machine's CPU cores are split between the jobs (torch threads), so
N runs do not each start one thread per core.
"""

from __future__ import annotations

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


class LocalBackend:
    """Up to ``jobs`` worker processes at once; the driver queues the rest."""

    def __init__(self, jobs: int, gpus: list[str] | None = None, cores: int | None = None):
        self.capacity = jobs
        self.gpus = visible_gpus() if gpus is None else gpus
        self.threads = max(1, (cores or usable_cores()) // jobs)
        self.folder = Path(tempfile.mkdtemp(prefix="merx-jobs-"))
        self.running: dict[int, tuple[Task, subprocess.Popen, int, Path]] = {}  # pid -> task, process, slot, log

    def describe(self) -> str:
        where = (f"{len(self.gpus)} GPU(s) ({', '.join(self.gpus)})" if self.gpus
                 else f"CPU, {self.threads} thread(s) each")
        return f"{self.capacity} local worker process(es) at once on {where}"

    def _free_slot(self) -> int:
        taken = {slot for _, _, slot, _ in self.running.values()}
        return next(i for i in range(self.capacity) if i not in taken)

    def submit(self, task: Task) -> None:
        slot = self._free_slot()
        env = {**os.environ, **task.env}
        task.threads = task.threads or self.threads
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(task.threads)
        if self.gpus and not _names_a_gpu(task.config):
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        stem = self.folder / f"task{task.index}-{task.attempt}"
        stem.with_suffix(".json").write_text(json.dumps(task.to_json()))
        log = stem.with_suffix(".log")
        with open(log, "wb") as out:
            # Its own session: Ctrl-C in a terminal reaches the driver only, which cancels the
            # workers itself (SIGTERM) and waits for each to record its run as interrupted.
            proc = subprocess.Popen([sys.executable, "-m", "merx.executors.worker", str(stem.with_suffix(".json")),
                                     str(stem.with_suffix(".out"))], env=env, cwd=task.cwd, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.running[proc.pid] = (task, proc, slot, log)

    def poll(self, timeout: float) -> list[tuple[Task, Outcome]]:
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for pid, (task, proc, _, log) in list(self.running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.running[pid]
                done.append((task, self._outcome(task, code, log)))
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.1)

    def _outcome(self, task: Task, code: int, log: Path) -> Outcome:
        out = self.folder / f"task{task.index}-{task.attempt}.out"
        if out.exists():
            return Outcome(**json.loads(out.read_text()))
        why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return Outcome("lost", None, f"worker process {why}{_tail(log)}")

    def in_flight(self) -> int:
        return len(self.running)

    def cancel(self) -> list[tuple[Task, Outcome]]:
        """SIGTERM to every worker (each records its run as interrupted), then wait for them."""
        for _, proc, _, _ in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE
        for _, proc, _, _ in self.running.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self.poll(0)

    def close(self) -> None:
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
