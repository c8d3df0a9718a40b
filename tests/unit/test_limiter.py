"""The client's limiter on its own, on a fake clock: trio's MockClock(autojump_threshold=0) jumps to
the next timer as soon as every task is blocked, so seconds pass instantly and exactly."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from gradient_async import ClientClosedError, PoolTimeoutError, QueueFullError, RateControl
from gradient_async._limiter import Limiter, Slot, estimate_cost


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


def test_the_window_halves_once_per_round_trip_and_grows_back() -> None:
    async def main() -> None:
        limiter = Limiter(16, control=RateControl())
        slots = [await limiter.acquire() for _ in range(16)]
        await anyio.sleep(0.1)
        for slot in slots:  # a herd of 429s from one overload
            limiter.on_rate_limited(slot, 0.0)
        assert limiter.stats().window == 8
        slot = await limiter.acquire()  # sent after the decrease: its 429 counts again
        await anyio.sleep(0.1)
        limiter.on_rate_limited(slot, 0.0)
        assert limiter.stats().window == 4
        for _ in range(200):
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
        assert limiter.pace == pytest.approx(10.0, rel=0.15)
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
    from gradient_async import ValidationError

    with pytest.raises(ValidationError, match="requests_per_minute"):
        RateControl(requests_per_minute=0)
    with pytest.raises(ValidationError, match="tokens_per_minute"):
        RateControl(tokens_per_minute=float("nan"))
    with pytest.raises(ValidationError, match="adaptive"):
        RateControl(adaptive="yes")  # type: ignore[arg-type]
