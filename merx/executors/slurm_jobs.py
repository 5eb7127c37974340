"""``--executor slurm``: each cell × seed a Slurm job, submitted through submitit.

The first attempts go as one job array (one ``sbatch``; Slurm starts as many as the partition
allows), retries as single jobs. A job's state comes from the scheduler (``sacct``), its
outcome from the pickled result submitit writes beside its log; a job that ended without one
(pre-empted, out of memory, past its time limit, node failure) is lost, and the driver resumes
its run under its id. ``cluster = "local"`` runs the same jobs as processes on this machine with
submitit's ``LocalExecutor``: the code path of a cluster minus the scheduler. submitit is
imported only here.
"""

from __future__ import annotations

from pathlib import Path

from merx.errors import MerxError, MissingExtra
from merx.executors.task import Outcome, Task


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise MissingExtra("--executor slurm", "submitit", "slurm") from None
    return submitit


class SlurmBackend:
    def __init__(self, settings):
        submitit = self.submitit = import_submitit()
        self.cluster = settings.cluster
        folder = Path(settings.folder).expanduser().resolve()
        try:
            self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=settings.cluster)
        except RuntimeError as exc:  # no sbatch on the PATH
            raise MerxError(f"cannot submit Slurm jobs from here: {exc}",
                            hint="run on a Slurm login node, or set [executor] cluster = \"local\" to try the "
                                 "same jobs on this machine") from None
        params = dict(name="merx", timeout_min=settings.time, cpus_per_task=settings.cpus_per_run,
                      gpus_per_node=int(settings.gpus_per_run) or None)
        if settings.partition:
            params["slurm_partition"] = settings.partition
        if settings.account:
            params["slurm_account"] = settings.account
        # Slurm throttles an array itself; submitit's local executor starts every job at once,
        # so there the driver holds back what exceeds the limit.
        self.capacity = None
        if settings.parallel and settings.cluster == "slurm":
            params["slurm_array_parallelism"] = settings.parallel
        elif settings.parallel:
            self.capacity = settings.parallel
        self.executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        self.settings = settings
        self.jobs: dict = {}  # job -> Task
        self.pending: list[Task] = []

    def describe(self) -> str:
        where = "Slurm" if self.cluster == "slurm" else "submitit's local executor (no scheduler)"
        part = f", partition {self.settings.partition}" if self.settings.partition else ""
        return (f"{where}{part}: one job per run, {self.settings.time} min, {self.settings.cpus_per_run} CPU(s), "
                f"{int(self.settings.gpus_per_run)} GPU(s) each")

    def submit(self, task: Task) -> None:
        task.threads = task.threads or self.settings.cpus_per_run
        self.pending.append(task)  # sent together at the next poll: one array, not one sbatch per run

    def _flush(self) -> None:
        if not self.pending:
            return
        from merx.executors.task import execute

        tasks, self.pending = self.pending, []
        if len(tasks) == 1:
            jobs = [self.executor.submit(execute, tasks[0])]
        else:
            jobs = self.executor.map_array(execute, tasks)
        self.jobs.update(zip(jobs, tasks, strict=True))

    def in_flight(self) -> int:
        return len(self.jobs) + len(self.pending)

    def poll(self, timeout: float) -> list[tuple[Task, Outcome]]:
        import time

        self._flush()
        deadline = time.monotonic() + timeout
        while True:
            done = [job for job in self.jobs if job.done()]
            if done or time.monotonic() >= deadline:
                return [(self.jobs.pop(job), self._outcome(job)) for job in done]
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def _outcome(self, job) -> Outcome:
        try:
            return job.result()
        except Exception as exc:  # no result: the job died (killed, pre-empted, timed out, cancelled)
            first = str(exc).strip().splitlines()
            return Outcome("lost", None, f"job {job.job_id} ({job.state}) ended without a result: "
                                         f"{first[0] if first else type(exc).__name__}")

    def cancel(self) -> list[tuple[Task, Outcome]]:
        """Cancel every job (Slurm: scancel, which sends SIGTERM; local: SIGINT), then wait for
        them to record their runs as interrupted."""
        import time

        self.pending.clear()
        for job in self.jobs:
            job.cancel(check=False)
        out = []
        deadline = time.monotonic() + 30.0
        while self.jobs and time.monotonic() < deadline:
            out += self.poll(0.5)
        return out + [(task, Outcome("interrupted", None, "cancelled")) for task in self.jobs.values()]

    def close(self) -> None:
        pass
