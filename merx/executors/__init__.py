"""Where the runs of a sweep or seed group execute: ``merx run FILE --executor local|ray|slurm``.

- ``local`` with ``--jobs 1`` (the default): one run after another in this process
  (``merx.sweep.run_plan``); with ``--jobs N``, N worker processes at once (``local``).
- ``ray``: Ray tasks on a cluster or a local Ray instance (``ray_tasks``; ``merx[ray]``).
- ``slurm``: Slurm jobs through submitit (``slurm_jobs``; ``merx[slurm]``).

Every worker writes to the same results store; ``driver`` plans the tasks, shows progress,
resumes lost runs and cancels on Ctrl-C, whichever backend runs them (``task`` is what travels).
"""

from __future__ import annotations

from merx.config.settings import ExecutorSettings

__all__ = ["ExecutorSettings", "open_backend"]


def open_backend(settings: ExecutorSettings):
    """The backend ``settings`` names, started (a local Ray instance starts here)."""
    if settings.name == "ray":
        from merx.executors.ray_tasks import RayBackend

        return RayBackend(settings.ray_address, settings.cpus_per_run, settings.gpus_per_run)
    if settings.name == "slurm":
        from merx.executors.slurm_jobs import SlurmBackend

        return SlurmBackend(settings)
    from merx.executors.local import LocalBackend

    return LocalBackend(settings.jobs)
