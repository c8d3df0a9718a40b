"""Client configuration: credentials, base URL, timeouts, concurrency, retries.

`ClientConfig.from_env()` reads the same three variables as the official SDK:
GRADIENT_ACCESS_TOKEN, GRADIENT_WORKSPACE_ID and GRADIENT_API_URL.

Example::

    config = ClientConfig.from_env(timeout=30.0)
    print(config)   # the token is shown as '***'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias, TypeVar

import httpx

from gradient_async._errors import MissingCredentialsError, ValidationError
from gradient_async._retry import RetryPolicy

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "ClientConfig",
    "NOT_GIVEN",
    "NotGiven",
    "RateControl",
    "Secret",
    "TimeoutTypes",
    "to_httpx_timeout",
]

DEFAULT_BASE_URL: Final = "https://api.gradient.ai/api"
DEFAULT_TIMEOUT: Final = httpx.Timeout(120.0, connect=10.0)
DEFAULT_MAX_CONCURRENCY: Final = 64
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024

TimeoutTypes: TypeAlias = "float | httpx.Timeout | None"
_T = TypeVar("_T")


class NotGiven:
    """Sentinel for "use the client default", distinct from None ("disable").

    Example::

        await client.with_options(timeout=NOT_GIVEN)   # keeps the client's timeout
        await client.with_options(timeout=None)        # no timeout at all
    """

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def given(value: _T | NotGiven, default: _T) -> _T:
    """`value` unless it is NOT_GIVEN, else `default`."""
    return default if isinstance(value, NotGiven) else value


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def to_httpx_timeout(timeout: TimeoutTypes) -> httpx.Timeout:
    """Seconds (applied to connect, read, write and pool), an httpx.Timeout, or None (no timeout)."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is None:
        return httpx.Timeout(None)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValidationError(
            f"timeout must be a positive number of seconds, an httpx.Timeout or None, got {timeout!r}"
        )
    return httpx.Timeout(float(timeout))


@dataclass(frozen=True)
class RateControl:
    """Client-wide rate control, shared by every call and batch of a client (see `_limiter.py`).

    Args:
        adaptive: on a 429, pause every new send of the client for the Retry-After, halve the
            concurrency window and pace sends at the rate the server accepts, then probe upwards.
        requests_per_minute: a smooth client-wide request budget (None: none).
        tokens_per_minute: a smooth client-wide token budget, from each request's estimated
            prompt + generated tokens (None: none).

    `AsyncGradient(rate_control=None)` turns all of it off: each call then waits out its own 429s.

    Example::

        AsyncGradient(rate_control=RateControl(requests_per_minute=3000))
    """

    adaptive: bool = True
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.adaptive, bool):
            raise ValidationError(f"adaptive must be True or False, got {self.adaptive!r}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValidationError(f"{name} must be a number > 0 or None, got {value!r}")


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs to talk to one workspace. Immutable; derive with `replace`.

    Example::

        config = ClientConfig(access_token="...", workspace_id="...", max_concurrency=32)
    """

    access_token: Secret
    workspace_id: str
    base_url: str = DEFAULT_BASE_URL
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_queue: int | None = None
    rate_control: RateControl | None = field(default_factory=RateControl)
    keepalive_expiry: float = 30.0
    default_headers: tuple[tuple[str, str], ...] = ()
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise ValidationError(f"max_concurrency must be an integer >= 1, got {self.max_concurrency!r}")
        if (
            isinstance(self.max_response_bytes, bool)
            or not isinstance(self.max_response_bytes, int)
            or self.max_response_bytes < 1
        ):
            raise ValidationError(f"max_response_bytes must be an integer >= 1, got {self.max_response_bytes!r}")
        if self.max_queue is not None and (
            isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0
        ):
            raise ValidationError(f"max_queue must be an integer >= 0 or None, got {self.max_queue!r}")
        if self.rate_control is not None and not isinstance(self.rate_control, RateControl):
            raise ValidationError(f"rate_control must be a RateControl or None, got {type(self.rate_control).__name__}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValidationError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL as exc:
            raise ValidationError(f"base_url (or GRADIENT_API_URL) is not a valid URL: {exc}") from None
        if not url.host:
            raise ValidationError(f"base_url (or GRADIENT_API_URL) names no host, got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def from_env(
        cls,
        *,
        access_token: str | None = None,
        workspace_id: str | None = None,
        base_url: str | None = None,
        **overrides: Any,
    ) -> ClientConfig:
        """Explicit arguments first, then GRADIENT_ACCESS_TOKEN / GRADIENT_WORKSPACE_ID / GRADIENT_API_URL.

        Raises MissingCredentialsError naming every missing setting.
        """
        token = access_token or _env("GRADIENT_ACCESS_TOKEN")
        workspace = workspace_id or _env("GRADIENT_WORKSPACE_ID")
        missing = []
        if not token:
            missing.append("access token (pass access_token=... or set GRADIENT_ACCESS_TOKEN)")
        if not workspace:
            missing.append("workspace id (pass workspace_id=... or set GRADIENT_WORKSPACE_ID)")
        if missing:
            raise MissingCredentialsError("Missing " + " and ".join(missing) + ".")
        assert token is not None and workspace is not None
        url = base_url or _env("GRADIENT_API_URL") or DEFAULT_BASE_URL
        return cls(access_token=Secret(token), workspace_id=workspace, base_url=url, **overrides)

    def replace(self, **changes: Any) -> ClientConfig:
        return replace(self, **changes)
