"""Whether a ``running`` run is still alive: host, pid and a heartbeat, checked on read.

A run records the host and pid of the process training it, and ``heartbeat_at``, refreshed
after every epoch and every :data:`HEARTBEAT_INTERVAL_S` seconds by a daemon thread
(:class:`Heartbeat`). A run recorded ``running`` is reported ``lost`` when its process is gone
(checked only on the host it ran on) or when its heartbeat is older than
``$MERX_HEARTBEAT_TIMEOUT`` seconds (default :data:`HEARTBEAT_TIMEOUT_S`), which covers other
hosts, a frozen machine and a reused pid. This is how Optuna finds stale trials
(``heartbeat_interval`` / ``grace_period`` of ``RDBStorage``): nothing has to run when a
process dies, so a SIGKILL, an out-of-memory kill or a pre-empted job is seen all the same.
``lost`` is never written: it is derived, so a run whose process comes back to life (a long
pause) is ``running`` again, and ``merx resume`` is what changes the row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from merx.store.engine import env_seconds
from merx.store.times import now

ENV_HEARTBEAT_TIMEOUT = "MERX_HEARTBEAT_TIMEOUT"
#: Seconds without a heartbeat after which a running run is lost (several missed beats).
HEARTBEAT_TIMEOUT_S = 300.0
#: Seconds between the heartbeats of the background thread.
HEARTBEAT_INTERVAL_S = 30.0

log = logging.getLogger(__name__)


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (a dead child nobody reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all there is
    return state not in ("Z", "X")


def heartbeat_timeout() -> float:
    """``$MERX_HEARTBEAT_TIMEOUT`` seconds, else :data:`HEARTBEAT_TIMEOUT_S`."""
    return env_seconds(ENV_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_S)


def is_lost(run: Mapping, timeout: float | None = None, at: datetime | None = None) -> bool:
    """Whether ``run`` (a runs row, or a run as ``RunStore`` returns it) is recorded running but
    its process is gone: on this host, no process ``pid``; anywhere, no heartbeat (or, for a run
    recorded before heartbeats existed, no start) for ``timeout`` seconds."""
    if run.get("status") not in ("running", "lost"):
        return False
    if run.get("host") == this_host() and run.get("pid") and not process_alive(int(run["pid"])):
        return True
    last = run.get("heartbeat_at") or run.get("started_at")
    if not last:
        return False
    timeout = heartbeat_timeout() if timeout is None else timeout
    return (at or now()) - datetime.fromisoformat(last) > timedelta(seconds=timeout)


def with_liveness(run: dict, timeout: float | None = None) -> dict:
    """``run`` with ``status`` ``lost`` when :func:`is_lost` says so."""
    if run.get("status") == "running" and is_lost(run, timeout):
        run["status"] = "lost"
    return run


class Heartbeat:
    """A daemon thread refreshing ``run_id``'s heartbeat every ``interval`` seconds while the
    ``with`` block runs. A failed beat (a locked or unreachable database) is logged and tried
    again at the next one: liveness must never fail a run."""

    def __init__(self, store, run_id: int, interval: float = HEARTBEAT_INTERVAL_S):
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"merx-heartbeat-run{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        """One heartbeat now (the run calls it after each epoch)."""
        try:
            self.store.heartbeat(self.run_id)
        except Exception as exc:  # noqa: BLE001 - the next beat tries again; the run goes on
            log.warning("heartbeat of run%s not recorded: %s", self.run_id, exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
