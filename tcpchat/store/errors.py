"""What any store raises: the rules and the service react to these, never to a database's own errors."""


class StoreUnusable(Exception):
    """The database cannot be opened: damaged, not a database, locked or unreadable."""

    def __init__(self, path: str, cause: BaseException) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"cannot use the database {path}: {cause}")


class StoreBusy(Exception):
    """Another process holds a lock on the database: nothing was written; try again."""


class StoreClosed(Exception):
    """The store is closed (the server is stopping): nothing was written."""
