"""Client-wide limits through the real request path, on trio's fake clock (seconds pass instantly and
exactly): the concurrency slot, `max_queue`, the pool timeout, rate control shared by every call,
`with_options` copy and batch of one client, and what happens to waiting calls on cancel and close."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from trio.testing import MockClock

from gradient_async import (
    AsyncGradient,
    ClientClosedError,
    PoolTimeoutError,
    QueueFullError,
    RateControl,
    RateLimitError,
)

from .conftest import ADAPTER_ID, BASE_URL, TOKEN, WORKSPACE

COMPLETE = f"/api/models/{ADAPTER_ID}/complete"
OK = {"finishReason": "length", "generatedOutput": "ok"}


def run(main: Callable[[], Awaitable[Any]]) -> None:
    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})


class Server:
    """Answers after `latency` fake seconds; `script` holds statuses to answer first (then 200s);
    records when each request arrived and how many ran at once."""

    def __init__(self, latency: float = 0.0, script: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.latency = latency
        self.script = list(script or [])
        self.arrivals: list[float] = []
        self.running = 0
        self.max_running = 0
        self.gate: anyio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.arrivals.append(anyio.current_time())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await anyio.sleep(self.latency)
        finally:
            self.running -= 1
        if self.script:
            status, headers = self.script.pop(0)
            return httpx.Response(status, json={"message": "slow down"}, headers=headers)
        return httpx.Response(200, json={"models": []} if request.method == "GET" else OK)


def client_for(server: Server, **kwargs: Any) -> AsyncGradient:
    return AsyncGradient(
        access_token=TOKEN,
        workspace_id=WORKSPACE,
        base_url=BASE_URL,
        transport=httpx.MockTransport(server.handler),
        **kwargs,
    )


async def settle() -> None:
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


def test_a_full_queue_sheds_the_call_at_once() -> None:
    async def main() -> None:
        server = Server()
        server.gate = anyio.Event()
        outcomes: list[str] = []
        async with client_for(server, max_concurrency=1, max_queue=2) as client:

            async def call() -> None:
                await client.completions.create(ADAPTER_ID, query="q")
                outcomes.append("ok")

            async with anyio.create_task_group() as tg:
                for _ in range(3):  # one in flight, two waiting
                    tg.start_soon(call)
                await settle()
                start = anyio.current_time()
                with pytest.raises(QueueFullError, match="max_queue=2"):
                    await client.completions.create(ADAPTER_ID, query="shed")
                assert anyio.current_time() == start
                server.gate.set()
        assert outcomes == ["ok"] * 3
        assert len(server.arrivals) == 3  # the shed call never reached the server

    run(main)


def test_the_wait_for_a_slot_counts_against_the_pool_timeout() -> None:
    """The issue's case: max_concurrency=1, pool timeout 2 s, five calls of 1.1 s each."""

    async def main() -> None:
        server = Server(latency=1.1)
        ended: list[tuple[str, float]] = []
        timeout = httpx.Timeout(30.0, pool=2.0)
        async with client_for(server, max_concurrency=1, timeout=timeout) as client:

            async def call() -> None:
                try:
                    await client.completions.create(ADAPTER_ID, query="q")
                    ended.append(("ok", anyio.current_time()))
                except PoolTimeoutError as exc:
                    assert exc.request is not None and exc.sent is False
                    ended.append(("pool timeout", anyio.current_time()))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(call)
        assert sorted(ended) == [
            ("ok", pytest.approx(1.1)),
            ("ok", pytest.approx(2.2)),
            ("pool timeout", pytest.approx(2.0)),
            ("pool timeout", pytest.approx(2.0)),
            ("pool timeout", pytest.approx(2.0)),
        ]
        assert len(server.arrivals) == 2  # a pool timeout is not retried: it was never sent

    run(main)


def test_a_429_pauses_every_call_of_the_client_and_its_copies() -> None:
    async def main() -> None:
        server = Server(latency=0.1, script=[(429, {"Retry-After": "2"})])
        async with client_for(server) as client:
            other = client.with_options(max_retries=5)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.completions.create(ADAPTER_ID, query="first"))
                await anyio.sleep(0.5)  # the 429 came back at 0.1 s
                await other.completions.create(ADAPTER_ID, query="second")
        # the second call, on a copy, was held back by the first call's Retry-After: one pause for all
        assert server.arrivals[0] == pytest.approx(0.0)
        assert min(server.arrivals[1:]) >= 2.1

    run(main)


def test_rate_control_none_leaves_each_call_to_its_own_429s() -> None:
    async def main() -> None:
        server = Server(latency=0.1, script=[(429, {"Retry-After": "2"})])
        async with client_for(server, rate_control=None) as client, anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.completions.create(ADAPTER_ID, query="first"))
            await anyio.sleep(0.5)
            await client.completions.create(ADAPTER_ID, query="second")
            assert anyio.current_time() == pytest.approx(0.6)  # not held back

    run(main)


def test_a_batch_429_slows_single_calls_of_the_same_client() -> None:
    async def main() -> None:
        server = Server(latency=0.1, script=[(429, {"Retry-After": "3"})])
        async with client_for(server) as client, anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.completions.batch(ADAPTER_ID, ["a"]))
            await anyio.sleep(0.5)
            await client.completions.create(ADAPTER_ID, query="single")
            assert anyio.current_time() >= 3.1  # waited out the batch's 429 pause

    run(main)


