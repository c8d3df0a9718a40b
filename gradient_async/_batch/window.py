"""Adaptive admission for one batch: AIMD concurrency window, batch-wide pause, learned pace.

On a 429 anywhere in the batch:

- new sends of the whole batch pause until the server's Retry-After (plus jitter) has passed;
- the concurrency window halves, once per round trip (like TCP: the herd of 429s caused by
  one overload counts once), and grows back by 1/window per success (≈ +1 per window); it
  never shrinks below what the pace needs at the observed latency;
- sends are paced at the success rate measured over the last seconds, which under overload
  is the server's own limit; the pace then rises (25 % per second until a second 429,
  as the first estimate rests on one round trip; ~5 % per second after), probing for more
  until the next 429. So the server sees close to its limit, not a herd.

Example::

    window = AdaptiveWindow(64)
    slot = await window.acquire()
    try:
        ...
    finally:
        window.release(slot)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio

from gradient_async._ratelimit import RateLimiter

__all__ = ["AdaptiveWindow", "Slot", "Throughput"]

PACE_GROWTH = 0.05
"""Pace increase per success, in requests/s: the pace grows ~5 % per second it is sustained."""
PACE_HEADROOM = 1.0
"""Fraction of the measured success rate the pace restarts at after a 429 (the rate itself: the 429s
that triggered the decrease already show where the limit is)."""


class Slot:
    """One admitted send; `sent_at` is when it was admitted."""

    __slots__ = ("sent_at",)

    def __init__(self) -> None:
        self.sent_at = -math.inf


class Throughput:
    """Successes per second over the last `span` seconds, in `bins` buckets (constant memory)."""

    def __init__(self, clock: Callable[[], float], *, span: float = 2.0, bins: int = 20) -> None:
        self._clock = clock
        self._width = span / bins
        self._counts = [0] * bins
        self._stamps = [-1] * bins
        self._first = math.inf

    def start(self) -> None:
        """Mark when measuring starts (the first send): early rates count from here."""
        if self._first == math.inf:
            self._first = self._clock()

    def add(self) -> None:
        now = self._clock()
        self.start()
        tick = int(now / self._width)
        i = tick % len(self._counts)
        if self._stamps[i] != tick:
            self._stamps[i] = tick
            self._counts[i] = 0
        self._counts[i] += 1

    def rate(self, *, min_samples: int = 8) -> float | None:
        """Successes/s over the span (or since `start()`, if shorter); None with fewer than `min_samples`."""
        now = self._clock()
        if self._first == math.inf:
            return None
        tick = int(now / self._width)
        n = len(self._counts)
        total = sum(c for c, s in zip(self._counts, self._stamps, strict=True) if tick - s < n)
        if total < min_samples:
            return None
        seconds = min(n * self._width, max(now - self._first, 1e-3))
        return total / seconds


class AdaptiveWindow:
    """`acquire()` admits a send when the window has room, no pause runs, and the pace allows."""

    def __init__(
        self,
        max_size: int,
        *,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        decrease: float = 0.5,
    ) -> None:
        self.max_size = max_size
        self.size = float(max_size)
        self._clock = clock
        self._sleep = sleep
        self._decrease = decrease
        self._limiter = anyio.CapacityLimiter(max_size)
        self._pause_until = -math.inf
        self._pause_served = -math.inf
        self._pause_done: anyio.Event | None = None  # set when the task sleeping through a pause wakes
        self._last_decrease = -math.inf
        self._throughput = Throughput(clock)
        self.pace: float | None = None  # requests/s once a 429 was seen
        self._pacer: RateLimiter | None = None
        self._growth = 0.25  # pace increase per success: fast at first (+25 %/s), then 5 %/s
        self._rtt: float | None = None  # smoothed seconds from admission to success

    @property
    def in_flight(self) -> int:
        return self._limiter.borrowed_tokens

    @property
    def paused_until(self) -> float:
        return self._pause_until

    async def acquire(self) -> Slot:
        """Wait for a slot, any pause, and the pace. Give the slot back with `release(slot)`."""
        slot = Slot()
        try:  # the common case takes no trip through the event loop
            self._limiter.acquire_on_behalf_of_nowait(slot)
        except anyio.WouldBlock:
            await self._limiter.acquire_on_behalf_of(slot)
        try:
            await self._wait_pause()
            if self._pacer is not None:
                await self._pacer.acquire()
                await self._wait_pause()  # a 429 may have arrived while this send waited for its turn
        except BaseException:
            self._limiter.release_on_behalf_of(slot)
            raise
        slot.sent_at = self._clock()
        self._throughput.start()
        return slot

    def release(self, slot: Slot) -> None:
        self._limiter.release_on_behalf_of(slot)

    async def _wait_pause(self) -> None:
        """Wait out the batch-wide pause. One task sleeps through it; the others wait for that
        task, so a pause is one sleep however many sends are held back by it."""
        while True:
            until = self._pause_until
            remaining = until - self._clock()
            # `_pause_served` lets a pause end once someone slept through it, even with a fake sleep.
            if remaining <= 0 or until == self._pause_served:
                return
            if self._pause_done is not None:
                await self._pause_done.wait()
                continue
            done = self._pause_done = anyio.Event()
            try:
                await self._sleep(remaining)
                if self._pause_until == until:
                    self._pause_served = until
            finally:
                self._pause_done = None
                done.set()

    def on_success(self, slot: Slot) -> None:
        rtt = self._clock() - slot.sent_at
        self._rtt = rtt if self._rtt is None else 0.8 * self._rtt + 0.2 * rtt
        self._throughput.add()
        if self.size < self.max_size:
            self.size = min(float(self.max_size), self.size + 1.0 / self.size)
            self._apply()
        if self.pace is not None:
            self._set_pace(self.pace + self._growth)

    def on_rate_limited(self, wait: float, slot: Slot) -> None:
        """The request sent on `slot` got a 429: pause everyone for `wait` seconds; once per round
        trip, halve the window and pace at the measured success rate."""
        now = self._clock()
        self._pause_until = max(self._pause_until, now + wait)
        if slot.sent_at < self._last_decrease:
            return
        self._last_decrease = now
        measured = self._throughput.rate()
        if measured is not None:
            target = measured * PACE_HEADROOM
            if self.pace is not None:
                self._growth = PACE_GROWTH  # the first estimate came from one round trip: probe fast until now
            self._set_pace(target if self.pace is None else min(self.pace, target))
        # Halve the window, but keep enough room for the pace at the observed latency.
        floor = 1.0 if self.pace is None or self._rtt is None else float(math.ceil(self.pace * self._rtt * 1.2))
        self.size = min(float(self.max_size), max(1.0, floor, self.size * self._decrease))
        self._apply()

    def _set_pace(self, rate: float) -> None:
        self.pace = max(rate, 0.5)
        if self._pacer is None:
            self._pacer = RateLimiter(self.pace * 60.0, clock=self._clock, sleep=self._sleep)
        else:
            self._pacer.interval = 1.0 / self.pace

    def _apply(self) -> None:
        tokens = max(1, int(self.size))
        if tokens != self._limiter.total_tokens:
            self._limiter.total_tokens = tokens
