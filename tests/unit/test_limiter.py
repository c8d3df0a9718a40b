"""The client's limiter on its own, on a fake clock: trio's MockClock(autojump_threshold=0) jumps to
the next timer as soon as every task is blocked, so seconds pass instantly and exactly."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from gradient_async import ClientClosedError, PoolTimeoutError, QueueFullError, RateControl
from gradient_async._limiter import Limiter, Slot, Throughput, estimate_cost


def run(main: Callable[[], Awaitable[Any]]) -> None:
    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})


class Sleeps:
    """anyio.sleep that records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.sleep(seconds)


async def settle() -> None:
    """Let every task run until it blocks (the mock clock only jumps when all are blocked)."""
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


def test_concurrency_is_capped_and_the_rest_wait() -> None:
    async def main() -> None:
        limiter = Limiter(3)
        gate = anyio.Event()
        running = max_running = done = 0

        async def worker() -> None:
            nonlocal running, max_running, done
            slot = await limiter.acquire()
            running += 1
            max_running = max(max_running, running)
            await gate.wait()
            running -= 1
            limiter.release(slot)
            done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(worker)
            await settle()
            assert (running, limiter.in_flight, limiter.waiting) == (3, 3, 17)
            gate.set()
        assert (max_running, done, limiter.in_flight, limiter.waiting) == (3, 20, 0, 0)

    run(main)


def test_a_full_queue_refuses_at_once() -> None:
    async def main() -> None:
        limiter = Limiter(1, max_queue=2)
        held = await limiter.acquire()
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(limiter.acquire)
            await settle()
            assert limiter.waiting == 2
            start = anyio.current_time()
            with pytest.raises(QueueFullError, match="max_queue=2"):
                await limiter.acquire()
            assert anyio.current_time() == start  # no waiting at all
            # a batch (shed=False) still queues behind them
            tg.start_soon(lambda: limiter.acquire(shed=False))
            await settle()
            assert limiter.waiting == 3
            tg.cancel_scope.cancel()
        limiter.release(held)
        assert (limiter.in_flight, limiter.waiting) == (0, 0)

    run(main)


def test_max_queue_zero_admits_when_free_and_refuses_when_it_would_wait() -> None:
    async def main() -> None:
        limiter = Limiter(1, max_queue=0)
        slot = await limiter.acquire()
        with pytest.raises(QueueFullError):
            await limiter.acquire()
        limiter.release(slot)
        limiter.release(await limiter.acquire())

    run(main)


def test_pool_timeout_bounds_the_wait_for_a_slot() -> None:
    async def main() -> None:
        limiter = Limiter(1)
        held = await limiter.acquire()
        start = anyio.current_time()
        with pytest.raises(PoolTimeoutError, match=r"pool timeout of 2\.0 s") as info:
            await limiter.acquire(pool_timeout=2.0)
        assert anyio.current_time() - start == pytest.approx(2.0)
        assert info.value.sent is False
        assert (limiter.in_flight, limiter.waiting) == (1, 0)
        limiter.release(held)
        limiter.release(await limiter.acquire(pool_timeout=0.0))  # a free slot needs no time at all

    run(main)


def test_a_429_pauses_every_sender_with_one_sleeper() -> None:
    async def main() -> None:
        sleeps = Sleeps()
        limiter = Limiter(10, control=RateControl(), sleep=sleeps)
        slot = await limiter.acquire()
        assert limiter.on_rate_limited(slot, 2.5) == 0.0  # the limiter waits for the caller
        admitted: list[float] = []

        async def send() -> None:
            s = await limiter.acquire()
            admitted.append(anyio.current_time())
            limiter.release(s)

        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(send)
        assert len(admitted) == 8
        assert min(admitted) - start == pytest.approx(2.5)
        assert sleeps.calls == [pytest.approx(2.5)]  # one sleep for the whole client

    run(main)


def test_without_adaptive_control_the_caller_sleeps_itself() -> None:
    async def main() -> None:
        for limiter in (Limiter(4), Limiter(4, control=RateControl(adaptive=False))):
            slot = await limiter.acquire()
            assert limiter.on_rate_limited(slot, 1.5) == 1.5
            start = anyio.current_time()
            limiter.release(await limiter.acquire())
            assert anyio.current_time() == start
            assert limiter.stats().window == 4

    run(main)


