"""Closing a client (no attempt after close, draining) and the one-client-one-event-loop rule."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import httpx
import pytest

from gradient_async import AsyncGradient, ClientClosedError, GradientError

from .conftest import ADAPTER_ID, BASE_URL, TOKEN, WORKSPACE

OK = {"finishReason": "stop", "generatedOutput": "ok"}


def _gated_client(gate: anyio.Event, seen: list[str], **kwargs: Any) -> AsyncGradient:
    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        await gate.wait()
        return httpx.Response(200, json=OK)

    return AsyncGradient(
        access_token=TOKEN, workspace_id=WORKSPACE, base_url=BASE_URL, transport=httpx.MockTransport(handler), **kwargs
    )


async def test_aclose_with_timeout_drains_calls_in_flight() -> None:
    gate = anyio.Event()
    seen: list[str] = []
    client = _gated_client(gate, seen)
    results: list[str] = []

    async def call() -> None:
        results.append((await client.completions.create(ADAPTER_ID, query="q")).generated_output)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(lambda: client.aclose(timeout=None))  # None: as long as the calls need
        await anyio.wait_all_tasks_blocked()
        assert client.is_closed
        with pytest.raises(ClientClosedError):  # no new call while draining
            await client.completions.create(ADAPTER_ID, query="q")
        gate.set()
    assert results == ["ok"] and len(seen) == 1


async def test_aclose_without_drain_stops_retries_of_calls_in_flight() -> None:
    gate = anyio.Event()
    answers = [503, 200]

    async def handler(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        if status == 503:
            await gate.wait()
        return httpx.Response(status, json=OK)

    client = AsyncGradient(
        access_token=TOKEN, workspace_id=WORKSPACE, base_url=BASE_URL, transport=httpx.MockTransport(handler)
    )
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await client.completions.create(ADAPTER_ID, query="q")
        except BaseException as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        await client.aclose()
        gate.set()  # the in-flight attempt answers 503 after close: it must not be retried
    assert len(outcome) == 1 and isinstance(outcome[0], ClientClosedError)
    assert answers == [200]


def test_a_client_belongs_to_one_event_loop() -> None:
    gate = anyio.Event()
    seen: list[str] = []
    client = _gated_client(gate, seen)

    async def use() -> str:
        gate.set()
        return (await client.completions.create(ADAPTER_ID, query="q")).generated_output

    assert asyncio.run(use()) == "ok"
    with pytest.raises(GradientError, match="one event loop"):
        asyncio.run(use())
    assert len(seen) == 1


async def test_a_cancelled_drain_still_closes_the_client() -> None:
    gate = anyio.Event()
    seen: list[str] = []
    client = _gated_client(gate, seen)
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await client.completions.create(ADAPTER_ID, query="q")
        except BaseException as exc:
            outcome.append(exc)
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.01):
            await client.aclose(timeout=60)  # cancelled while draining
        assert client.is_closed
        with pytest.raises(ClientClosedError):
            await client.models.list()
        tg.cancel_scope.cancel()
    assert len(seen) == 1


async def test_cancelling_a_call_frees_its_slot() -> None:
    gate = anyio.Event()
    seen: list[str] = []
    client = _gated_client(gate, seen, max_concurrency=1)
    async with client:
        with anyio.move_on_after(0.01):
            await client.completions.create(ADAPTER_ID, query="q")  # hangs on the gate, then cancelled
        gate.set()
        out = await client.completions.create(ADAPTER_ID, query="q")  # the one slot is free again
        assert out.generated_output == "ok"
        assert client._pool.active == 0


@pytest.mark.parametrize("timeout", [-1, "5", True, float("nan")])
async def test_aclose_refuses_a_bad_timeout_and_stays_open(timeout: Any) -> None:
    client = _gated_client(anyio.Event(), [])
    with pytest.raises(GradientError, match="timeout must be a number of seconds"):
        await client.aclose(timeout=timeout)
    assert not client.is_closed
    await client.aclose()
    assert client.is_closed
