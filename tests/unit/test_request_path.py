"""The request path: one retry decision, deadlines as wall clocks, per-attempt timeouts, idempotency.

Deadlines and waits run under trio's MockClock(autojump_threshold=0): virtual time jumps ahead
whenever every task sleeps, so seconds of waiting cost microseconds and readings are exact.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
import trio
import trio.testing

from gradient_async import (
    APITimeoutError,
    AsyncGradient,
    InternalServerError,
    RateLimitError,
    RequestOptions,
    RetryPolicy,
)
from gradient_async._errors import APIConnectionError

from .conftest import ADAPTER_ID, BASE_URL, TOKEN, WORKSPACE, FakeAPI

COMPLETE = f"/api/models/{ADAPTER_ID}/complete"
OK = {"finishReason": "stop", "generatedOutput": "ok"}


def _status_error(status: int, headers: dict[str, str] | None = None) -> Exception:
    from gradient_async._errors import make_status_error

    return make_status_error(httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://x")))


def run_virtual(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run `fn` on trio with a virtual clock."""
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def slow_server(seconds: float, status: int = 503, calls: list[float] | None = None) -> httpx.MockTransport:
    """Every request takes `seconds` (virtual) and answers `status`."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(trio.current_time())
        await anyio.sleep(seconds)
        return httpx.Response(status, json=OK if status == 200 else {"message": "busy"})

    return httpx.MockTransport(handler)


def _client(transport: httpx.AsyncBaseTransport, **kwargs: Any) -> AsyncGradient:
    return AsyncGradient(access_token=TOKEN, workspace_id=WORKSPACE, base_url=BASE_URL, transport=transport, **kwargs)


# -- the one decision ---------------------------------------------------------------------------


def test_next_wait_decides_retryable_budget_and_deadline() -> None:
    policy = RetryPolicy(max_retries=2, deadline=10.0)
    rng = random.Random(1)
    e503 = _status_error(503)
    assert policy.next_wait(e503, 1, 0.0, idempotent=True, rng=rng) is not None
    assert policy.next_wait(e503, 2, 0.0, idempotent=True, rng=rng) is not None
    assert policy.next_wait(e503, 3, 0.0, idempotent=True, rng=rng) is None  # budget spent
    assert policy.next_wait(e503, 1, 0.0, idempotent=False, rng=rng) is None  # may have reached the server
    assert policy.next_wait(_status_error(400), 1, 0.0, idempotent=True) is None
    # a wait that would end past the deadline is not started
    assert policy.next_wait(e503, 1, 9.9, idempotent=True, rng=rng) is None
    # 429s cost no retry budget; they have their own
    e429 = _status_error(429, {"retry-after": "1"})
    wait = policy.next_wait(e429, 10, 0.0, idempotent=False, rate_limited=9)
    assert wait is not None and wait >= 1.0
    assert RetryPolicy(max_rate_limit_retries=3).next_wait(e429, 4, idempotent=True, rate_limited=4) is None
    # 0 disables retrying altogether, 429 included
    assert RetryPolicy(max_retries=0).next_wait(e429, 1, idempotent=True, rate_limited=1) is None
    # a connection that certainly never reached the server is safe to retry even for a POST
    never_sent = APIConnectionError("refused", sent=False)
    assert policy.next_wait(never_sent, 1, idempotent=False) is not None


async def test_client_and_batch_ask_the_same_decision(
    make_client: Callable[..., AsyncGradient], api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, int]] = []
    original = RetryPolicy.next_wait

    def spy(self: RetryPolicy, error: BaseException, attempt: int, *args: Any, **kwargs: Any) -> float | None:
        asked.append((type(error).__name__, attempt))
        return original(self, error, attempt, *args, **kwargs)

    monkeypatch.setattr(RetryPolicy, "next_wait", spy)
    api.add("POST", COMPLETE, httpx.Response(503), httpx.Response(200, json=OK))
    async with make_client() as client:
        await client.completions.create(ADAPTER_ID, query="q")
        assert asked == [("InternalServerError", 1)]
        api.script[("POST", COMPLETE)] = [httpx.Response(503), httpx.Response(200, json=OK)]
        result = await client.completions.batch(ADAPTER_ID, ["a"], retry=client.config.retry)
        assert result.ok == 1, result.items
        assert result.retried == 1, (result.stats, len(api.requests))
    assert asked == [("InternalServerError", 1), ("InternalServerError", 1)]


async def test_max_retries_zero_builds_no_retry_machinery(
    make_client: Callable[..., AsyncGradient], api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> float | None:
        raise AssertionError("the retry decision was consulted for a call with max_retries=0")

    monkeypatch.setattr(RetryPolicy, "next_wait", forbidden)
    api.add("POST", COMPLETE, httpx.Response(503))
    async with make_client(max_retries=0) as client:
        with pytest.raises(InternalServerError):
            await client.completions.create(ADAPTER_ID, query="q")
    async with make_client() as client:
        with pytest.raises(InternalServerError):
            await client.completions.create(ADAPTER_ID, query="q", max_retries=0)
    assert len(api.requests) == 2


# -- idempotency is derived from the method -----------------------------------------------------


def test_idempotency_is_derived_from_the_method() -> None:
    assert RequestOptions("GET", "/x").is_idempotent
    assert RequestOptions("DELETE", "/x").is_idempotent
    assert not RequestOptions("POST", "/x").is_idempotent
    assert RequestOptions("POST", "/x", idempotent=True).is_idempotent
    assert not RequestOptions("GET", "/x", idempotent=False).is_idempotent


async def test_a_new_post_is_not_retried_unless_it_says_so(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", "/api/models/x/new-state-change", httpx.Response(503), httpx.Response(200, json={}))
    with pytest.raises(InternalServerError):
        await client.request(RequestOptions("POST", "/models/x/new-state-change", json={}), None)
    assert len(api.requests) == 1
    api.script[("POST", "/api/models/x/new-state-change")] = [httpx.Response(503), httpx.Response(200, json={})]
    await client.request(RequestOptions("POST", "/models/x/new-state-change", json={}, idempotent=True), None)
    assert len(api.requests) == 3


# -- the deadline is a wall clock over the whole call -------------------------------------------


def test_deadline_cancels_a_running_attempt_single_call() -> None:
    calls: list[float] = []

    async def main() -> tuple[float, BaseException]:
        policy = RetryPolicy(max_retries=5, deadline=1.2, initial_delay=0.01)
        async with _client(slow_server(1.0, calls=calls), retry=policy) as client:
            start = trio.current_time()
            with pytest.raises(APITimeoutError) as info:
                await client.completions.create(ADAPTER_ID, query="q")
            return trio.current_time() - start, info.value

    elapsed, error = run_virtual(main)
    assert elapsed == pytest.approx(1.2, abs=1e-6)  # virtual seconds: exact, not a timing guess
    assert len(calls) == 2  # the second attempt was cut off at the deadline, and no third began
    assert "deadline" in str(error)


def test_deadline_cancels_a_running_attempt_batch_item() -> None:
    calls: list[float] = []

    async def main() -> tuple[float, Any]:
        policy = RetryPolicy(max_retries=5, deadline=1.2, initial_delay=0.01)
        async with _client(slow_server(1.0, calls=calls), max_retries=0) as client:
            start = trio.current_time()
            result = await client.completions.batch(ADAPTER_ID, ["a"], retry=policy)
            return trio.current_time() - start, result

    elapsed, result = run_virtual(main)
    assert elapsed == pytest.approx(1.2, abs=1e-6)
    assert isinstance(result[0].error, APITimeoutError) and result[0].attempts == 2
    assert len(calls) == 2


def test_deadline_counts_the_wait_for_a_concurrency_slot() -> None:
    async def main() -> list[str]:
        policy = RetryPolicy(deadline=1.5)
        outcomes: list[str] = []
        async with _client(slow_server(1.0, status=200), retry=policy, max_concurrency=1) as client:

            async def one() -> None:
                try:
                    await client.completions.create(ADAPTER_ID, query="q")
                    outcomes.append("ok")
                except APITimeoutError:
                    outcomes.append("timeout")

            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
        return outcomes

    assert sorted(run_virtual(main)) == ["ok", "timeout"]


def test_pool_timeout_bounds_the_wait_for_a_slot() -> None:
    async def main() -> list[str]:
        outcomes: list[str] = []
        timeout = httpx.Timeout(10.0, pool=0.25)
        async with _client(slow_server(1.0, status=200), timeout=timeout, max_concurrency=1, max_retries=0) as client:

            async def one() -> None:
                try:
                    await client.completions.create(ADAPTER_ID, query="q")
                    outcomes.append("ok")
                except APITimeoutError as exc:
                    outcomes.append("pool" if "pool timeout" in str(exc) else str(exc))

            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
        return outcomes

    assert sorted(run_virtual(main)) == ["ok", "pool"]


def test_timeout_bounds_each_attempt_as_a_whole() -> None:
    calls: list[float] = []

    async def main() -> float:
        async with _client(slow_server(5.0, status=200, calls=calls), timeout=2.0, max_retries=0) as client:
            start = trio.current_time()
            with pytest.raises(APITimeoutError):
                await client.completions.create(ADAPTER_ID, query="q")
            return trio.current_time() - start

    assert run_virtual(main) == pytest.approx(2.0, abs=1e-6)
    assert len(calls) == 1


def test_per_call_timeout_overrides_the_client_default() -> None:
    async def main() -> float:
        async with _client(slow_server(5.0, status=200), timeout=60.0, max_retries=0) as client:
            start = trio.current_time()
            with pytest.raises(APITimeoutError):
                await client.models.list(timeout=0.5)
            return trio.current_time() - start

    assert run_virtual(main) == pytest.approx(0.5, abs=1e-6)


def test_429_waits_do_not_spend_the_retry_budget() -> None:
    answers = [429] * 4 + [200]

    async def handler(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        headers = {"retry-after": "1"} if status == 429 else {}
        return httpx.Response(status, headers=headers, json=OK)

    async def main() -> str:
        async with _client(httpx.MockTransport(handler), max_retries=1) as client:
            return (await client.completions.create(ADAPTER_ID, query="q")).generated_output

    assert run_virtual(main) == "ok"
    assert answers == []


async def test_rate_limit_budget_is_bounded(make_client: Callable[..., AsyncGradient], api: FakeAPI) -> None:
    api.add("POST", COMPLETE, httpx.Response(429, headers={"retry-after": "0"}))
    async with make_client(retry=RetryPolicy(max_rate_limit_retries=3, sleep=_no_sleep)) as client:
        with pytest.raises(RateLimitError) as info:
            await client.completions.create(ADAPTER_ID, query="q")
    assert len(api.requests) == 4 and info.value.retries_taken == 3


async def _no_sleep(seconds: float) -> None:
    return None
