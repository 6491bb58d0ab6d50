"""What a record operation raises: a refusal the client is told about, or a failed database."""

from edgec.errors import EdgecError


class RecordRefused(EdgecError):
    """A request the record cannot take; ``status`` and ``message`` go back to the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class StoreFailed(EdgecError):
    """The database failed under a request (corrupt page, full disk, server gone): answered 503."""
