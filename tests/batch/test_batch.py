"""The batch engine against a stateful fake API, under asyncio and trio."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from trio.testing import MockClock

from gradient_async import (
    APITimeoutError,
    AsyncGradient,
    BadRequestError,
    InputValidationError,
    InternalServerError,
    RateLimitError,
    RetryPolicy,
)
from gradient_async.batch import BatchFailed, BatchItem, BatchOk
from gradient_async.types import Completion

from .conftest import MODEL, FakeServer, FakeSleep, handler_client, http_date

pytestmark = pytest.mark.anyio


async def test_results_in_input_order_with_per_item_errors(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.latency = 0.001
    prompts: list[Any] = [f"p{i}" for i in range(40)]
    prompts[3] = "bad !status:400"
    prompts[7] = {"id": "x7", "query": "q7", "temperature": 0.5}
    prompts[9] = {"id": "nope"}  # no query: a validation error for this item only
    prompts[11] = {"query": "q11", "max_generated_token_count": 9999}  # out of range
    async with make_client(max_concurrency=8) as client:
        result = await client.completions.batch(MODEL, prompts, max_generated_token_count=16)
    assert [item.index for item in result] == list(range(40))
    assert (result.ok, result.failed) == (37, 3)
    assert isinstance(result[3].error, BadRequestError) and result[3].attempts == 1
    assert result[7].id == "x7" and result[7].unwrap().generated_output == "echo: q7"
    assert isinstance(result[9].error, InputValidationError) and "prompt 9" in str(result[9].error)
    assert isinstance(result[11].error, InputValidationError) and "max_generated_token_count" in str(result[11].error)
    assert result[0].value == Completion(finish_reason="length", generated_output="echo: p0")
    assert server.handled == 38  # the two invalid items never reached the server
    with pytest.raises(BadRequestError):
        result[3].unwrap()


@pytest.mark.parametrize(
    ("header", "value", "min_wait"),
    [
        ("Retry-After", "1", 1.0),
        ("Retry-After", "0.25", 0.25),
        ("retry-after-ms", "300", 0.3),
        ("Retry-After", "DATE", 1.0),
    ],
)
def test_429_storm_pauses_client_wide_and_finishes(
    server: FakeServer, header: str, value: str, min_wait: float
) -> None:
    """On trio's fake clock (real waits, no wall time): a storm of 429s pauses the client, not each call."""
    server.storm = 30
    server.latency = 0.01
    server.retry_after = (header, http_date(3) if value == "DATE" else value)
    sent: dict[str, list[float]] = {}
    pauses: list[float] = []
    handler = server.handler

    async def recording_handler(request: httpx.Request) -> httpx.Response:
        sent.setdefault(json.loads(request.content)["query"], []).append(anyio.current_time())
        return await handler(request)

    async def recording_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await anyio.sleep(seconds)

    async def main() -> None:
        client = handler_client(
            recording_handler,
            max_concurrency=16,
            retry=RetryPolicy(sleep=recording_sleep),
        )
        async with client:
            result = await client.completions.batch(MODEL, [f"p{i}" for i in range(200)])
        assert result.ok == 200 and result.failed == 0
        assert result.stats.rate_limited == 30

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    assert server.handled < 1.3 * 200
    assert all(count == 1 for count in server.queries.values()) and len(server.queries) == 200
    # No prompt was sent again before its Retry-After (an HTTP date has 1 s resolution) ...
    floor = min_wait - 0.99 if value == "DATE" else min_wait
    assert all(times[1] - times[0] >= floor for times in sent.values() if len(times) > 1)
    # ... and the batch slept through the storm's pause once, not once per 429.
    assert 1 <= len([p for p in pauses if p >= floor]) < 30


