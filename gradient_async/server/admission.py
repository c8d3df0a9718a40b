"""Admission control, like a hosted API: a bounded queue per engine and optional per-token rates.

- **Queue.** At most `max_queue` engine calls (completions, fine-tunes, embeddings, adapter
  creation) are admitted at once, running or waiting; one more gets 429 with a `Retry-After`
  estimated from recent service times.
- **Rates.** With `requests_per_minute` / `tokens_per_minute`, each access token has two buckets
  refilled continuously at that rate and holding at most one minute's worth. A request is admitted
  when both buckets hold its cost (1 request; its tokens) and is then charged. A request larger than
  a whole minute's tokens needs a full bucket and leaves it in debt, so the next one waits until the
  debt is paid back. Otherwise 429 with `Retry-After` (the seconds until the request would fit).
- **Shutdown.** Once `close()` is called every new request is refused with 503 + `Retry-After`.

The clock is injectable, so the rates are tested without sleeping.

Example::

    admission = Admission(lambda: settings.limits)
    async with admission.admit(token, cost_tokens=120, engine_work=True):
        result = await engine.generate(...)
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gradient_async.server.errors import ApiError
from gradient_async.server.faults import retry_after_headers
from gradient_async.server.limits import ServerLimits

__all__ = ["Admission"]


@dataclass
class _Bucket:
    rate_per_s: float
    capacity: float
    balance: float
    stamp: float

    def refill(self, rate_per_minute: float, now: float) -> None:
        rate = rate_per_minute / 60.0
        if rate != self.rate_per_s:
            self.rate_per_s, self.capacity = rate, max(1.0, rate_per_minute)
            self.balance = min(self.balance, self.capacity)
        self.balance = min(self.capacity, self.balance + (now - self.stamp) * rate)
        self.stamp = now

    def wait_s(self, cost: float) -> float:
        """Seconds until `cost` may be charged (0: now). A cost above the capacity needs a full bucket."""
        need = min(cost, self.capacity)
        if self.balance >= need:
            return 0.0
        return (need - self.balance) / self.rate_per_s


class Admission:
    """Decides, before any work, whether a request runs now or gets 429/503."""

    def __init__(self, limits: Callable[[], ServerLimits], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self.in_flight = 0
        self.closing = False
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._service_s = 1.0  # moving average of engine call durations

    def _bucket(self, table: dict[str, _Bucket], key: str, per_minute: float, now: float) -> _Bucket:
        bucket = table.get(key)
        if bucket is None:
            capacity = max(1.0, per_minute)
            bucket = table[key] = _Bucket(per_minute / 60.0, capacity, capacity, now)
        bucket.refill(per_minute, now)
        return bucket

    def close(self) -> None:
        """Refuse new work from now on (shutdown)."""
        self.closing = True

    def check(self, key: str, *, cost_tokens: int = 0, engine_work: bool = False) -> None:
        """Raise 429/503 ApiError when the request may not run now; else charge its cost."""
        limits = self._limits()
        if self.closing:
            raise ApiError(
                503, "the server is shutting down; retry against another instance or later", headers=_after(5.0)
            )
        if engine_work and self.in_flight >= limits.max_queue:
            wait = max(1.0, self._service_s * self.in_flight / limits.max_queue)
            raise ApiError(
                429,
                f"the engine queue is full ({self.in_flight} requests; max_queue {limits.max_queue}); "
                "retry after the Retry-After header",
                payload={"limit": "max_queue", "maximum": limits.max_queue, "actual": self.in_flight},
                headers=_after(wait),
            )
        now = self._clock()
        buckets: list[tuple[_Bucket, float, str]] = []
        if limits.requests_per_minute is not None:
            b = self._bucket(self._requests, key, limits.requests_per_minute, now)
            buckets.append((b, 1.0, f"requests_per_minute {limits.requests_per_minute:g}"))
        if limits.tokens_per_minute is not None and cost_tokens > 0:
            b = self._bucket(self._tokens, key, limits.tokens_per_minute, now)
            buckets.append((b, float(cost_tokens), f"tokens_per_minute {limits.tokens_per_minute:g}"))
        for bucket, cost, name in buckets:
            wait = bucket.wait_s(cost)
            if wait > 0:
                raise ApiError(
                    429,
                    f"rate limit of this access token exceeded ({name}); retry after the Retry-After header",
                    payload={"limit": name.split()[0]},
                    headers=_after(wait),
                )
        for bucket, cost, _ in buckets:
            bucket.balance -= cost

    @asynccontextmanager
    async def admit(self, key: str, *, cost_tokens: int = 0, engine_work: bool = True) -> AsyncIterator[None]:
        """`check`, then hold a queue place for the duration of the block."""
        self.check(key, cost_tokens=cost_tokens, engine_work=engine_work)
        if not engine_work:
            yield
            return
        self.in_flight += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._service_s = 0.8 * self._service_s + 0.2 * (time.monotonic() - started)


def _after(seconds: float) -> dict[str, str]:
    return retry_after_headers(seconds if math.isfinite(seconds) else 60.0)