def test_the_window_shrinks_once_per_round_trip_and_grows_back() -> None:
    async def main() -> None:
        limiter = Limiter(16, control=RateControl())
        slots = [await limiter.acquire() for _ in range(16)]
        await anyio.sleep(0.1)
        for slot in slots[:6]:
            limiter.on_success(slot)
        for slot in slots[6:]:  # a herd of 429s from one overload counts once
            limiter.on_rate_limited(slot, 0.0)
        # at most half, and no more than what the server took in that round trip
        assert limiter.stats().window == 6
        slot = await limiter.acquire()  # sent after the slow-down: its 429 counts again
        await anyio.sleep(0.1)
        limiter.on_rate_limited(slot, 0.0)
        assert limiter.stats().window == 1
        for _ in range(300):
            slot = await limiter.acquire()
            await anyio.sleep(0.01)
            limiter.on_success(slot)
        assert limiter.stats().window == 16

    run(main)


def test_after_a_429_sends_are_paced_at_the_accepted_rate() -> None:
    async def main() -> None:
        limiter = Limiter(64, control=RateControl())
        for _ in range(20):  # the server accepts 10 per second
            slot = await limiter.acquire()
            await anyio.sleep(0.1)
            limiter.on_success(slot)
        slot = await limiter.acquire()
        limiter.on_rate_limited(slot, 0.0)
        assert limiter.pace == pytest.approx(10.0, rel=0.1)
        admitted: list[float] = []

        async def send() -> None:
            s = await limiter.acquire()
            admitted.append(anyio.current_time())
            limiter.release(s)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(send)
        gaps = [b - a for a, b in itertools.pairwise(admitted)]
        assert all(gap == pytest.approx(1 / limiter.pace, rel=0.01) for gap in gaps)

    run(main)


def test_requests_and_tokens_per_minute_budgets() -> None:
    async def main() -> None:
        limiter = Limiter(64, control=RateControl(requests_per_minute=600))
        start = anyio.current_time()
        times = []
        for _ in range(4):
            limiter.release(await limiter.acquire())
            times.append(anyio.current_time() - start)
        assert times == pytest.approx([0.0, 0.1, 0.2, 0.3])

        tokens = Limiter(64, control=RateControl(tokens_per_minute=6000, adaptive=False))  # 100 tokens/s
        start = anyio.current_time()
        times = []
        for _ in range(3):
            tokens.release(await tokens.acquire(cost=50))
            times.append(anyio.current_time() - start)
        assert times == pytest.approx([0.0, 0.5, 1.0])

    run(main)


def test_close_wakes_every_waiter_with_client_closed() -> None:
    async def main() -> None:
        limiter = Limiter(1, control=RateControl())
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await limiter.acquire()
            except ClientClosedError as exc:
                errors.append(exc)

        slot = await limiter.acquire()
        limiter.on_rate_limited(slot, 30.0)  # a long pause
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(wait)
            await settle()
            assert limiter.waiting == 5
            limiter.close()
        assert len(errors) == 5 and anyio.current_time() == start
        assert (limiter.in_flight, limiter.waiting) == (0, 0)
        with pytest.raises(ClientClosedError):
            await limiter.acquire()

    run(main)


def test_cancelling_the_pause_sleeper_hands_the_pause_to_another_waiter() -> None:
    async def main() -> None:
        sleeps = Sleeps()
        limiter = Limiter(8, control=RateControl(), sleep=sleeps)
        slot = await limiter.acquire()
        limiter.on_rate_limited(slot, 3.0)
        admitted: list[float] = []

        async def send() -> None:
            s = await limiter.acquire()
            admitted.append(anyio.current_time())
            limiter.release(s)

        start = anyio.current_time()
        async with anyio.create_task_group() as tg, anyio.create_task_group() as first:
            first.start_soon(send)  # the one sleeping through the pause
            await settle()
            assert sleeps.calls == [pytest.approx(3.0)]
            for _ in range(3):
                tg.start_soon(send)  # waiting for the sleeper
            await settle()
            await anyio.sleep(1.0)
            first.cancel_scope.cancel()  # cancelled mid-pause
        assert len(admitted) == 3  # the cancelled one never got in; the others still did
        assert min(admitted) - start == pytest.approx(3.0)
        assert len(sleeps.calls) == 2  # one other waiter took over the remaining 2 s
        assert sleeps.calls[1] == pytest.approx(2.0)
        assert (limiter.in_flight, limiter.waiting) == (0, 0)

    run(main)