async def test_adaptive_window_under_a_concurrency_limited_server(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.latency = 0.002
    server.max_in_flight_ok = 4
    async with make_client(max_concurrency=32, retry=RetryPolicy()) as client:  # real (tiny) waits
        result = await client.completions.batch(MODEL, [f"p{i}" for i in range(150)])
    assert result.ok == 150
    assert server.handled < 1.3 * 150


async def test_503s_are_retried_until_done(
    make_client: Callable[..., AsyncGradient], server: FakeServer, fake_sleep: FakeSleep
) -> None:
    server.fail_every = 10
    async with make_client(max_concurrency=16) as client:
        result = await client.completions.batch(MODEL, [f"p{i}" for i in range(300)])
    assert result.ok == 300 and result.failed == 0
    assert server.handled == result.requests <= 1.12 * 300
    assert result.retried == server.statuses[503]


async def test_retries_are_bounded_and_errors_typed(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.fail_every = 1  # every request is a 503
    async with make_client() as client:
        result = await client.completions.batch(MODEL, ["a", "b"], retry=RetryPolicy(max_retries=3, sleep=_no_sleep))
    assert result.failed == 2
    assert all(item.attempts == 4 and getattr(item.error, "status_code", None) == 503 for item in result)
    assert server.handled == 8


async def test_retry_deadline_bounds_each_item(make_client: Callable[..., AsyncGradient], server: FakeServer) -> None:
    server.fail_every = 1  # every request is a 503
    # real (tiny) waits: the deadline, not the attempt budget, must end the item
    policy = RetryPolicy(max_retries=1000, initial_delay=0.01, max_delay=0.01, deadline=0.1)
    async with make_client() as client:
        result = await client.completions.batch(MODEL, ["a"], retry=policy)
    [item] = result
    # the last 503 (no wait may cross the deadline), or the deadline's own timeout when it struck mid-attempt
    assert isinstance(item.error, (InternalServerError, APITimeoutError))
    assert 2 <= item.attempts < 1000


async def test_client_cap_holds_across_two_concurrent_batches(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.latency = 0.002
    results: list[int] = []
    async with make_client(max_concurrency=5) as client:

        async def one(tag: str) -> None:
            result = await client.completions.batch(MODEL, [f"{tag}{i}" for i in range(60)], max_concurrency=4)
            results.append(result.ok)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a")
            tg.start_soon(one, "b")
    assert results == [60, 60]
    assert server.max_in_flight <= 5


async def test_fail_fast_raises_the_first_error_and_cancels_the_rest(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.latency = 0.001
    prompts = ["ok"] * 5 + ["boom !status:400"] + ["ok"] * 200
    async with make_client(max_concurrency=4) as client:
        with pytest.raises(BadRequestError):
            await client.completions.batch(MODEL, prompts, fail_fast=True)
        assert client._pool.limiter.in_flight == 0
    assert server.handled < 100
    assert server.in_flight == 0


async def test_cancelling_the_caller_cancels_every_request(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.gate = anyio.Event()  # requests hang until the gate opens: nothing ever does
    async with make_client(max_concurrency=8) as client:
        with anyio.move_on_after(0.05) as scope:
            await client.completions.batch(MODEL, [f"p{i}" for i in range(100)])
        assert scope.cancelled_caught
        assert server.max_in_flight == 8
        assert server.in_flight == 0
        assert client._pool.limiter.in_flight == 0


async def test_stream_batch_memory_is_bounded_by_the_window(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    pulled = 0
    most_ahead = 0
    consumed = 0

    def prompts() -> Any:
        nonlocal pulled
        for i in range(3000):
            pulled += 1
            yield f"p{i}"

    seen: set[int] = set()
    client = make_client(max_concurrency=8)
    async with client, client.completions.stream_batch(MODEL, prompts(), window=16) as stream:
        async for item in stream:
            consumed += 1
            seen.add(item.index)
            most_ahead = max(most_ahead, pulled - consumed)
    assert seen == set(range(3000))
    assert most_ahead <= 16 + 1
    assert stream.stats.ok == 3000


async def test_stream_batch_stops_early_and_cleans_up(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.latency = 0.001
    async with make_client(max_concurrency=4) as client:
        async with client.completions.stream_batch(MODEL, (f"p{i}" for i in range(10_000))) as stream:
            async for _item in stream:
                if stream.stats.done == 10:
                    break
        assert client._pool.limiter.in_flight == 0
    assert server.handled < 40


async def test_async_iterable_input_and_progress(make_client: Callable[..., AsyncGradient]) -> None:
    async def prompts() -> AsyncIterator[str]:
        for i in range(25):
            yield f"p{i}"

    calls: list[tuple[int, int | None, int, int]] = []
    async with make_client() as client:
        result = await client.completions.batch(MODEL, prompts(), progress=lambda *a: calls.append(a))
        listed = await client.completions.batch(MODEL, ["a", "b !status:422"], progress=lambda *a: calls.append(a))
    assert result.ok == 25
    assert calls[:25] == [(n, None, n, 0) for n in range(1, 26)]
    assert sorted(calls[25:]) == [(1, 2, 0, 1), (2, 2, 1, 1)] or sorted(calls[25:]) == [(1, 2, 1, 0), (2, 2, 1, 1)]
    assert listed.failed == 1


async def test_input_errors_surface_without_exception_groups(make_client: Callable[..., AsyncGradient]) -> None:
    def broken() -> Any:
        yield "fine"
        raise OSError("disk gone")

    async with make_client() as client:
        with pytest.raises(OSError, match="disk gone"):
            await client.completions.batch(MODEL, broken())
        with pytest.raises(InputValidationError, match="max_concurrency"):
            await client.completions.batch(MODEL, ["a"], max_concurrency=0)
        with pytest.raises(InputValidationError, match="progress"):
            await client.completions.batch(MODEL, ["a"], progress="bar")  # type: ignore[arg-type]


def test_rate_limits_space_requests(server: FakeServer) -> None:
    """On trio's fake clock, so time passing under a loaded machine cannot change what is measured."""
    arrivals: list[float] = []
    handler = server.handler

    async def recording_handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(anyio.current_time())
        return await handler(request)

    async def main() -> None:
        client = handler_client(recording_handler)
        async with client:
            result = await client.completions.batch(
                MODEL, ["x" * 40] * 5, requests_per_minute=600, tokens_per_minute=60_000, max_generated_token_count=10
            )
        assert result.ok == 5

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    # 600 rpm -> one request every 0.1 s (20 estimated tokens each at 1000 tokens/s would allow one every 0.02 s)
    start = min(arrivals)
    assert sorted(t - start for t in arrivals) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-6)


async def test_embeddings_batch_chunks_and_orders(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    texts = ["a" * (i % 7 + 1) for i in range(23)]
    async with make_client() as client:
        result = await client.embeddings.batch("bge-large", texts, chunk_size=5)
    assert server.handled == 5
    assert [item.index for item in result] == list(range(23))
    # the fake answers [len(text), position in its request], in reverse order
    assert [item.unwrap() for item in result] == [[float(len(t)), float(i % 5)] for i, t in enumerate(texts)]


async def _no_sleep(_: float) -> None:
    await anyio.lowlevel.checkpoint()


def test_items_are_plain_values() -> None:
    item: BatchItem[int] = BatchOk(index=0, prompt="p", value=3)
    assert item.ok and item.unwrap() == 3
    failed: BatchItem[int] = BatchFailed(index=1, prompt="p", error=RateLimitError.__new__(RateLimitError))
    assert not failed.ok and failed.value is None
    with pytest.raises(RateLimitError):
        failed.unwrap()


async def test_cancelling_the_consumer_stops_the_stream_at_once(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    yielded = 0
    async with make_client(max_concurrency=16) as client:
        with anyio.CancelScope() as scope:
            async with client.completions.stream_batch(MODEL, [f"p{i}" for i in range(200)], window=64) as stream:
                async for _item in stream:
                    yielded += 1
                    if yielded == 1:
                        await anyio.sleep(0.05)  # let finished items pile up, ready to be handed over
                    if yielded == 5:
                        scope.cancel()
        assert scope.cancelled_caught
        assert client._pool.limiter.in_flight == 0
    assert yielded == 5  # ready items are not handed out after the cancel


async def test_embeddings_batch_fails_only_the_bad_text(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    async with make_client() as client:
        result = await client.embeddings.batch("bge-large", ["hello", "world", ""])
    assert [item.ok for item in result] == [True, True, False]
    assert result[0].unwrap() == [5.0, 0.0] and result[1].unwrap() == [5.0, 1.0]
    bad = result[2]
    assert bad.index == 2 and isinstance(bad.error, InputValidationError) and "text 2" in str(bad.error)
    assert (result.ok, result.failed) == (2, 1)
    assert server.handled == 1 and server.body()["inputs"] == [{"input": "hello"}, {"input": "world"}]


async def test_items_waiting_to_retry_do_not_lower_the_batch_concurrency(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    """Two workers, both items they took wait before a retry: the rest of the batch still runs meanwhile."""
    release = anyio.Event()
    waiting: list[float] = []

    async def gated_sleep(seconds: float) -> None:
        waiting.append(seconds)
        await release.wait()

    prompts = ["a !status:503", "b !status:503"] + [f"ok{i}" for i in range(6)]
    done: list[int] = []
    async with make_client(retry=RetryPolicy(max_retries=1, sleep=gated_sleep)) as client:
        with anyio.fail_after(5):
            async with client.completions.stream_batch(MODEL, prompts, max_concurrency=2) as stream:
                async for item in stream:
                    done.append(item.index)
                    if len(done) == 6:
                        assert len(waiting) == 2 and sorted(done) == list(range(2, 8))
                        release.set()  # only now may the two waiting items retry
    assert sorted(done) == list(range(8)) and server.max_in_flight <= 2


def test_a_burst_after_a_quiet_spell_runs_concurrently(server: FakeServer) -> None:
    """Workers idle after a lull are counted busy as soon as they are handed a job, so a burst that
    arrives in one go starts more workers instead of queueing behind one (trio's fake clock)."""
    server.latency = 0.2
    consumed = anyio.Event()

    async def source() -> AsyncIterator[str]:
        yield "first"
        await consumed.wait()  # every worker has gone idle
        for i in range(8):
            yield f"burst{i}"

    async def main() -> None:
        client = handler_client(server.handler)
        async with client, client.completions.stream_batch(MODEL, source(), max_concurrency=8) as stream:
            async for item in stream:
                if item.index == 0:
                    consumed.set()
                    server.max_in_flight = 0  # measure the burst alone

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    assert server.max_in_flight == 8


def test_the_deadline_counts_an_items_wait_for_a_worker(server: FakeServer) -> None:
    """RetryPolicy.deadline bounds each item from its admission to the batch: with one worker and
    0.3 s items, a 0.5 s deadline ends the items that waited too long behind another (fake clock)."""
    server.latency = 0.3
    outcomes: list[str] = []

    async def main() -> None:
        client = handler_client(
            server.handler,
            retry=RetryPolicy(deadline=0.5),
        )
        async with client:
            result = await client.completions.batch(MODEL, [f"p{i}" for i in range(4)], max_concurrency=1, window=4)
        outcomes.extend("ok" if item.ok else type(item.error).__name__ for item in result.items)

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    assert outcomes[0] == "ok" and "APITimeoutError" in outcomes[1:]


async def test_a_replacement_worker_starts_from_the_batchs_context(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    """A worker handing its place on while its item waits does not pass that item's contextvars on."""
    import contextvars

    from gradient_async import Hooks, RequestEvent, RetryEvent

    tag: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="batch")
    seen: dict[str, str] = {}
    release = anyio.Event()

    def on_retry(event: RetryEvent) -> None:
        tag.set("waiting item")  # set inside the waiting item's task

    def on_request(event: RequestEvent) -> None:
        seen[json.loads(event.request.content)["query"]] = tag.get()

    async def gated_sleep(seconds: float) -> None:
        await release.wait()

    prompts = ["slow !status:503"] + [f"ok{i}" for i in range(3)]
    client = make_client(
        retry=RetryPolicy(max_retries=1, sleep=gated_sleep), hooks=Hooks(on_retry=[on_retry], on_request=[on_request])
    )
    async with client, client.completions.stream_batch(MODEL, prompts, max_concurrency=1) as stream:
        with anyio.fail_after(5):
            async for item in stream:
                if item.index == 3:
                    release.set()
    assert {seen[f"ok{i}"] for i in range(3)} == {"batch"}


async def test_an_undecodable_answer_fails_its_item_only(server: FakeServer) -> None:
    """A body that cannot be decoded (bad gzip) is a typed error of its own item; the batch goes on."""
    from gradient_async import APIResponseValidationError

    async def handler(request: httpx.Request) -> httpx.Response:
        if b"broken" in request.content:
            headers = {"content-type": "application/json", "content-encoding": "gzip"}
            return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"not gzip"))
        return await server.handler(request)

    client = handler_client(handler)
    async with client:
        result = await client.completions.batch(MODEL, ["a", "broken", "c"])
    assert [item.ok for item in result.items] == [True, False, True]
    assert isinstance(result.items[1].error, APIResponseValidationError)


async def test_batch_retries_are_logged_at_debug(
    make_client: Callable[..., AsyncGradient], fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="gradient_async")
    async with make_client() as client:
        result = await client.completions.batch(
            MODEL, ["x !status:503"], retry=RetryPolicy(max_retries=2, sleep=fake_sleep)
        )
    assert result.stats.retried == 2
    lines = [r.getMessage() for r in caplog.records if "retrying batch item" in r.getMessage()]
    assert len(lines) == 2 and "index=0" in lines[0] and "status=503" in lines[0]


def test_scattered_429s_slow_the_adaptive_client_but_not_rate_control_none(server: FakeServer) -> None:
    """README, rate control: a server refusing a third of requests once with 429 (not about rate)
    drags the adaptive pace down; with rate_control=None each item only waits its own Retry-After."""
    server.latency = 0.002
    seen: set[str] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        if int(query[1:]) % 3 == 0 and query not in seen:
            seen.add(query)
            return httpx.Response(429, headers={"Retry-After": "0.05"}, json={"message": "busy"})
        return await server.handler(request)

    def run(**kwargs: Any) -> float:
        seen.clear()
        elapsed: list[float] = []

        async def main() -> None:
            client = handler_client(handler, **kwargs)
            async with client:
                start = anyio.current_time()
                result = await client.completions.batch(MODEL, [f"p{i}" for i in range(120)], max_concurrency=6)
                elapsed.append(anyio.current_time() - start)
            assert result.ok == 120

        anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
        return elapsed[0]

    plain = run(rate_control=None)
    adaptive = run()
    assert plain < 0.5  # 40 waits of ~50 ms, six at a time, plus 120 answers of 2 ms
    assert adaptive > 5 * plain  # README: "about 10 times longer" (10x when measured)


def test_a_batch_stopped_by_an_error_keeps_what_had_finished(server: FakeServer) -> None:
    """A prompt source or hook that raises (or fail_fast) stops the batch; the finished items ride on
    the error (`partial_result(error)`), per text for embeddings, with a note that counts them."""
    from gradient_async import Hooks, RetryEvent
    from gradient_async.batch import BatchResult, partial_result

    async def prompts() -> AsyncIterator[str]:
        for i in range(5):
            yield f"p{i}"
        await anyio.sleep(1)  # every item above finishes first (fake clock)
        raise KeyError("bad row 5")

    def broken_hook(event: RetryEvent) -> None:
        raise RuntimeError("hook bug")

    async def main() -> None:
        client = handler_client(server.handler)
        async with client:
            with pytest.raises(KeyError) as caught:
                await client.completions.batch(MODEL, prompts())
            partial = partial_result(caught.value)
            assert isinstance(partial, BatchResult) and [item.index for item in partial] == [0, 1, 2, 3, 4]
            assert all(item.ok for item in partial)
            assert caught.value.__notes__[-1].startswith("gradient_async: 5 batch items had finished")

            with pytest.raises(BadRequestError) as failed:
                await client.completions.batch(MODEL, ["a", "b !status:400"], fail_fast=True, max_concurrency=1)
            stopped = partial_result(failed.value)
            assert stopped is not None and [item.ok for item in stopped] == [True, False]  # the failed item too
            assert stopped.items[1].error is failed.value

            with pytest.raises(InputValidationError, match="text 1") as rejected:
                await client.embeddings.batch("bge-large", ["ok", "", "never sent"], fail_fast=True)
            kept = partial_result(rejected.value)
            assert kept is not None and [(item.index, item.ok) for item in kept] == [(1, False)]

            hooked = client.with_options(hooks=Hooks(on_retry=[broken_hook]))
            with pytest.raises(RuntimeError, match="hook bug") as hook_error:
                await hooked.completions.batch(MODEL, ["a", "b", "c !status:503"], max_concurrency=1)
            assert [item.index for item in partial_result(hook_error.value) or []] == [0, 1]

            async def texts() -> AsyncIterator[str]:
                for i in range(7):
                    yield "t" * (i + 1)
                await anyio.sleep(1)
                raise KeyError("bad text")

            with pytest.raises(KeyError) as embedded:
                await client.embeddings.batch("bge-large", texts(), chunk_size=3)
            per_text = partial_result(embedded.value)
            assert per_text is not None and [item.index for item in per_text] == [0, 1, 2, 3, 4, 5]  # 2 chunks
            assert [item.unwrap()[0] for item in per_text] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
            assert embedded.value.__notes__ == [
                "gradient_async: 6 batch items had finished (gradient_async.batch.partial_result(error))"
            ]
            assert partial_result(ValueError("not from a batch")) is None

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})


async def test_an_error_that_refuses_attributes_reaches_the_caller_unchanged(
    make_client: Callable[..., AsyncGradient],
) -> None:
    """partial_result is best effort: the caller's own error type is never replaced by ours."""
    from gradient_async.batch import partial_result

    class Stubborn(Exception):
        def __setattr__(self, name: str, value: object) -> None:
            raise TypeError("no attributes here")

    async def prompts() -> AsyncIterator[str]:
        yield "a"
        raise Stubborn("source bug")

    async with make_client() as client:
        with pytest.raises(Stubborn, match="source bug") as caught:
            await client.completions.batch(MODEL, prompts())
    assert partial_result(caught.value) is None
