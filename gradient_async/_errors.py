"""Every error this SDK raises. The tree::

    GradientError
     ├── MissingCredentialsError (also ValueError)  no token / workspace; names the env var
     ├── InputValidationError (also ValueError)      bad input, caught before any request is sent
     ├── ClientClosedError (also RuntimeError)       the client was used after aclose()
     ├── QueueFullError                              `max_queue` calls already wait for a slot: shed this one
     └── APIError                                    something went wrong talking to the API
          ├── APIConnectionError                     no usable response (DNS, refused, reset, ...)
          │    └── APITimeoutError                   connect / read / write / pool timeout
          │         └── PoolTimeoutError             no concurrency slot within the pool timeout (never sent)
          ├── APIResponseValidationError             a 2xx whose body is not what the contract says
          └── APIStatusError                         a non-2xx response
               ├── BadRequestError 400      ├── ConflictError 409
               ├── AuthenticationError 401  ├── UnprocessableEntityError 422
               ├── PermissionDeniedError 403├── RateLimitError 429 (retry_after)
               ├── NotFoundError 404        └── InternalServerError >= 500

No error, repr or message contains the access token.

Example::

    try:
        await client.completions.create(model_id, query="Hi")
    except RateLimitError as exc:
        print(exc.status_code, exc.retry_after, exc.request_id)
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Final

import httpx

__all__ = [
    "STOP_AFTER",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConflictError",
    "GradientError",
    "HopelessStreak",
    "InputValidationError",
    "InternalServerError",
    "MissingCredentialsError",
    "NotFoundError",
    "PermissionDeniedError",
    "PoolTimeoutError",
    "QueueFullError",
    "RateLimitError",
    "UnprocessableEntityError",
    "ValidationError",
    "error_signature",
    "is_hopeless",
    "make_status_error",
    "parse_retry_after",
]


class GradientError(Exception):
    """Base class of every error raised by gradient_async."""


class MissingCredentialsError(GradientError, ValueError):
    """No access token or workspace id was given or found in the environment."""


class InputValidationError(GradientError, ValueError):
    """Input that the API would reject, caught before anything is sent. (Named `ValidationError` before
    0.3: that name shadowed pydantic's; `gradient_async.ValidationError` is a deprecated alias.)"""


ValidationError = InputValidationError
"""Internal spelling kept for the package's own modules; users see the deprecated alias."""


class ClientClosedError(GradientError, RuntimeError):
    """The client was used after `aclose()`."""


class APIError(GradientError):
    """A failed exchange with the API. `request` is the httpx request (headers redacted in its repr)."""

    message: str
    request: httpx.Request | None
    retries_taken: int

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.retries_taken = 0


class APIConnectionError(APIError):
    """No response: the connection failed, was refused, or broke mid-exchange.

    `sent` is False when the request certainly never reached the server (connect failure),
    which makes it safe to retry even a non-idempotent call.
    """

    def __init__(
        self, message: str = "Connection error.", *, request: httpx.Request | None = None, sent: bool = True
    ) -> None:
        super().__init__(message, request=request)
        self.sent = sent


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, write or waiting for a pooled connection)."""

    def __init__(
        self, message: str = "Request timed out.", *, request: httpx.Request | None = None, sent: bool = True
    ) -> None:
        super().__init__(message, request=request, sent=sent)


class PoolTimeoutError(APITimeoutError):
    """No concurrency slot within the pool timeout (`httpx.Timeout(pool=...)`): the request was never
    sent. Not retried: waiting again would only break the time limit you set."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message, request=request, sent=False)


class QueueFullError(GradientError):
    """The client already has `max_queue` calls waiting for a concurrency slot; this one was refused
    at once, without waiting, so a service can shed load (answer 503, drop, or try later)."""


class APIResponseValidationError(APIError):
    """A 2xx response whose body does not match the wire contract (HTML, truncated JSON, wrong shape)."""

    def __init__(self, message: str, *, response: httpx.Response, body: object) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.body = body


