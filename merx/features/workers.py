"""Worker processes that never outlive the process that started them.

A ``ProcessPoolExecutor`` worker blocks on its task queue forever once its parent is gone: the
queue's write end is held by the other workers too, so it never reads end-of-file. A parent
killed by SIGKILL (the OOM killer, ``kill -9``, a scheduler's hard limit) would leave every
worker, a few hundred MB each with librosa loaded, and multiprocessing's resource tracker (which
exits only once no process holds its pipe) running until the machine restarts.

Two guards, one per way the parent can go:

* the parent dies without running any code (SIGKILL, or SIGTERM where nothing handles it): on
  Linux each worker asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
  which works even while the worker is deep in numba code holding the GIL; elsewhere a daemon
  thread in the worker polls ``os.getppid()``, which changes when the parent dies;
* the parent stops with an exception (Ctrl-C, SIGTERM through ``merx.interrupts``, an error):
  :func:`process_pool` terminates the workers instead of waiting for their current jobs.

Each worker also runs its BLAS at one thread (:func:`one_blas_thread`): the pool already uses
the cores, and OpenBLAS's own threads per worker (one per core each) oversubscribe them. Measured
on 2 cores: 400 mel spectrograms in 2 workers took 24.6 s with OpenBLAS's default, 8.2 s at one
thread; on 16 cores that is 16 workers x 16 spinning BLAS threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

__all__ = ["one_blas_thread", "process_pool", "terminate", "usable_cores"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_SECONDS = 1.0
#: Read by OpenBLAS, MKL and OpenMP when they load: covers the libraries a worker loads after it
#: starts (scipy's own OpenBLAS, torch), which threadpoolctl cannot reach yet.
_ONE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, Slurm, cpusets).

    ``os.cpu_count()`` counts the machine's cores even where a job is given two of them. A CPU
    quota (cgroup ``cpu.max``, ``docker --cpus``) is not seen by either."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        return count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def one_blas_thread():
    """A context in which the BLAS libraries this process has loaded use one thread.

    For work that is parallel already (a pool of threads or processes), and so that a result
    does not depend on how many threads a BLAS split it over. Only libraries loaded before
    entering are limited. Without threadpoolctl (a dependency of scikit-learn, which librosa
    needs, so only in unusual installs) nothing is limited."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def process_pool(workers: int, initializer=None, initargs: tuple = ()):
    """A spawned ``ProcessPoolExecutor`` of ``workers`` processes that watch this process.

    Leaving the block normally waits for the submitted jobs; leaving it by an exception cancels
    the pending ones and terminates the workers. Spawn, not fork: the parent may hold torch or
    BLAS threads, which fork can deadlock."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def terminate(pool) -> None:
    """End ``pool``'s workers now (SIGTERM) instead of waiting for their current jobs.

    ``shutdown`` afterwards returns at once: the pool sees its workers gone and fails what is left."""
    stop = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if stop is not None:
        stop()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):  # already gone
            process.terminate()


def _start_worker(parent: int, initializer, initargs) -> None:
    _watch_parent(parent)
    for name in _ONE_THREAD_ENV:
        os.environ[name] = "1"
    one_blas_thread().__enter__()  # for this worker's whole life; it exits with the pool
    if initializer is not None:
        initializer(*initargs)


def _watch_parent(parent: int) -> None:
    """End this process as soon as ``parent`` (the pid that started it) is gone."""
    if sys.platform.startswith("linux") and _death_signal(signal.SIGKILL):
        # The parent may have died between starting this process and the prctl above.
        if os.getppid() != parent:
            os._exit(1)
        return
    threading.Thread(target=_poll_parent, args=(parent,), name="merx-parent-watch", daemon=True).start()


def _death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when the thread that started it ends.

    That thread is the one that submitted the jobs, and :func:`process_pool` shuts the pool down
    before that thread can return, so only the parent's death can trigger it."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_SECONDS)
    os._exit(1)