def test_client_wide_requests_per_minute() -> None:
    async def main() -> None:
        server = Server()
        client = client_for(server, rate_control=RateControl(requests_per_minute=600))
        async with client, anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(lambda: client.completions.create(ADAPTER_ID, query="q"))
                tg.start_soon(lambda: client.with_options(max_retries=1).models.list())
        assert sorted(server.arrivals) == pytest.approx([0.1 * i for i in range(8)])

    run(main)


def test_cancelling_calls_waiting_for_a_slot_or_a_pause_leaks_nothing() -> None:
    async def main() -> None:
        server = Server(latency=1.0)
        async with client_for(server, max_concurrency=2, max_queue=10) as client:
            async with anyio.create_task_group() as tg:
                for _ in range(12):  # 2 in flight, 10 queued
                    tg.start_soon(lambda: client.completions.create(ADAPTER_ID, query="q"))
                await settle()
                limiter = client._pool.limiter
                assert (limiter.in_flight, limiter.waiting) == (2, 10)
                tg.cancel_scope.cancel()
            assert (limiter.in_flight, limiter.waiting) == (0, 0)
            # the slots came back: the client works as before, at full concurrency
            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(lambda: client.completions.create(ADAPTER_ID, query="q"))
            assert server.max_running == 2

    run(main)


def test_close_fails_calls_waiting_in_a_429_pause_at_once() -> None:
    async def main() -> None:
        server = Server(latency=0.1, script=[(429, {"Retry-After": "30"})])
        client = client_for(server)
        errors: list[BaseException] = []

        async def call(query: str) -> None:
            try:
                await client.completions.create(ADAPTER_ID, query=query)
            except (ClientClosedError, RateLimitError) as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first")
            await anyio.sleep(0.5)  # a 30 s pause runs
            for _ in range(3):
                tg.start_soon(call, "waiting")
            await anyio.sleep(1.0)
            await client.aclose()
        assert anyio.current_time() < 2.0  # nobody sat out the 30 s pause
        assert len(errors) == 4 and all(isinstance(e, ClientClosedError) for e in errors)
        assert len(server.arrivals) == 1

    run(main)


def test_limits_are_validated() -> None:
    from gradient_async import InputValidationError

    with pytest.raises(InputValidationError, match="max_queue"):
        AsyncGradient(access_token="t", workspace_id="w", max_queue=-1)
    with pytest.raises(InputValidationError, match="rate_control"):
        AsyncGradient(access_token="t", workspace_id="w", rate_control="on")  # type: ignore[arg-type]


def test_a_flood_beyond_the_queue_is_shed_fast_and_leaks_nothing() -> None:
    async def main() -> None:
        server = Server(latency=0.5)
        shed = ok = 0
        async with client_for(server, max_concurrency=8, max_queue=50) as client:

            async def call() -> None:
                nonlocal shed, ok
                try:
                    await client.completions.create(ADAPTER_ID, query="q")
                    ok += 1
                except QueueFullError:
                    shed += 1

            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(call)
            assert (client.limiter.in_flight, client.limiter.waiting) == (0, 0)
        assert ok == 58 and shed == 1000 - 58
        assert server.max_running == 8 and len(server.arrivals) == 58

    run(main)


def test_two_clients_never_slow_each_other_down() -> None:
    async def main() -> None:
        limited = Server(latency=0.1, script=[(429, {"Retry-After": "5"})])
        other = Server(latency=0.1)
        async with client_for(limited) as a, client_for(other) as b, anyio.create_task_group() as tg:
            tg.start_soon(lambda: a.completions.create(ADAPTER_ID, query="q"))
            await anyio.sleep(0.5)  # a's 5 s pause runs
            await b.completions.create(ADAPTER_ID, query="q")
            assert anyio.current_time() == pytest.approx(0.6)

    run(main)


def test_the_deadline_covers_the_wait_in_a_429_pause() -> None:
    from gradient_async import APITimeoutError, RetryPolicy

    async def main() -> None:
        server = Server(latency=0.1, script=[(429, {"Retry-After": "30"})])
        async with client_for(server, retry=RetryPolicy(deadline=2.0)) as client, anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.with_options(retry=RetryPolicy()).completions.create(ADAPTER_ID, query="a"))
            await anyio.sleep(0.5)
            with pytest.raises(APITimeoutError, match="deadline"):
                await client.completions.create(ADAPTER_ID, query="b")  # waits in the 30 s pause
            assert anyio.current_time() == pytest.approx(2.5)
            assert client.limiter.waiting == 1  # only the other call still waits
            tg.cancel_scope.cancel()

    run(main)


def test_draining_close_ends_calls_stuck_in_a_pause() -> None:
    async def main() -> None:
        server = Server(latency=0.1, script=[(429, {"Retry-After": "30"})] * 3)
        client = client_for(server)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await client.completions.create(ADAPTER_ID, query="q")
            except ClientClosedError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
            await anyio.sleep(0.5)
            await client.aclose(timeout=2.0)  # drains for 2 s, then whoever still waits fails
        assert anyio.current_time() == pytest.approx(2.5)
        assert len(errors) == 3

    run(main)


def test_the_limiter_can_be_looked_at_before_the_loop_runs() -> None:
    client = AsyncGradient(access_token="t", workspace_id="w", max_queue=3)
    stats = client.limiter.stats()
    assert (stats.in_flight, stats.waiting, stats.window) == (0, 0, 64)
