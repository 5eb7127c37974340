"""``--executor ray``: each cell × seed a Ray task with its resources, on a cluster or locally.

Ray schedules the tasks by the resources they ask for (``num_cpus``, ``num_gpus``, fractions
allowed: four runs at 0.25 share a GPU) and its own retries are off (``max_retries=0``): a task
retried by Ray would start the run over as a second row, while the driver resumes the lost run
under its id. Ray is imported only here, and only when this executor is chosen.
"""

from __future__ import annotations

import os

from merx.errors import MerxError, MissingExtra
from merx.executors.task import Outcome, Task

#: Seconds cancelled tasks get to record their runs as interrupted.
CANCEL_GRACE = 30.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtra("--executor ray", "Ray", "ray") from None
    return ray


class RayBackend:
    capacity = None  # every task is submitted; Ray queues those its cluster cannot place yet

    def __init__(self, address: str = "", cpus_per_run: int = 1, gpus_per_run: float = 0.0):
        ray = self.ray = import_ray()
        from merx.executors.task import execute

        address = address or os.environ.get("RAY_ADDRESS") or None
        self.local = address is None
        try:
            # log_to_driver off: the workers' own output would interleave with the progress lines.
            self.info = ray.init(address=address, include_dashboard=False, log_to_driver=False,
                                 ignore_reinit_error=True, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MerxError(f"cannot reach the Ray cluster at {address}: {exc}",
                            hint="start it (ray start --head) or check --ray-address / RAY_ADDRESS") from None
        self.remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(execute)
        self.cpus, self.gpus = cpus_per_run, gpus_per_run
        self.refs: dict = {}  # ObjectRef -> Task

    def describe(self) -> str:
        res = self.ray.cluster_resources()
        where = "a local Ray instance" if self.local else "the Ray cluster"
        return (f"{where} ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs), "
                f"{self.cpus} CPU(s) and {self.gpus:g} GPU(s) per run")

    def submit(self, task: Task) -> None:
        task.threads = task.threads or self.cpus
        self.refs[self.remote.remote(task)] = task

    def in_flight(self) -> int:
        return len(self.refs)

    def poll(self, timeout: float) -> list[tuple[Task, Outcome]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        return [(self.refs.pop(ref), self._outcome(ref)) for ref in ready]

    def _outcome(self, ref) -> Outcome:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.TaskCancelledError:
            return Outcome("interrupted", None, "cancelled")
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.ObjectLostError,
                exceptions.OutOfMemoryError, exceptions.LocalRayletDiedError) as exc:
            return Outcome("lost", None, f"Ray worker died: {type(exc).__name__}")
        except exceptions.RayError as exc:
            return Outcome("lost", None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def cancel(self) -> list[tuple[Task, Outcome]]:
        """``ray.cancel`` raises KeyboardInterrupt in each running task (its run is recorded as
        interrupted) and drops the queued ones; then wait for them."""
        for ref in self.refs:
            self.ray.cancel(ref)
        out = []
        import time

        deadline = time.monotonic() + CANCEL_GRACE
        while self.refs and time.monotonic() < deadline:
            out += self.poll(0.5)
        return out + [(task, Outcome("interrupted", None, "cancelled")) for task in self.refs.values()]

    def close(self) -> None:
        if self.local:  # a local instance is ours to end; a cluster is not
            self.ray.shutdown()
