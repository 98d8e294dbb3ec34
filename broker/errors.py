"""One error tree for the broker.

Each error carries its wire code and HTTP status; only the HTTP edge turns it
into a response (RFC 9457 problem details, or RFC 6749 errors for OAuth) and
only the CLI turns it into a one-line message. Messages never contain personal
data (VINs, names, e-mail addresses, positions).
"""

from __future__ import annotations

from typing import Any, ClassVar


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""

    code: ClassVar[str] = "broker_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Broker error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """RFC 9457 problem details for this error."""
        body: dict[str, Any] = {
            "type": f"urn:vehicle-data-broker:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class ConfigurationError(BrokerError):
    code = "configuration_error"
    title = "Invalid configuration"


class InvalidDocument(BrokerError):
    """A JSON document (contract, seed, catalogue) failed validation."""

    code = "invalid_document"
    status = 422
    title = "Invalid document"

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail, errors=errors or [])
        self.errors = errors or []


class NotFound(BrokerError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(BrokerError):
    code = "conflict"
    status = 409
    title = "Conflict"


class TransitionRefused(Conflict):
    """A state machine refused a transition."""

    code = "transition_refused"
    title = "State transition refused"


class DatabaseError(BrokerError):
    code = "database_error"
    status = 503
    title = "Database unavailable"


class DatabaseTooNew(DatabaseError):
    """The database was written by a newer broker; refusing to touch it."""

    code = "database_too_new"
    title = "Database from a newer broker version"


class PayloadTooLarge(BrokerError):
    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class BadRequest(BrokerError):
    code = "bad_request"
    status = 400
    title = "Bad request"
