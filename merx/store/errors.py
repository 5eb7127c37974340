"""What the results store raises. The CLI prints any ``StoreError`` as one line and exits 2."""


from merx.errors import StoreError


class RunNotFound(StoreError, LookupError):
    """No run with that id in this database."""


class InvalidRunId(StoreError, ValueError):
    """Text that is not a run id (``run12`` or ``12``)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer merx: it holds migrations this merx does not know."""


class StoreLocked(StoreError):
    """The database cannot take a write now but may later: another process held the write lock
    for longer than the busy timeout, or (``StoreUnreachable``) its server cannot be reached.
    A run's epochs wait in memory and its last write keeps trying (``merx.store.pending``)."""


class StoreUnreachable(StoreLocked):
    """The database server went away (down, restarting, the network): retried like a lock."""


class StoreReadOnly(StoreError):
    """The database file, or the folder SQLite must create its ``-wal``/``-shm`` files in, cannot be written."""


class StoreCorrupt(StoreError):
    """Damaged pages, a file that is not SQLite, or a table missing that the migrations created."""


class StoreFull(StoreError):
    """A write failed for want of space: the disk is full or a file reached the size limit."""


class RunTakenOver(StoreError):
    """This process's run was reported lost and resumed by another process (``merx resume``):
    this one's epochs and end are not written over the resumed run's."""
