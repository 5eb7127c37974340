"""Run ids: an integer in the database, ``run12`` to users, and either spelling accepted back."""

from __future__ import annotations

import re

from merx.store.errors import InvalidRunId

_RUN_ID = re.compile(r"(?:run)?\s*(\d+)", re.IGNORECASE)


def parse_run_id(text: str | int) -> int:
    """``"run12"``, ``"12"`` or ``12`` -> ``12``; anything else raises ``InvalidRunId``."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text > 0:
            return text
    else:
        m = _RUN_ID.fullmatch(str(text).strip())
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    raise InvalidRunId(f"{text!r} is not a run id: write it as run12 or 12 (a positive number).")


def format_run_id(run_id: int) -> str:
    """``12`` -> ``"run12"``, the way users see run ids."""
    return f"run{run_id}"