def test_pool_timeout_while_pacing_releases_the_slot() -> None:
    async def main() -> None:
        limiter = Limiter(2, control=RateControl(requests_per_minute=6))  # one every 10 s
        limiter.release(await limiter.acquire())
        with pytest.raises(PoolTimeoutError):
            await limiter.acquire(pool_timeout=1.0)
        assert (limiter.in_flight, limiter.waiting) == (0, 0)

    run(main)


def test_release_is_idempotent() -> None:
    async def main() -> None:
        limiter = Limiter(1, control=RateControl())
        slot = await limiter.acquire()
        limiter.on_success(slot)
        limiter.release(slot)
        limiter.release(slot)
        assert limiter.in_flight == 0
        assert isinstance(Slot(), Slot)

    run(main)


def test_estimate_cost_reads_the_wire_body() -> None:
    assert estimate_cost({"query": "x" * 40, "maxGeneratedTokenCount": 16}) == 26
    assert estimate_cost({"inputs": [{"input": "abcd"}, {"input": "abcdefgh"}]}) == 3
    assert estimate_cost(None) == 0.0


def test_rate_control_rejects_bad_values() -> None:
    from gradient_async import InputValidationError

    with pytest.raises(InputValidationError, match="requests_per_minute"):
        RateControl(requests_per_minute=0)
    with pytest.raises(InputValidationError, match="tokens_per_minute"):
        RateControl(tokens_per_minute=float("nan"))
    with pytest.raises(InputValidationError, match="adaptive"):
        RateControl(adaptive="yes")  # type: ignore[arg-type]


def test_an_isolated_overshoot_of_the_pace_slows_the_pace_without_pausing_everyone() -> None:
    async def main() -> None:
        limiter = Limiter(64, control=RateControl())
        for _ in range(20):  # the server accepts 10 per second
            slot = await limiter.acquire()
            await anyio.sleep(0.1)
            limiter.on_success(slot)
        limiter.on_rate_limited(await limiter.acquire(), 1.0)  # first 429: pace set, everyone pauses
        assert limiter.stats().paused_for == pytest.approx(1.0)
        await anyio.sleep(1.0)
        for _ in range(30):
            slot = await limiter.acquire()
            await anyio.sleep(0.05)
            limiter.on_success(slot)
        pace = limiter.pace
        assert pace is not None
        slot = await limiter.acquire()
        # an isolated 429 long after the last one: this call waits on its own, the pace drops
        assert limiter.on_rate_limited(slot, 1.0) == 1.0
        assert limiter.stats().paused_for == 0.0
        assert limiter.pace is not None and 0.5 * pace <= limiter.pace <= 0.95 * pace + 1e-9
        # a 429 right after it: the slow-down did not help, so everyone pauses
        slot = await limiter.acquire()
        assert limiter.on_rate_limited(slot, 1.0) == 0.0
        assert limiter.stats().paused_for == pytest.approx(1.0)

    run(main)


def test_the_measured_rate_leaves_out_pauses() -> None:
    async def main() -> None:
        rate = Throughput(anyio.current_time)
        await anyio.sleep(0.05)  # off the 0.1 s bucket edges
        rate.start()
        for _ in range(10):
            await anyio.sleep(0.1)
            rate.add()
        rate.idle(anyio.current_time(), anyio.current_time() + 0.5)  # nothing can succeed in a pause
        await anyio.sleep(0.5)
        for _ in range(5):
            await anyio.sleep(0.1)
            rate.add()
        # 15 successes in 1.5 s of sending (10/s), not in 2 s of wall time (7.5/s)
        assert rate.rate() == pytest.approx(10.0, rel=0.08)

    run(main)


