"""A run's statuses: which are recorded, which are final, which ``merx resume`` continues, and why not."""

from __future__ import annotations

from typing import Any

from merx.store.errors import StoreError
from merx.store.ids import format_run_id
from merx.store.liveness import process_alive, this_host

#: What a run's status may read: as recorded, or ``lost`` (a ``running`` run whose process is
#: gone, derived on read: merx.store.liveness).
STATUSES = ("running", "completed", "failed", "interrupted", "lost")
RECORDED_STATUSES = STATUSES[:4]
FINAL_STATUSES = ("completed", "failed", "interrupted")
#: What ``merx resume`` continues.
RESUMABLE = ("interrupted", "failed", "lost")


def _check_status(status: Any, allowed: tuple[str, ...] = STATUSES) -> None:
    if status not in allowed:
        raise ValueError(f"status must be one of {', '.join(allowed)}, got {status!r}")


def check_resumable(run: dict) -> None:
    """A ``StoreError`` saying why, unless ``run`` (its status as read, ``lost`` derived) may be resumed."""
    if run["status"] not in RESUMABLE:
        raise StoreError(f"{format_run_id(run['id'])} is {run['status']}: only an interrupted, failed or lost run "
                         "can be resumed" + _why_not_resumable(run, run["status"]))


def _why_not_resumable(row: dict, status: str) -> str:
    if status == "completed":
        return " (it completed; merx run FILE --rerun trains it again as a new run)"
    if status == "running":
        beat = row.get("heartbeat_at") or row.get("started_at")
        where = f"pid {row.get('pid')} on {row.get('host')}" if row.get("pid") else "another process"
        alive = " (alive)" if row.get("host") == this_host() and row.get("pid") and process_alive(int(row["pid"])) \
            else ""
        return f" ({where}{alive}, last heartbeat {beat})"
    return ""
