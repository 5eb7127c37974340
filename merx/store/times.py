"""Times in the store: UTC ISO 8601 text, and the bounds users write (``2025-03-01``, ``7d``)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

from merx.store.errors import StoreError

_RELATIVE = re.compile(r"(\d+)\s*([mhdw])", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def now() -> datetime:
    """The current time, in UTC (every time the store writes is UTC)."""
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """How the store writes a time: ISO 8601 to the millisecond (``2025-03-01T12:00:00.123+00:00``)."""
    return moment.isoformat(timespec="milliseconds")


def time_bound(when: str | datetime | Any, end: bool = False) -> str:
    """A ``started_at`` bound as UTC ISO text from ``2025-03-01`` (with ``end``: the next day, so
    that the day itself is included), ``2025-03-01T14:00`` (UTC unless it names its zone), a
    ``datetime``/``date``, or ``7d`` / ``12h`` / ``30m`` / ``2w`` ago. Anything else: ``StoreError``."""
    if isinstance(when, datetime):
        moment = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return iso(moment.astimezone(timezone.utc))
    if isinstance(when, date):
        day = when + timedelta(days=1) if end else when
        return day.isoformat()
    text = str(when).strip()
    m = _RELATIVE.fullmatch(text)
    if m:
        return iso(now() - timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))}))
    try:
        if len(text) == 10:
            return time_bound(date.fromisoformat(text), end)
        return time_bound(datetime.fromisoformat(text), end)
    except ValueError:
        raise StoreError(f"{text!r} is not a date: write 2025-03-01, 2025-03-01T14:00, or 7d / 12h / 30m / 2w "
                         "for that long ago") from None