class TokenBucketServer:
    """A rate-limited server on the fake clock: `rate`/s with a `burst`, 429 + Retry-After otherwise."""

    def __init__(self, rate: float, burst: int, retry_after: str) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = 0.0
        self.retry_after = retry_after
        self.requests = 0

    def take(self) -> float | None:
        """None: accepted; else the Retry-After in seconds."""
        now = anyio.current_time()
        self.requests += 1
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        wait = (1 - self.tokens) / self.rate
        return float(max(1, math.ceil(wait))) if self.retry_after == "int" else round(wait, 3)


@pytest.mark.parametrize(("retry_after", "max_wall_over_ideal"), [("float", 1.15), ("int", 2.5)])
def test_500_concurrent_calls_against_a_rate_limit_lose_nothing(retry_after: str, max_wall_over_ideal: float) -> None:
    """The issue's scenario on the fake clock: 500 calls at once through one limiter (64 slots) against
    50 req/s (burst 5) with 100 ms latency; each call retries its 429s the way the client does."""
    n, latency = 500, 0.1
    server = TokenBucketServer(50.0, 5, retry_after)
    lost = 0

    async def main() -> None:
        limiter = Limiter(64, control=RateControl())
        rng = random.Random(7)

        async def call() -> None:
            nonlocal lost
            for _ in range(26):
                slot = await limiter.acquire()
                await anyio.sleep(latency / 2)
                asked = server.take()
                await anyio.sleep(latency / 2)
                if asked is None:
                    limiter.on_success(slot)
                    return
                wait = asked + rng.uniform(0.0, max(0.005, asked * 0.2))  # RetryPolicy.compute_wait
                own = limiter.on_rate_limited(slot, wait)
                if own:
                    await anyio.sleep(own)
            lost += 1

        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(call)
        ideal = (n - 5) / 50.0 + latency
        assert (anyio.current_time() - start) / ideal <= max_wall_over_ideal

    run(main)
    assert lost == 0
    assert server.requests / n <= 1.5


def test_uncovered_wait_is_zero_while_a_client_wide_pause_runs() -> None:
    async def main() -> None:
        limiter = Limiter(4, control=RateControl())
        assert limiter.uncovered(1.5) == 1.5
        limiter.on_rate_limited(await limiter.acquire(), 2.0)
        assert limiter.uncovered(2.1) == 0.0
        await anyio.sleep(2.0)
        assert limiter.uncovered(1.5) == 1.5
        off = Limiter(4)
        off.on_rate_limited(await off.acquire(), 2.0)
        assert off.uncovered(2.0) == 2.0

    run(main)


def test_a_nonsense_retry_after_cannot_stall_the_client() -> None:
    async def main() -> None:
        limiter = Limiter(4, control=RateControl())
        limiter.on_rate_limited(await limiter.acquire(), float("nan"))
        assert limiter.stats().paused_for == 0.0
        limiter.on_rate_limited(await limiter.acquire(), float("inf"))
        assert limiter.stats().paused_for <= 600.0

    run(main)


def test_429s_with_nothing_getting_through_keep_lowering_the_pace_and_pause() -> None:
    """A paced client whose sends all fail (the server's quota ran out) must not keep its pace."""

    async def main() -> None:
        limiter = Limiter(64, control=RateControl())
        for _ in range(20):  # 10 per second get through
            slot = await limiter.acquire()
            await anyio.sleep(0.1)
            limiter.on_success(slot)
        limiter.on_rate_limited(await limiter.acquire(), 1.0)
        paces = [limiter.pace]
        for _ in range(4):  # now every send is refused, 1.5 s apart (longer than the pause)
            await anyio.sleep(1.5)
            slot = await limiter.acquire()
            assert limiter.on_rate_limited(slot, 1.0) == 0.0  # no success lately: everyone pauses
            paces.append(limiter.pace)
        assert all(b is not None and a is not None and b <= 0.95 * a for a, b in itertools.pairwise(paces))

    run(main)
