"""Every error the app raises on purpose. HTTP statuses become these types once, in `geocatalog.py`."""

from __future__ import annotations


class IngestError(Exception):
    """Base class of the app's own errors."""


class ConfigurationError(IngestError):
    """A setting is missing or malformed; nothing will work until an operator fixes it."""


class InvalidInputError(IngestError):
    """The input (a message, an item, an id) can never be processed as given: reject, do not retry."""


class RetryableError(IngestError):
    """A transient failure (429, 5xx, timeout, connection error): try again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RejectedByServiceError(IngestError):
    """The GeoCatalog refused the request for good (a 4xx other than 401/403/429)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NotFoundError(RejectedByServiceError):
    """The GeoCatalog has no such collection, item or operation (404)."""


class AuthenticationError(IngestError):
    """The GeoCatalog refused our identity (401/403): a configuration problem, never the items' fault."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"GeoCatalog refused the credential ({status} {code}); check the identity and its role")
        self.status = status
        self.code = code


RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # HTTP answers worth trying again later
