"""Smooth rate limits (requests or tokens per minute) by GCRA virtual scheduling.

Each caller reserves the next free slot on a virtual timeline and sleeps until it, once:
no bursts after idle time, no polling loop, fair in arrival order.
See https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm (virtual scheduling).

Example::

    rpm = RateLimiter(600)            # one request every 100 ms
    tpm = RateLimiter(90_000)         # tokens per minute
    await rpm.acquire()
    await tpm.acquire(cost=estimated_tokens)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from gradient_async._errors import ValidationError

__all__ = ["RateLimiter"]


class RateLimiter:
    """`per_minute` units per minute, spaced evenly. `acquire(cost)` waits for `cost` units.

    Args:
        per_minute: the budget (> 0).
        clock: seconds, monotonic (default `anyio.current_time`).
        sleep: async sleep (default `anyio.sleep`; tests inject a fake one).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)) or per_minute <= 0:
            raise ValidationError(f"a per-minute rate limit must be a number > 0, got {per_minute!r}")
        self.interval = 60.0 / float(per_minute)
        self._clock = clock
        self._sleep = sleep
        self._tat: float | None = None  # theoretical arrival time of the next unit

    async def acquire(self, cost: float = 1.0) -> None:
        """Reserve `cost` units and wait until the reservation starts (returns at once when idle)."""
        wait = self.reserve(cost)
        if wait > 0:
            await self._sleep(wait)

    def reserve(self, cost: float = 1.0) -> float:
        """Reserve `cost` units now; return the seconds until the reservation starts (0: go now)."""
        now = self._clock()
        start = now if self._tat is None else max(now, self._tat)
        self._tat = start + max(cost, 0.0) * self.interval
        return start - now

    def ready(self) -> bool:
        """Whether an `acquire` now would not wait."""
        return self._tat is None or self._tat <= self._clock()
