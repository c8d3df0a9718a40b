"""The client's admission control: every attempt of every call, batch and `with_options` copy of
one client passes through its one `Limiter`.

- Concurrency: at most `max_concurrency` attempts in flight.
- Queue: at most `max_queue` calls wait for admission; one more fails at once with
  `QueueFullError`, so a service can shed load instead of piling up waiters.
- Pool timeout: a call waits for admission at most `pool_timeout` seconds (the `pool` field of
  its `httpx.Timeout`), then fails with `PoolTimeoutError`; it was never sent.
- Adaptive rate control (`RateControl(adaptive=True)`, the default). On a 429 anywhere:

  - new sends of the whole client pause until the server's Retry-After (plus jitter) has passed;
    one task sleeps through the pause, the others wait for it;
  - once per round trip (the herd of 429s caused by one overload counts once) the concurrency
    window halves, to no more than what succeeded in that round trip while no pace is known, and
    to no less than what the pace needs at the observed latency; it grows back by 1/window per
    success (≈ +1 per round trip);
  - sends are paced at the success rate measured over the last second (pauses left out), which
    under overload is the server's own limit, less 10 % so a burst allowance refills; the pace then
    rises (25 % per second until the second slow-down, ~5 % per second after), probing for more;
  - an isolated 429 once a pace is established (none in the second before) is a probe that went
    too far: the pace drops and only that call waits its Retry-After, the others go on at the lower
    pace. So the server sees close to its limit, not a herd, and a whole-second Retry-After on
    one probe does not stall every call.

- Optional smooth requests/tokens per minute (`_ratelimit.RateLimiter`).

Example::

    limiter = Limiter(64, max_queue=1000, control=RateControl())     # inside the event loop
    slot = await limiter.acquire(pool_timeout=5.0)
    try:
        response = await send()
    finally:
        limiter.release(slot)              # a no-op after on_success / on_rate_limited
    if response.status_code == 429:
        await anyio.sleep(limiter.on_rate_limited(slot, wait))   # 0: the client-wide pause waits for us
    elif response.is_success:
        limiter.on_success(slot)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final

import anyio

from gradient_async._config import RateControl
from gradient_async._errors import ClientClosedError, PoolTimeoutError, QueueFullError
from gradient_async._ratelimit import RateLimiter

__all__ = ["PATIENT", "Limiter", "LimiterStats", "Pacer", "Slot", "Throughput", "estimate_cost", "loop_clock"]

PATIENT: Final = ContextVar("gradient_async_patient", default=False)
"""True inside a batch worker task: its calls wait for admission without shedding or a pool timeout
(the batch's own window bounds how many it queues; its deadline bounds each item)."""

PACE_GROWTH = 0.05
"""Pace increase per success, in requests/s: the pace grows ~5 % per second it is sustained."""
PACE_FIRST_GROWTH = 0.25
"""Pace increase per success until the second 429 (≈ doubling per second): the first estimate rests
on a round trip or two of a herd, so probe fast for the real limit."""
PACE_HEADROOM = 0.9
PACE_BACKOFF = 0.5
PACE_MIN_BACKOFF = 0.95
PACE_BLIND_BACKOFF = 0.8
"""On a 429 the pace drops to PACE_HEADROOM of the measured success rate (below the limit, so a
server's burst allowance refills), but by no more than PACE_BACKOFF (a rate measured while the pace
was still ramping up reads low) and no less than PACE_MIN_BACKOFF (a rate measured around a pause
reads high) at once; by PACE_BLIND_BACKOFF when no success was measured at all."""
MAX_PAUSE = 600.0
"""The longest client-wide pause one 429 can cause (callers pass at most RetryPolicy.max_retry_after)."""
RATE_SPAN = 1.0
"""Seconds of recent successes the pace is measured over at a slow-down."""
REPEAT_WINDOW = 1.0
"""A 429 within this many seconds of the previous slow-down means the slow-down did not help (or
the server wants a real break): every send pauses for the Retry-After."""


def loop_clock() -> Callable[[], float]:
    """The running loop's clock, looked up once: the same readings as `anyio.current_time()`,
    without its per-call backend lookup."""
    import asyncio

    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return anyio.current_time


def estimate_cost(body: Any) -> float:
    """Tokens a request may use, for a tokens-per-minute budget: prompt characters / 4 plus the
    tokens it may generate (`query` + `maxGeneratedTokenCount`, or embeddings `inputs`)."""
    if not isinstance(body, Mapping):
        return 0.0
    cost = 0.0
    query = body.get("query")
    if isinstance(query, str):
        cost += math.ceil(len(query) / 4)
    generated = body.get("maxGeneratedTokenCount")
    if isinstance(generated, int) and not isinstance(generated, bool):
        cost += generated
    inputs = body.get("inputs")
    if isinstance(inputs, list):
        for item in inputs:
            text = item.get("input") if isinstance(item, Mapping) else None
            if isinstance(text, str):
                cost += math.ceil(len(text) / 4)
    return cost


class Slot:
    """One admitted attempt; `sent_at` is when it was admitted. Release it exactly once (later
    releases are no-ops)."""

    __slots__ = ("released", "sent_at")

    def __init__(self) -> None:
        self.sent_at = -math.inf
        self.released = False


class LimiterStats:
    """A snapshot: `in_flight` attempts, `waiting` calls, current `window` and `pace` (req/s or
    None), `paused_for` seconds left of a 429 pause."""

    __slots__ = ("in_flight", "pace", "paused_for", "waiting", "window")

    def __init__(self, in_flight: int, waiting: int, window: int, pace: float | None, paused_for: float) -> None:
        self.in_flight = in_flight
        self.waiting = waiting
        self.window = window
        self.pace = pace
        self.paused_for = paused_for

    def __repr__(self) -> str:
        pace = "None" if self.pace is None else f"{self.pace:.1f}"
        return (
            f"LimiterStats(in_flight={self.in_flight}, waiting={self.waiting}, window={self.window}, "
            f"pace={pace}, paused_for={self.paused_for:.3f})"
        )


class Throughput:
    """Successes per second over the last `span` seconds, in `bins` buckets (constant memory).
    Time the sender spent idle on purpose (`idle(start, end)`: a 429 pause) is not counted, so a
    pause does not read as a slower server."""

    def __init__(self, clock: Callable[[], float], *, span: float = 2.0, bins: int = 20) -> None:
        self._clock = clock
        self._span = span
        self._width = span / bins
        self._counts = [0] * bins
        self._stamps = [-1] * bins
        self._first = math.inf
        self._idle: list[tuple[float, float]] = []

    def idle(self, start: float, end: float) -> None:
        """No successes can arrive from `start` to `end` because the sender held back."""
        if end <= start:
            return
        horizon = self._clock() - self._span
        self._idle = [(a, b) for a, b in self._idle if b > horizon]
        if self._idle and start <= self._idle[-1][1]:
            start = self._idle[-1][0]
            end = max(end, self._idle[-1][1])
            self._idle.pop()
        self._idle.append((start, end))

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

    def rate(self, *, span: float | None = None, min_samples: int = 8) -> float | None:
        """Successes/s over the last `span` seconds (default: the whole span; since `start()`, if
        shorter); None with fewer than `min_samples`."""
        now = self._clock()
        if self._first == math.inf:
            return None
        tick = int(now / self._width)
        n = len(self._counts)
        k = n if span is None else max(1, min(n, round(span / self._width)))
        total = sum(c for c, s in zip(self._counts, self._stamps, strict=True) if tick - s < k)
        if total < min_samples:
            return None
        seconds = min((k - 1) * self._width + (now - tick * self._width), now - self._first)
        since = now - seconds
        seconds -= sum(max(0.0, min(b, now) - max(a, since)) for a, b in self._idle)
        return total / max(seconds, 1e-3)


class Pacer:
    """Sends spaced `1 / rate` seconds apart, in arrival order. Unlike a reservation timeline, a
    change of `rate` applies to the very next send, not after the sends already queued.

    Example::

        pacer = Pacer(50.0)
        await pacer.acquire()       # returns at once when idle; later calls 20 ms apart
        pacer.rate = 60.0
    """

    def __init__(self, rate: float, *, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._last = -math.inf
        self._lock = anyio.Lock()

    def ready(self) -> bool:
        """Whether a send may go now without waiting (call `take()` if it does)."""
        return not self._lock.locked() and self._last + 1.0 / self.rate <= self._clock()

    def take(self) -> None:
        self._last = self._clock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: one waiter at a time sleeps until its turn
            due = self._last + 1.0 / self.rate
            now = self._clock()
            if due > now:
                await self._sleep(due - now)
            self._last = max(self._clock(), due)


class Limiter:
    """Admission for one client's attempts. Create it inside the running event loop.

    Args:
        max_concurrency: most attempts in flight at once (the window's ceiling).
        max_queue: most calls waiting for admission (None: no bound; 0: never wait).
        control: adaptive 429 handling and RPM/TPM budgets; None for a plain concurrency cap.
        clock / sleep: injectable for tests (default: the loop's clock, `anyio.sleep`).
        decrease: the window's multiplicative decrease on a 429.
        on_window / on_pause: called when the window changes (new size, previous size) and when a 429
            pauses the client (seconds); the client passes its metric recorders here.
    """

    def __init__(
        self,
        max_concurrency: int,
        *,
        max_queue: int | None = None,
        control: RateControl | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        decrease: float = 0.5,
        on_window: Callable[[int, int], None] | None = None,
        on_pause: Callable[[float], None] | None = None,
    ) -> None:
        clock = clock or loop_clock()
        self._on_window = on_window
        self._on_pause = on_pause
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.adaptive = control is not None and control.adaptive
        self.size = float(max_concurrency)
        self.pace: float | None = None  # requests/s once a 429 was seen
        self._clock = clock
        self._sleep = sleep
        self._decrease = decrease
        self._slots = anyio.CapacityLimiter(max_concurrency)
        self._waiting = 0
        self._closed = False
        self._scopes: set[anyio.CancelScope] = set()  # admission waits, cancelled by close()
        self._pause_until = -math.inf
        self._pause_served = -math.inf
        self._pause_done: anyio.Event | None = None  # set when the task sleeping through a pause wakes
        self._last_decrease = -math.inf
        self._ok_since_decrease = 0
        self._paused_last = True  # whether the last slow-down paused every send (else: an isolated overshoot)
        self._throughput = Throughput(clock)
        self._pacer: Pacer | None = None
        self._growth = PACE_FIRST_GROWTH  # pace increase per success: fast at first, PACE_GROWTH after
        self._rtt: float | None = None  # smoothed seconds from admission to success
        rpm = control.requests_per_minute if control is not None else None
        tpm = control.tokens_per_minute if control is not None else None
        self._rpm = RateLimiter(rpm, clock=clock, sleep=sleep) if rpm else None
        self._tpm = RateLimiter(tpm, clock=clock, sleep=sleep) if tpm else None
        self.counts_tokens = self._tpm is not None
        self._gated = self._rpm is not None or self._tpm is not None  # some budget to wait for on every send

    # -- state ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._slots.borrowed_tokens

    @property
    def waiting(self) -> int:
        """Calls waiting for admission now (a slot, a 429 pause, the pace or a budget)."""
        return self._waiting

    @property
    def paused_until(self) -> float:
        return self._pause_until

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> LimiterStats:
        paused_for = max(0.0, self._pause_until - self._clock()) if self._pause_until != self._pause_served else 0.0
        return LimiterStats(self.in_flight, self._waiting, int(self._slots.total_tokens), self.pace, paused_for)

    def close(self) -> None:
        """Refuse new admissions and wake every waiting call with ClientClosedError. Attempts
        already admitted run on (their owner decides whether to cancel them)."""
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()

    # -- admission ------------------------------------------------------------------------

    async def acquire(self, *, cost: float = 0.0, pool_timeout: float | None = None, shed: bool = True) -> Slot:
        """Wait for a slot, any 429 pause, the pace and the budgets; give the slot back with
        `release`, `on_success` or `on_rate_limited`.

        Args:
            cost: estimated tokens (counted only with a tokens-per-minute budget).
            pool_timeout: most seconds to wait for admission; None waits as long as it takes.
            shed: refuse at once with QueueFullError when `max_queue` calls already wait
                (a batch passes False: its own window bounds what it queues).

        Raises:
            QueueFullError, PoolTimeoutError, ClientClosedError.
        """
        slot = self.try_acquire(cost)
        if slot is not None:
            return slot
        if self._closed:
            raise ClientClosedError("this AsyncGradient is closed; create a new client")
        slot = Slot()
        if shed and self.max_queue is not None and self._waiting >= self.max_queue:
            raise QueueFullError(
                f"{self._waiting} calls already wait for one of {self.max_concurrency} concurrency slots "
                f"(max_queue={self.max_queue}); try again later, or raise max_queue / max_concurrency"
            )
        deadline = math.inf if pool_timeout is None else anyio.current_time() + max(0.0, pool_timeout)
        scope = anyio.CancelScope(deadline=deadline)
        self._scopes.add(scope)
        self._waiting += 1
        admitted = False
        try:
            with scope:
                await self._admit(slot, cost)
                admitted = True
        finally:
            self._waiting -= 1
            self._scopes.discard(scope)
        if not admitted:
            if self._closed:
                raise ClientClosedError("this AsyncGradient was closed while the call waited for a slot")
            raise PoolTimeoutError(
                f"no concurrency slot within the pool timeout of {pool_timeout} s "
                f"({self.in_flight} in flight, {self._waiting} waiting); the request was not sent"
            )
        slot.sent_at = self._clock()
        self._throughput.start()
        return slot

    def try_acquire(self, cost: float = 0.0) -> Slot | None:
        """A slot at once when nothing has to be waited for (no trip through the event loop), else
        None: then `await acquire(...)`."""
        if self._closed or not self._ready():
            return None
        slot = Slot()
        try:
            self._slots.acquire_on_behalf_of_nowait(slot)
        except anyio.WouldBlock:
            return None
        if self._pacer is not None:
            self._pacer.take()
        if self._rpm is not None:
            self._rpm.reserve()
        if self._tpm is not None and cost:
            self._tpm.reserve(cost)
        slot.sent_at = self._clock()
        self._throughput.start()
        return slot

    def _ready(self) -> bool:
        """Whether a send may go now (but for a free slot): no pause runs, the pace and budgets allow."""
        until = self._pause_until
        if until > self._clock() and until != self._pause_served:
            return False
        if not self._gated and self._pacer is None:
            return True
        return all(gate is None or gate.ready() for gate in (self._pacer, self._rpm, self._tpm))

    async def _admit(self, slot: Slot, cost: float) -> None:
        try:
            self._slots.acquire_on_behalf_of_nowait(slot)
        except anyio.WouldBlock:
            await self._slots.acquire_on_behalf_of(slot)
        try:
            await self._wait_pause()
            if self._pacer is not None:
                await self._pacer.acquire()
                await self._wait_pause()  # a 429 may have arrived while this send waited for its turn
            if self._rpm is not None:
                await self._rpm.acquire()
            if self._tpm is not None and cost:
                await self._tpm.acquire(cost)
        except BaseException:
            self._slots.release_on_behalf_of(slot)
            raise

    async def _wait_pause(self) -> None:
        """Wait out the client-wide pause. One task sleeps through it; the others wait for that
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

    # -- outcomes -------------------------------------------------------------------------

    def release(self, slot: Slot) -> None:
        """Give the slot back (any outcome that says nothing about the server's rate)."""
        if not slot.released:
            slot.released = True
            self._slots.release_on_behalf_of(slot)

    def on_success(self, slot: Slot) -> None:
        """The attempt on `slot` succeeded (a 2xx): release it, grow the window and the pace."""
        self.release(slot)
        if not self.adaptive:
            return
        rtt = self._clock() - slot.sent_at
        self._rtt = rtt if self._rtt is None else 0.8 * self._rtt + 0.2 * rtt
        self._throughput.add()
        self._ok_since_decrease += 1
        if self.size < self.max_concurrency:
            self.size = min(float(self.max_concurrency), self.size + 1.0 / self.size)
            self._apply()
        if self.pace is not None:
            self._set_pace(self.pace + self._growth)

    def on_rate_limited(self, slot: Slot, wait: float) -> float:
        """The attempt on `slot` got a 429 asking for `wait` seconds: release it and, when adaptive,
        slow the whole client down. Returns the seconds the caller must still sleep itself before
        its next attempt (0 when the client-wide pause waits for it).

        Once per round trip (the herd of 429s from one overload counts once) the window halves and
        the pace drops to the measured success rate (by 5 to 15 %). Every new send of the client
        pauses for `wait` (one task sleeps through it) unless the 429 is an isolated overshoot of an
        established pace: then the pace drop is the answer and only this call waits its `wait`.
        Without adaptive control the caller just sleeps `wait`."""
        self.release(slot)
        wait = min(wait, MAX_PAUSE) if wait >= 0 else 0.0  # NaN, negative or endless: a server's bug
        if not self.adaptive:
            return wait
        now = self._clock()
        if slot.sent_at < self._last_decrease:  # sent before the last decrease: already answered
            if not self._paused_last:
                return wait
            self._pause(now, wait)
            return 0.0
        repeated = now - self._last_decrease < REPEAT_WINDOW
        self._last_decrease = now
        measured = self._throughput.rate(span=RATE_SPAN)
        if measured is None:  # too few successes in the last second (a pause, a slow server): look further back
            measured = self._throughput.rate()
        # Isolated: a paced flow that was succeeding (a measured rate) took one 429 after a quiet spell.
        isolated = self.pace is not None and measured is not None and not repeated
        if self.pace is not None:
            self._growth = PACE_GROWTH
            if measured is None:  # nothing measurable got through: that alone says the pace is too high
                target = self.pace * PACE_BLIND_BACKOFF
            else:
                target = max(measured * PACE_HEADROOM, self.pace * PACE_BACKOFF)
            self._set_pace(min(self.pace * PACE_MIN_BACKOFF, target))
        elif measured is not None:
            self._set_pace(measured)
        # Halve the window, but keep enough room for the pace at the observed latency. With no pace
        # yet, what succeeded since the last slow-down (about one round trip) is what the server
        # takes per round trip: no more than that goes out at once after the pause.
        if self.pace is None or self._rtt is None:
            size = min(self.size * self._decrease, max(1.0, float(self._ok_since_decrease)))
        else:
            size = max(float(math.ceil(self.pace * self._rtt * 1.2)), self.size * self._decrease)
        self.size = min(float(self.max_concurrency), max(1.0, size))
        self._ok_since_decrease = 0
        self._apply()
        self._paused_last = not isolated
        if isolated:
            return wait
        self._pause(now, wait)
        return 0.0

    def uncovered(self, wait: float) -> float:
        """What a call that just got a 429 (reported with `on_rate_limited`) must still sleep of its
        `wait` before retrying: 0 while a client-wide pause runs (its next `acquire` waits that
        out, and the pause already honours this 429's Retry-After), else `wait`."""
        until = self._pause_until
        if until != self._pause_served and until > self._clock():
            return 0.0
        return wait

    def _pause(self, now: float, wait: float) -> None:
        until = max(self._pause_until, now + wait)
        lag = self._rtt or 0.0  # the pipe empties one round trip after sends stop, and refills one after
        self._throughput.idle(max(now, self._pause_until) + lag, until + lag)
        if self._on_pause is not None and until > self._pause_until:
            self._on_pause(until - max(now, self._pause_until))
        self._pause_until = until

    def _set_pace(self, rate: float) -> None:
        self.pace = max(rate, 0.5)
        if self._pacer is None:
            self._pacer = Pacer(self.pace, clock=self._clock, sleep=self._sleep)
        else:
            self._pacer.rate = self.pace

    def _apply(self) -> None:
        tokens = max(1, int(self.size))
        if tokens != self._slots.total_tokens:
            previous = int(self._slots.total_tokens)
            self._slots.total_tokens = tokens
            if self._on_window is not None:
                self._on_window(tokens, previous)
