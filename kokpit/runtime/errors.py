"""Typed API errors, built from the API server's ``Status`` answer.

Callers branch on the type (``except NotFound``), never on numbers, and the message is the API
server's own words — for an invalid object it names the field and the rule that failed, which
is exactly what a person needs to read.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API server refused a request."""

    code: int = 0

    def __init__(self, message: str, *, code: int = 0, reason: str = "", status: Any = None):
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.reason = reason
        self.status: dict[str, Any] = status if isinstance(status, dict) else {}

    @property
    def causes(self) -> list[dict[str, Any]]:
        """Per-field causes of an Invalid error (``field``, ``reason``, ``message``)."""
        causes: list[dict[str, Any]] = self.status.get("details", {}).get("causes", [])
        return causes


class BadRequest(ApiError):
    code = 400


class Unauthorized(ApiError):
    code = 401


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError):
    code = 404


class Conflict(ApiError):
    """409 with reason Conflict: the object changed since it was read (optimistic concurrency)."""

    code = 409


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists: create of a name that is taken."""

    code = 409


class Gone(ApiError):
    """410: the resourceVersion asked for was compacted away; relist."""

    code = 410


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL rules, admission)."""

    code = 422


class TooManyRequests(ApiError):
    """429: throttled by API priority and fairness; ``retry_after`` is the server's hint."""

    code = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the API server (or something behind it) failed; safe to retry idempotent calls."""

    code = 500


_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def from_response(
    code: int, body: Any, *, retry_after: float | None = None, fallback: str = ""
) -> ApiError:
    """The error for an HTTP status and its (decoded) ``Status`` body."""
    status = body if isinstance(body, dict) else {}
    message = status.get("message") or fallback or f"HTTP {code}"
    reason = status.get("reason", "")
    if code == 409 and reason == "AlreadyExists":
        return AlreadyExists(message, code=code, reason=reason, status=status)
    if code == 429:
        return TooManyRequests(
            message, retry_after=retry_after, code=code, reason=reason, status=status
        )
    cls = _BY_CODE.get(code, ServerError if code >= 500 else ApiError)
    return cls(message, code=code, reason=reason, status=status)
