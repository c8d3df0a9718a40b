"""Retry policy: what is retried, how long to wait, and when to give up.

Retried: connection errors, timeouts and 408/409/429/500/502/503/504 — for idempotent
calls (GET, DELETE, complete, embeddings). Calls that change state (create adapter,
fine-tune) are retried only when the request certainly never reached the server
(connect failure) or the server refused it outright with 429, unless the caller
opts in with ``idempotent=True``.

Waits: exponential backoff with full jitter, capped at ``max_delay``. A server's
Retry-After / retry-after-ms is a floor, with jitter added on top so a herd of
waiters does not come back in the same millisecond. A Retry-After longer than
``max_retry_after`` is not waited for: the error is raised at once.

Example::

    policy = RetryPolicy(max_retries=5, max_delay=4.0, deadline=30.0)
    client = AsyncGradient(retry=policy)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.stop import stop_base

from gradient_async._errors import APIConnectionError, APIStatusError, RateLimitError, ValidationError

__all__ = ["DEFAULT_RETRY_STATUSES", "RetryEvent", "RetryHook", "RetryPolicy", "build_retrying", "logger"]

logger: Final = logging.getLogger("gradient_async")

DEFAULT_RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})
_RNG: Final = random.Random()


@dataclass(frozen=True)
class RetryEvent:
    """Passed to a retry hook before each wait: `attempt` is the attempt that just failed (1-based)."""

    attempt: int
    error: BaseException
    wait: float


RetryHook = Callable[[RetryEvent], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries. Immutable: build a new one to change it.

    Args:
        max_retries: retries after the first attempt; 0 disables retrying.
        initial_delay: backoff base in seconds (attempt n waits up to initial_delay * 2**n).
        max_delay: cap on one backoff wait.
        max_retry_after: a server-asked wait longer than this is not waited for.
        retry_after_jitter: extra wait on top of Retry-After, up to this fraction of it (at least 5 ms).
        deadline: overall seconds for all attempts and waits together; None for no limit.
        retry_statuses: HTTP statuses that are retried.
        sleep: the async sleep used between attempts (tests inject a fake one).

    Example::

        RetryPolicy(max_retries=4, deadline=20.0)
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    retry_after_jitter: float = 0.2
    deadline: float | None = None
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValidationError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        for name in ("initial_delay", "max_delay", "max_retry_after", "retry_after_jitter"):
            if getattr(self, name) < 0:
                raise ValidationError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.deadline is not None and self.deadline <= 0:
            raise ValidationError(f"deadline must be > 0 seconds or None, got {self.deadline!r}")

    def is_retryable(self, error: BaseException, *, idempotent: bool) -> bool:
        """Whether `error` may be retried for a call of this idempotency."""
        if isinstance(error, APIConnectionError):
            return idempotent or not error.sent
        if isinstance(error, APIStatusError):
            if error.retry_after is not None and error.retry_after > self.max_retry_after:
                return False
            if isinstance(error, RateLimitError):
                return 429 in self.retry_statuses
            return idempotent and error.status_code in self.retry_statuses
        return False

    def compute_wait(self, retry_number: int, error: BaseException | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry_number` (0-based)."""
        retry_after = error.retry_after if isinstance(error, APIStatusError) else None
        if retry_after is not None:
            return retry_after + rng.uniform(0.0, max(0.005, retry_after * self.retry_after_jitter))
        ceiling = min(self.max_delay, self.initial_delay * (2.0**retry_number))
        return rng.uniform(0.0, ceiling)


class _Wait:
    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return self._policy.compute_wait(state.attempt_number - 1, error, self._rng)


def build_retrying(
    policy: RetryPolicy,
    *,
    idempotent: bool,
    max_retries: int,
    on_retry: RetryHook | None = None,
    rng: random.Random | None = None,
) -> AsyncRetrying:
    """A fresh tenacity AsyncRetrying for one request (tenacity keeps per-instance state)."""
    stop: stop_base = stop_after_attempt(max_retries + 1)
    if policy.deadline is not None:
        stop = stop | stop_before_delay(policy.deadline)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.upcoming_sleep
        status = getattr(error, "status_code", None)
        logger.debug(
            "retrying request: attempt=%d status=%s error=%s wait=%.3fs",
            state.attempt_number,
            status,
            type(error).__name__,
            wait,
        )
        if on_retry is not None and error is not None:
            on_retry(RetryEvent(attempt=state.attempt_number, error=error, wait=wait))

    return AsyncRetrying(
        stop=stop,
        wait=_Wait(policy, rng or _RNG),
        retry=retry_if_exception(lambda exc: policy.is_retryable(exc, idempotent=idempotent)),
        sleep=policy.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
