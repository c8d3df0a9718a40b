"""Client hooks: called for every HTTP attempt, every retry and once per call; kept by `with_options` copies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gradient_async import AsyncGradient, Completion, InputValidationError, InternalServerError, RetryPolicy
from gradient_async._hooks import CallEvent, Hooks, Instrumentation, RequestEvent, ResponseEvent, RetryEvent

TOKEN = "sk-hooks-SECRET-token"
BASE = "http://gradient.test/api"
MODEL = "99148c6d-c2a0-4fbe-a4a7-e7c05bdb8a09_base_ml_model"
OK = {"generatedOutput": "hi there", "finishReason": "stop"}


async def no_sleep(seconds: float) -> None:
    return None


def scripted(*answers: httpx.Response | Exception) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return seen, httpx.MockTransport(handler)


def make(transport: httpx.MockTransport, **kwargs: Any) -> AsyncGradient:
    return AsyncGradient(
        access_token=TOKEN,
        workspace_id="ws",
        base_url=BASE,
        transport=transport,
        retry=RetryPolicy(sleep=no_sleep),
        **kwargs,
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def hooks(self) -> Hooks:
        return Hooks(
            on_request=[lambda e: self.events.append(("request", e))],
            on_response=[lambda e: self.events.append(("response", e))],
            on_retry=[lambda e: self.events.append(("retry", e))],
            on_call_end=[lambda e: self.events.append(("end", e))],
        )

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


async def test_every_attempt_retry_and_call_end_is_seen() -> None:
    _, transport = scripted(
        httpx.Response(503, json={"message": "busy"}), httpx.Response(200, json=OK, headers={"x-request-id": "r2"})
    )
    rec = Recorder()
    async with make(transport, hooks=rec.hooks()) as client:
        out = await client.completions.create(MODEL, query="q")
    assert rec.kinds() == ["request", "response", "retry", "request", "response", "end"]
    first_req, first_resp, retry, second_req, second_resp, end = (e for _, e in rec.events)
    assert isinstance(first_req, RequestEvent) and first_req.attempt == 1
    assert isinstance(first_resp, ResponseEvent) and first_resp.response is not None
    assert first_resp.response.status_code == 503 and isinstance(first_resp.error, InternalServerError)
    assert isinstance(retry, RetryEvent) and retry.attempt == 1 and retry.wait >= 0
    assert second_req.attempt == 2 and second_resp.error is None and second_resp.elapsed >= 0
    assert isinstance(end, CallEvent) and end.attempts == 2 and end.error is None
    assert end.value is out and isinstance(out, Completion) and end.duration >= 0
    assert (end.method, end.path) == ("POST", f"/models/{MODEL}/complete")


async def test_a_failed_call_ends_with_its_error_and_a_connection_error_has_no_response() -> None:
    _, transport = scripted(httpx.ConnectError("refused"))
    rec = Recorder()
    async with make(transport, hooks=rec.hooks(), max_retries=1) as client:
        with pytest.raises(Exception) as info:
            await client.models.list()
    responses = [e for k, e in rec.events if k == "response"]
    assert [r.response for r in responses] == [None, None]
    assert all(r.error is not None for r in responses)
    [end] = [e for k, e in rec.events if k == "end"]
    assert end.error is info.value and end.attempts == 2 and end.value is None


async def test_async_hooks_are_awaited_and_may_change_headers() -> None:
    seen, transport = scripted(httpx.Response(200, json=OK))
    calls: list[str] = []

    async def tag(event: RequestEvent) -> None:
        event.request.headers["x-trace-me"] = "yes"
        calls.append("request")

    async with make(transport, hooks=Hooks(on_request=tag)) as client:
        await client.completions.create(MODEL, query="q")
    assert calls == ["request"] and seen[0].headers["x-trace-me"] == "yes"


async def test_with_options_copies_keep_the_hooks_or_replace_them() -> None:
    _, transport = scripted(httpx.Response(200, json=OK))
    rec, other = Recorder(), Recorder()
    async with make(transport, hooks=rec.hooks()) as client:
        await client.with_options(timeout=5).completions.create(MODEL, query="q")
        assert rec.kinds() == ["request", "response", "end"]
        await client.with_options(hooks=other.hooks()).completions.create(MODEL, query="q")
        assert len(rec.events) == 3 and other.kinds() == ["request", "response", "end"]
        assert client.with_options(max_retries=0).hooks is client.hooks


async def test_a_hook_that_raises_fails_the_call() -> None:
    _, transport = scripted(httpx.Response(200, json=OK))

    def boom(event: RequestEvent) -> None:
        raise RuntimeError("hook says no")

    async with make(transport, hooks=Hooks(on_request=[boom])) as client:
        with pytest.raises(RuntimeError, match="hook says no"):
            await client.completions.create(MODEL, query="q")


async def test_on_retry_per_call_is_a_deprecated_alias() -> None:
    _, transport = scripted(httpx.Response(503, json={"message": "busy"}), httpx.Response(200, json=OK))
    events: list[RetryEvent] = []
    async with make(transport) as client:
        with pytest.warns(DeprecationWarning, match="Hooks"):
            await client.completions.create(MODEL, query="q", on_retry=events.append)
    assert [e.attempt for e in events] == [1]


def test_hooks_must_be_callables() -> None:
    with pytest.raises(TypeError, match="on_retry must hold callables"):
        Hooks(on_retry=["not callable"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="on_request must be a list of callables, got int"):
        Hooks(on_request=5)  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match=r"hooks must be a gradient_async\.Hooks"):
        AsyncGradient(access_token="t", workspace_id="w", hooks=[print])  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="tracing must be True or False"):
        AsyncGradient(access_token="t", workspace_id="w", tracing="no")  # type: ignore[arg-type]
    single: Callable[[CallEvent], None] = lambda e: None  # noqa: E731
    assert Hooks(on_call_end=single).on_call_end == (single,)
    assert Hooks().empty and not Hooks(on_call_end=single).empty


def test_nothing_to_do_costs_nothing() -> None:
    from gradient_async import RequestOptions

    assert Instrumentation(tracing=False).start(RequestOptions("GET", "/models")) is None
