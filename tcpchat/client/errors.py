"""Why a connection, a login or a request failed, as the client core reports it."""

from __future__ import annotations


class IdentityChanged(Exception):
    """The server's certificate is not the one pinned for it."""


class ConnectFailed(Exception):
    """The server could not be reached; the message says why in plain words."""


class Refused(Exception):
    """The server said no, with an error ``code``; ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LoginRefused(Refused):
    """The server refused the login (wrong passkey, name taken, …)."""


class RequestFailed(Refused):
    """The server refused a request (join, search, oper, an operator action, …)."""