class APIStatusError(APIError):
    """The API answered with a non-2xx status.

    Attributes: `status_code`, `message` (the server's own words), `error_type` (the contract's
    `type`, e.g. "unknownModelAdapter"), `body` (parsed JSON or text), `request_id`, `response`,
    `retry_after` (seconds, from Retry-After / retry-after-ms, or None).
    """

    def __init__(self, message: str, *, response: httpx.Response, body: object) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.request_id = response.headers.get("x-request-id") or response.headers.get("x-gradient-request-id")
        self.error_type: str | None = None
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            self.error_type = body["type"]
        self.retry_after = parse_retry_after(response.headers)

    def __str__(self) -> str:
        parts = [f"{self.status_code}: {self.message}"]
        if self.error_type:
            parts.append(f"type={self.error_type}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code}, message={self.message!r})"


class BadRequestError(APIStatusError):
    """400: the request body or query was rejected; the message names the field."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong access token."""


class PermissionDeniedError(APIStatusError):
    """403: the token may not use this workspace or model."""


class NotFoundError(APIStatusError):
    """404: no such model, adapter or route in this workspace."""


class ConflictError(APIStatusError):
    """409: the resource is busy or in a conflicting state."""


class UnprocessableEntityError(APIStatusError):
    """422: well-formed but unprocessable input (e.g. a prompt longer than the model's context)."""


class RateLimitError(APIStatusError):
    """429: too many requests; `retry_after` says how long the server asked us to wait."""


class InternalServerError(APIStatusError):
    """5xx: the server failed; retried automatically for safe calls."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

_HINTS: dict[int, str] = {
    401: " (check the access token: access_token=... or GRADIENT_ACCESS_TOKEN)",
    403: " (check the workspace id: workspace_id=... or GRADIENT_WORKSPACE_ID)",
}


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as (float) seconds or an HTTP date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None


def _decode_body(response: httpx.Response) -> object:
    text = response.text
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python parses
        return text


def error_signature(exc: BaseException) -> str:
    """What makes two errors the same failure: class, status, message and type, without the request id
    (every answer has its own). For "N identical failures in a row" checks.

    Example::

        error_signature(err)   # "NotFoundError: 404: no model 'x' in workspace 'ws' type=unknownModelAdapter"
    """
    if isinstance(exc, APIStatusError):
        return f"{type(exc).__name__}: {exc.status_code}: {exc.message} type={exc.error_type}"
    return f"{type(exc).__name__}: {exc}"


STOP_AFTER: Final = 5
"""Identical hopeless failures in a row after which a long run (batch file, evaluation) stops."""


def is_hopeless(error: BaseException | None) -> bool:
    """An error no retry and no other item can fix: bad token, no access, unknown model, refused connection."""
    if isinstance(error, (AuthenticationError, PermissionDeniedError, NotFoundError)):
        return True
    return isinstance(error, APIConnectionError) and not isinstance(error, APITimeoutError) and not error.sent


class HopelessStreak:
    """A run of identical hopeless failures (`is_hopeless`, same `error_signature`): a long run
    stops once it reaches `limit`, since every later item would fail the same way.

    Example::

        streak = HopelessStreak(STOP_AFTER)
        for item in items:
            if streak.add(item.error):     # None (a success) or a non-hopeless error resets it
                break
    """

    def __init__(self, limit: int = STOP_AFTER) -> None:
        self.limit = limit
        self.signature: str | None = None
        self.count = 0

    def add(self, error: BaseException | None) -> bool:
        """Record one finished item; True when the run should stop."""
        if error is None or not is_hopeless(error):
            self.signature, self.count = None, 0
            return False
        signature = error_signature(error)  # request ids differ on every answer
        self.count = self.count + 1 if signature == self.signature else 1
        self.signature = signature
        return self.count >= self.limit


def make_status_error(response: httpx.Response) -> APIStatusError:
    """The APIStatusError subclass for `response`, with the server's message."""
    body = _decode_body(response)
    message: str | None = None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value: Any = body.get(key)
            if isinstance(value, str) and value:
                message = value
                break
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                message = value["message"]
                break
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    if message is None:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    message += _HINTS.get(response.status_code, "")
    status = response.status_code
    cls = _STATUS_CLASSES.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return cls(message, response=response, body=body)
