"""Riding out a lock held elsewhere: epochs that wait in memory, and a final write that keeps trying.

A lock held by another process for longer than the busy timeout must not fail a run's epoch
(a run at epoch 3 of 300 is worth more than one write): the epoch waits in memory
(``PendingEpochs``) and is written with a later one, after a back-off that starts at 1 s and
doubles up to ``MAX_BACKOFF_S``. The write that closes a run keeps trying for ``FINAL_WAIT_S``
(``$MERX_DB_FINAL_WAIT``) seconds (``keep_trying``): hours of training are worth minutes of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from merx.store import schema as t
from merx.store.errors import StoreError, StoreLocked
from merx.store.ids import format_run_id

#: How long ``finish_run`` keeps retrying a locked database (``$MERX_DB_FINAL_WAIT`` seconds).
FINAL_WAIT_S = 300.0
ENV_FINAL_WAIT = "MERX_DB_FINAL_WAIT"
#: Longest pause between two attempts to write epochs that met a lock.
MAX_BACKOFF_S = 60.0
#: Longest pause between two attempts of ``keep_trying``.
MAX_FINAL_DELAY_S = 30.0

T = TypeVar("T")


class PendingEpochs:
    """Epoch rows that met a lock, oldest first, and when to try writing them again."""

    def __init__(self) -> None:
        self._queue: list[tuple[int, int, list[dict]]] = []  # (run_id, epoch, rows)
        self._backoff = 0.0
        self._retry_at = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def keys(self) -> list[tuple[int, int]]:
        """``(run_id, epoch)`` of each waiting epoch, oldest first."""
        return [(run_id, epoch) for run_id, epoch, _ in self._queue]

    def add(self, run_id: int, epoch: int, rows: list[dict]) -> bool:
        """Queue an epoch's rows; True when the back-off has passed and a write should be tried now."""
        self._queue.append((run_id, int(epoch), rows))
        return time.monotonic() >= self._retry_at

    def locked(self) -> None:
        """A write met the lock: wait 1 s before the next try, then twice as long each time."""
        self._backoff = min(2 * self._backoff, MAX_BACKOFF_S) if self._backoff else 1.0
        self._retry_at = time.monotonic() + self._backoff

    def write(self, conn: sa.Connection, require: Callable[[sa.Connection, int], object]) -> int:
        """Insert every waiting epoch, oldest first, in ``conn``'s transaction; returns how many.
        Call ``written`` with that number once the transaction has committed.

        ``require(conn, run_id)`` raises when the run does not exist. Rows already there with the
        same value are skipped, so a retry never duplicates; a different value is a real duplicate
        and raises. An epoch that can never be written (duplicate, unknown run) is dropped from
        the queue as it raises."""
        e = t.epochs.c
        for i, (run_id, epoch, rows) in enumerate(self._queue):
            try:
                require(conn, run_id)
                q = sa.select(e.metric, e.value).where(e.run_id == run_id, e.epoch == epoch)
                have = dict(conn.execute(q).all())
                clash = [r["metric"] for r in rows if r["metric"] in have and have[r["metric"]] != r["value"]]
                if clash:
                    raise StoreError(f"{format_run_id(run_id)}: epoch {epoch} is already recorded, with other "
                                     f"values of {', '.join(clash)}")
                new = [r for r in rows if r["metric"] not in have]
                if new:
                    conn.execute(sa.insert(t.epochs), new)
            except StoreError:
                del self._queue[i]
                raise
        return len(self._queue)

    def written(self, count: int) -> None:
        """The oldest ``count`` waiting epochs are committed."""
        del self._queue[:count]
        self._backoff = self._retry_at = 0.0


def keep_trying(attempt: Callable[[], T], seconds: float, give_up: Callable[[StoreLocked], StoreLocked]) -> T:
    """``attempt()``, again while it raises ``StoreLocked``, for ``seconds`` at most with back-off
    (1 s, doubling up to 30 s); after that, ``give_up(the last StoreLocked)`` is raised."""
    deadline = time.monotonic() + seconds
    delay = 1.0
    while True:
        try:
            return attempt()
        except StoreLocked as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise give_up(exc) from exc
            time.sleep(min(delay, left))
            delay = min(2 * delay, MAX_FINAL_DELAY_S)
