"""Client spans and metrics with the OpenTelemetry SDK's in-memory exporters, against the in-process server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gradient_async import AsyncGradient, RateLimitError, RetryPolicy
from gradient_async._hooks import CallEvent, Hooks, RetryEvent
from gradient_async.testing import GradientServer

from .conftest import Otel

PROMPT = "Question: what is the secret prompt 7f3a?"
COMPLETE_SERVER_SPAN = "POST /api/models/{model_id}/complete"


async def no_sleep(seconds: float) -> None:
    return None


def client_for(srv: GradientServer, **kwargs: Any) -> AsyncGradient:
    kwargs.setdefault("retry", RetryPolicy(sleep=no_sleep))
    return srv.make_client(**kwargs)


def everything_recorded(otel: Otel) -> str:
    """Every span name, attribute, event and metric attribute, as one text to scan."""
    parts: list[str] = []
    for s in otel.spans():
        parts.append(s.name)
        parts.append(json.dumps(dict(s.attributes), default=str))
        for event in s.events:
            parts.append(event.name + json.dumps(dict(event.attributes or {}), default=str))
    data = otel.reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    parts.append(metric.name + json.dumps(dict(p.attributes), default=str))
    return "\n".join(parts)


async def test_one_call_one_trace_with_a_retry_as_two_attempt_spans(
    gradient_server: GradientServer, otel: Otel
) -> None:
    faults = gradient_server.faults
    faults.fail_rate = 1.0

    def heal(event: RetryEvent) -> None:
        faults.fail_rate = 0.0  # the first attempt got a 503; the retry succeeds

    client = client_for(gradient_server, hooks=Hooks(on_retry=[heal]))
    base = gradient_server.base_model_ids[-1]
    out = await client.completions.create(base, query=PROMPT, max_generated_token_count=8, temperature=0.5)

    [call] = otel.spans(f"text_completion {base}")
    attempts = sorted(otel.spans("POST", scope="gradient_async"), key=lambda s: s.start_time)
    assert len(attempts) == 2
    assert all(a.parent.span_id == call.context.span_id for a in attempts)
    servers = otel.spans(kind="SERVER")
    assert len(servers) == 2  # the injected 503 is answered before routing, so only the second is named
    assert sorted(s.name for s in servers) == ["POST", COMPLETE_SERVER_SPAN]
    trace_ids = {s.context.trace_id for s in [call, *attempts, *servers]}
    assert len(trace_ids) == 1  # client and server spans: one trace
    for attempt, server in zip(attempts, sorted(servers, key=lambda s: s.start_time), strict=True):
        assert server.parent.span_id == attempt.context.span_id  # traceparent carried per attempt

    assert attempts[0].attributes["http.response.status_code"] == 503
    assert attempts[0].attributes["error.type"] == "503"
    assert "http.request.resend_count" not in attempts[0].attributes
    assert attempts[1].attributes["http.response.status_code"] == 200
    assert attempts[1].attributes["http.request.resend_count"] == 1
    a = call.attributes
    assert a["gen_ai.operation.name"] == "text_completion" and a["gen_ai.request.model"] == base
    assert a["gen_ai.request.max_tokens"] == 8 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.finish_reasons"] == (out.finish_reason,)
    assert a["gradient.retries"] == 1 and a["gen_ai.provider.name"] == "gradient"
    assert a["gen_ai.usage.output_tokens"] > 0
    assert [e.name for e in call.events] == ["gradient.retry"]

    text = everything_recorded(otel)
    assert gradient_server.token not in text  # never the token
    assert PROMPT not in text and out.generated_output not in text  # no content unless asked


async def test_metrics_match_the_calls(gradient_server: GradientServer, otel: Otel) -> None:
    client = client_for(gradient_server)
    base = gradient_server.base_model_ids[-1]
    for _ in range(3):
        await client.completions.create(base, query="hello", max_generated_token_count=4)
    ends: list[CallEvent] = []
    limited = httpx.Response(429, json={"message": "slow down"}, headers={"retry-after": "0"})
    async with AsyncGradient(
        access_token="t",
        workspace_id="w",
        base_url="http://limited.test/api",
        transport=httpx.MockTransport(lambda request: limited),
        retry=RetryPolicy(sleep=no_sleep, max_retries=1),
        hooks=Hooks(on_call_end=[ends.append]),
    ) as refused:
        with pytest.raises(RateLimitError):
            await refused.completions.create(base, query="hello")
    [end] = ends
    tries = end.attempts  # 429s are retried on their own budget
    assert tries > 2

    op = {"gen_ai.operation.name": "text_completion"}
    assert otel.total("gen_ai.client.operation.duration", **op) == 4
    assert otel.total("gen_ai.client.operation.duration", **op, **{"error.type": "429"}) == 1
    assert otel.total("http.client.request.duration", **{"http.response.status_code": 200}) == 3
    assert otel.total("http.client.request.duration", **{"http.response.status_code": 429}) == tries
    assert otel.total("gradient.client.rate_limited") == tries
    assert otel.total("gradient.client.retries") == tries - 1
    [point] = otel.points("gen_ai.client.token.usage")
    assert point.count == 3 and point.sum == 3 * 4  # the test engine fills max_generated_token_count


async def test_fine_tune_reports_input_tokens(gradient_server: GradientServer, otel: Otel) -> None:
    client = client_for(gradient_server)
    adapter = await (await client.models.list(only_base=True))[-1].create_adapter(name="a")
    result = await adapter.fine_tune(samples=["one two three four"])
    [span] = otel.spans(f"fine_tune {adapter.id}")
    assert span.attributes["gen_ai.usage.input_tokens"] == result.number_of_trainable_tokens == 4
    assert otel.total("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"}) == 1


async def test_content_is_recorded_only_when_asked(gradient_server: GradientServer, otel: Otel) -> None:
    client = client_for(gradient_server, trace_content=True)
    base = gradient_server.base_model_ids[-1]
    out = await client.completions.create(base, query=PROMPT)
    [call] = otel.spans(f"text_completion {base}")
    inputs = json.loads(str(call.attributes["gen_ai.input.messages"]))
    outputs = json.loads(str(call.attributes["gen_ai.output.messages"]))
    assert inputs[0]["parts"][0]["content"] == PROMPT and inputs[0]["role"] == "user"
    assert outputs[0]["parts"][0]["content"] == out.generated_output
    assert gradient_server.token not in everything_recorded(otel)


async def test_tracing_false_sends_no_traceparent_and_makes_no_span(
    gradient_server: GradientServer, otel: Otel
) -> None:
    seen: list[httpx.Request] = []
    client = client_for(gradient_server, tracing=False, hooks=Hooks(on_request=[lambda e: seen.append(e.request)]))
    await client.models.list()
    assert "traceparent" not in seen[0].headers
    assert not [s for s in otel.spans() if s.instrumentation_scope.name == "gradient_async"]
    assert otel.points("gen_ai.client.operation.duration") == []


async def test_without_a_provider_nothing_is_sent_or_recorded(gradient_server: GradientServer) -> None:
    seen: list[httpx.Request] = []
    client = client_for(gradient_server, hooks=Hooks(on_request=[lambda e: seen.append(e.request)]))
    await client.models.list()
    assert "traceparent" not in seen[0].headers


async def test_a_call_inside_an_application_span_is_its_child(gradient_server: GradientServer, otel: Otel) -> None:
    from opentelemetry import trace

    client = client_for(gradient_server)
    with trace.get_tracer("app").start_as_current_span("handle-request") as outer:
        await client.models.list()
    [call] = otel.spans("list_models")
    assert call.parent.span_id == outer.get_span_context().span_id


async def test_attempt_spans_never_carry_userinfo_or_query(otel: Otel) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"models": []})

    async with AsyncGradient(
        access_token="tok-SECRET",
        workspace_id="w",
        base_url="http://user:hunter2@gradient.test:8080/api",
        transport=httpx.MockTransport(handler),
    ) as client:
        await client.models.list(extra_query={"apiKey": "qs-SECRET"})
    [attempt] = otel.spans("GET", scope="gradient_async")
    assert attempt.attributes["url.full"] == "http://gradient.test:8080/api/models"
    assert attempt.attributes["server.port"] == 8080
    text = everything_recorded(otel)
    assert "hunter2" not in text and "qs-SECRET" not in text and "tok-SECRET" not in text
    assert seen[0].headers["traceparent"].split("-")[2] == f"{attempt.context.span_id:016x}"


async def test_a_cancelled_call_closes_its_spans_and_reports(otel: Otel) -> None:
    import anyio

    started = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    ends: list[CallEvent] = []
    async with (
        AsyncGradient(
            access_token="t",
            workspace_id="w",
            base_url="http://gradient.test/api",
            transport=httpx.MockTransport(handler),
            hooks=Hooks(on_call_end=[ends.append]),
        ) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.models.list)
        await started.wait()
        tg.cancel_scope.cancel()
    [call] = otel.spans("list_models")
    [attempt] = otel.spans("GET", scope="gradient_async")
    assert call.end_time is not None and attempt.end_time is not None
    assert call.status.status_code.name == "ERROR"
    assert len(ends) == 1 and ends[0].error is not None and ends[0].attempts == 1


def test_limiter_window_and_pauses_are_recorded(otel: Otel) -> None:
    from gradient_async._otel import record_limiter_pause, record_limiter_window

    record_limiter_window(8, 0)
    record_limiter_window(4, 8)
    record_limiter_pause(1.5)
    [window] = otel.points("gradient.client.limiter.window")
    assert window.value == 4
    assert otel.total("gradient.client.limiter.pauses") == 1


async def test_the_client_limiter_reports_its_window_and_pauses(otel: Otel) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0.01"}, json={"message": "slow down"})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "ok"})

    async with AsyncGradient(
        access_token="t",
        workspace_id="w",
        base_url="http://gradient.test/api",
        transport=httpx.MockTransport(handler),
        max_concurrency=8,
    ) as client:
        out = await client.completions.create("a_model_adapter", query="q")
    assert out.generated_output == "ok"
    assert otel.total("gradient.client.limiter.pauses") == 1  # the 429 paused the whole client once
    [window] = otel.points("gradient.client.limiter.window")
    assert 1 <= window.value < 8  # created at 8, then lowered by the 429
