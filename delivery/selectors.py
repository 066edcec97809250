import re

from delivery.tables import ClientView, local_tables

KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


class QueryError(Exception):
    """A request delivery or collect refuses: the HTTP status and a reason for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def client_view_get(*, key: str) -> ClientView:
    """The published view of the client named by a public key, from this node's memory."""
    # Only published keys are held, so a key found needs no checking.
    view = local_tables().client(key) if key else None
    if view is not None:
        return view
    if not key:
        raise QueryError(400, "k (the client key) is required")
    if not KEY_RE.fullmatch(key):
        raise QueryError(400, "k is not a client key")
    raise QueryError(404, "unknown client key")
