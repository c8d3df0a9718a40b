"""Retry policy: THE retry decision (what is retried, how long to wait, whether the deadline allows it).

Both loops that retry, the client's (`_client.py`) and the batch runner's (`_batch/runner.py`), ask
`RetryPolicy.next_wait(...)` and only act on its answer: a number of seconds to wait, or None to give up.

Retried: connection errors, timeouts and 408/409/429/500/502/503/504 — for idempotent
calls (GET, DELETE, complete, embeddings). Calls that change state (create adapter,
fine-tune) are retried only when the request certainly never reached the server
(connect failure) or the server refused it outright with 429, unless the caller
opts in with ``idempotent=True``.

Budgets: ``max_retries`` failures are retried (0 disables retrying altogether). A 429 costs no
retry budget: up to ``max_rate_limit_retries`` of them are waited out on top, each for the
server's Retry-After.

Waits: exponential backoff with full jitter, capped at ``max_delay``. A server's
Retry-After / retry-after-ms is a floor, with jitter added on top so a herd of
waiters does not come back in the same millisecond. A Retry-After longer than
``max_retry_after`` is not waited for: the error is raised at once. No wait is started
that would end past the call's ``deadline`` (which the client also enforces as a wall clock).

Example::

    policy = RetryPolicy(max_retries=5, max_delay=4.0, deadline=30.0)
    client = AsyncGradient(retry=policy)
    policy.next_wait(error, attempt=1, elapsed=0.3, idempotent=True)   # 0.41, or None: give up
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio

from gradient_async._errors import APIConnectionError, APIStatusError, PoolTimeoutError, RateLimitError, ValidationError

__all__ = ["DEFAULT_RETRY_STATUSES", "RetryEvent", "RetryHook", "RetryPolicy", "logger"]

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
        max_retries: retries after the first attempt; 0 disables retrying (429s included).
        max_rate_limit_retries: 429 answers a call may wait out on top of `max_retries`.
        initial_delay: backoff base in seconds (attempt n waits up to initial_delay * 2**n).
        max_delay: cap on one backoff wait.
        max_retry_after: a server-asked wait longer than this is not waited for.
        retry_after_jitter: extra wait on top of Retry-After, up to this fraction of it (at least 5 ms).
        deadline: wall-clock seconds for the whole call (slot wait, every attempt, every wait); None for
            no limit. Enforced as a cancel scope: an attempt running at the deadline is cancelled.
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
    max_rate_limit_retries: int = 25

    def __post_init__(self) -> None:
        for name in ("max_retries", "max_rate_limit_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("initial_delay", "max_delay", "max_retry_after", "retry_after_jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValidationError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.deadline is not None and (
            not isinstance(self.deadline, (int, float)) or not 0 < self.deadline < float("inf")
        ):
            raise ValidationError(f"deadline must be a finite number of seconds > 0 or None, got {self.deadline!r}")

    def is_retryable(self, error: BaseException, *, idempotent: bool) -> bool:
        """Whether `error` may be retried for a call of this idempotency (budgets aside)."""
        if isinstance(error, PoolTimeoutError):  # the wait for a slot ran out: waiting again breaks the limit
            return False
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
        """Seconds to wait before retry number `retry_number` (0-based), budgets and deadline aside."""
        retry_after = error.retry_after if isinstance(error, APIStatusError) else None
        if retry_after is not None:
            return retry_after + rng.uniform(0.0, max(0.005, retry_after * self.retry_after_jitter))
        ceiling = min(self.max_delay, self.initial_delay * (2.0 ** min(retry_number, 64)))
        return rng.uniform(0.0, ceiling)

    def next_wait(
        self,
        error: BaseException,
        attempt: int,
        elapsed: float = 0.0,
        *,
        idempotent: bool,
        rate_limited: int = 0,
        rng: random.Random | None = None,
    ) -> float | None:
        """THE retry decision: seconds to wait before the next attempt, or None to give up.

        Args:
            error: what attempt number `attempt` (1-based) failed with.
            elapsed: seconds since the call started (for the deadline).
            idempotent: whether the call may be repeated after it may have reached the server.
            rate_limited: how many of the `attempt` attempts were answered 429 (this one included).

        Example::

            wait = policy.next_wait(err, attempts, clock() - started, idempotent=True)
            if wait is None:
                raise err
            await policy.sleep(wait)
        """
        if self.max_retries == 0 or not self.is_retryable(error, idempotent=idempotent):
            return None
        if isinstance(error, RateLimitError):
            if rate_limited > self.max_rate_limit_retries:
                return None
            retry_number = max(rate_limited - 1, 0)
        else:
            failures = attempt - rate_limited
            if failures > self.max_retries:
                return None
            retry_number = max(failures - 1, 0)
        wait = self.compute_wait(retry_number, error, rng or _RNG)
        if self.deadline is not None and elapsed + wait >= self.deadline:
            return None  # the wait would end past the deadline: give up now, with the real error
        return wait
