"""What the results store raises. The CLI prints any ``StoreError`` as one line and exits 2."""


from merx.errors import StoreError


class RunNotFound(StoreError, LookupError):
    """No run with that id in this database."""


class InvalidRunId(StoreError, ValueError):
    """Text that is not a run id (``run12`` or ``12``)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer merx: it holds migrations this merx does not know."""
