"""``python -m merx.executors.worker TASK.json OUTCOME.json``: a local executor's worker process.

Reads one :class:`~merx.executors.task.Task`, runs it, writes its
:class:`~merx.executors.task.Outcome`. A worker that dies (killed, out of memory) writes
nothing: the driver then calls its run lost and may resume it."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict


def main(argv: list[str]) -> int:
    from merx.executors.task import execute

    task_file, outcome_file = argv
    with open(task_file) as fh:
        task = json.load(fh)
    outcome = execute(task)
    tmp = f"{outcome_file}.tmp"
    with open(tmp, "w") as fh:
        json.dump(asdict(outcome), fh)
    os.replace(tmp, outcome_file)  # the driver never reads half an outcome
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
