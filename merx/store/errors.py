"""What the results store raises. The CLI prints any ``StoreError`` as one line and exits 2."""


from merx.errors import StoreError


class RunNotFound(StoreError, LookupError):
    """No run with that id in this database."""


class InvalidRunId(StoreError, ValueError):
    """Text that is not a run id (``run12`` or ``12``)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer merx: it holds migrations this merx does not know."""


class StoreLocked(StoreError):
    """Another process held the write lock for longer than the busy timeout."""


class StoreReadOnly(StoreError):
    """The database file, or the folder SQLite must create its ``-wal``/``-shm`` files in, cannot be written."""


class StoreCorrupt(StoreError):
    """Damaged pages, a file that is not SQLite, or a table missing that the migrations created."""


class StoreFull(StoreError):
    """A write failed for want of space: the disk is full or a file reached the size limit."""
