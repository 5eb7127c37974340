"""``python -m merx.executors.worker``: a local executor's worker process.

It reads tasks from its standard input, one line each (a :class:`~merx.executors.task.Task`
file and the file its :class:`~merx.executors.task.Outcome` goes to, tab-separated), runs them
one after another and exits at the end of its input. One process serves many runs, as a Ray
worker does, so each run does not pay for starting Python and importing torch again. A worker
that dies (killed, out of memory) writes no outcome: the driver calls its run lost, may resume
it, and starts a fresh worker for the next.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict


def serve(lines) -> None:
    from merx.executors.task import execute

    for line in lines:
        if not line.strip():
            continue
        task_file, outcome_file = line.rstrip("\n").split("\t")
        with open(task_file) as fh:
            task = json.load(fh)
        outcome = execute(task)
        tmp = f"{outcome_file}.tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(outcome), fh)
        os.replace(tmp, outcome_file)  # the driver never reads half an outcome
        if outcome.status == "interrupted":  # cancelled: the driver is stopping
            return


def main() -> int:
    # A driver started in the background (``merx run ... &``) ignores SIGINT, and its children
    # would inherit that: the driver cancels its workers with SIGINT, so they must hear it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        serve(sys.stdin)
    except KeyboardInterrupt:  # cancelled between runs
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
