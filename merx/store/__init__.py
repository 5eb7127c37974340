"""The results store: every run merx makes, recorded in SQLite (or any SQLAlchemy database).

``merx.store.schema`` documents every table and column; ``merx.store.migrations`` how the
schema evolves; ``merx.store.runstore`` the ``RunStore`` API, and its module docstring where
each of its parts lives (engine, database, rows, pending, ids, times, faults).
"""

from merx.store.errors import (
    InvalidRunId,
    RunNotFound,
    SchemaTooNew,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreReadOnly,
    StoreUnreachable,
)
from merx.store.runstore import DEFAULT_DB, ENV_VAR, STATUSES, RunStore, format_run_id, parse_run_id, resolve_url

__all__ = ["RunStore", "StoreError", "RunNotFound", "InvalidRunId", "SchemaTooNew", "StoreLocked", "StoreReadOnly",
           "StoreCorrupt", "StoreFull", "StoreUnreachable", "parse_run_id", "format_run_id", "resolve_url",
           "DEFAULT_DB", "ENV_VAR", "STATUSES"]
