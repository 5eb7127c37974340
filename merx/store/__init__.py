"""The results store: every run merx makes, recorded in SQLite (or any SQLAlchemy database).

``merx.store.schema`` documents every table and column; ``merx.store.migrations`` how the
schema evolves; ``merx.store.runstore`` the ``RunStore`` API, and its module docstring where
each of its parts lives (engine, database, rows, pending, ids, times, faults); ``merx.store.liveness``
which running runs are lost; ``merx.store.folders`` where runs keep their files.
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
from merx.store.folders import ENV_RUNS_DIR
from merx.store.liveness import ENV_HEARTBEAT_TIMEOUT, is_lost
from merx.store.runstore import (
    DEFAULT_DB,
    ENV_VAR,
    RESUMABLE,
    STATUSES,
    RunStore,
    format_run_id,
    parse_run_id,
    resolve_url,
)

__all__ = ["RunStore", "is_lost", "RESUMABLE", "ENV_RUNS_DIR", "ENV_HEARTBEAT_TIMEOUT",
           "StoreError", "RunNotFound", "InvalidRunId", "SchemaTooNew", "StoreLocked", "StoreReadOnly",
           "StoreCorrupt", "StoreFull", "StoreUnreachable", "parse_run_id", "format_run_id", "resolve_url",
           "DEFAULT_DB", "ENV_VAR", "STATUSES"]
