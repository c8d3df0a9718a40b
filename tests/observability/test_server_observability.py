"""Server side: /metrics, request ids, access log lines, limit-rejection counter, server spans."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gradient_async.server.access_log import AccessLogFormatter, configure_access_log
from gradient_async.server.metrics import TokenRate, record_rejection
from gradient_async.server.observability import ACCESS_LOGGER
from gradient_async.testing import TEST_TOKEN, TEST_WORKSPACE, GradientServer

from .conftest import Otel

HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}", "x-gradient-workspace-id": TEST_WORKSPACE}
COMPLETE = "/api/models/{model_id}/complete"
SECRET_PROMPT = "my-very-private-prompt-text"


async def raw(
    srv: GradientServer, method: str, path: str, headers: dict[str, Any] | None = None, **kw: Any
) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=srv.app), base_url="http://local") as http:
        return await http.request(method, path, headers=HEADERS if headers is None else headers, **kw)


async def scrape(srv: GradientServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await raw(srv, "GET", "/metrics", headers={})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_access_log("json", stream)
    logger = logging.getLogger(ACCESS_LOGGER)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


async def test_metrics_parse_and_counters_move_with_requests(gradient_server: GradientServer) -> None:
    client = gradient_server.client
    base = gradient_server.base_model_ids[-1]
    before = await scrape(gradient_server)
    for _ in range(3):
        await client.completions.create(base, query="Hello there", max_generated_token_count=8)
    adapter = await (await client.models.list(only_base=True))[-1].create_adapter(name="a1")
    await adapter.fine_tune(samples=["one sample"])
    after = await scrape(gradient_server)

    ok = {"method": "POST", "route": COMPLETE, "status": "200"}
    assert value(after, "gradient_http_requests_total", **ok) - value(before, "gradient_http_requests_total", **ok) == 3
    assert value(after, "gradient_http_request_duration_seconds_count", method="POST", route=COMPLETE) == 3
    assert value(after, "gradient_engine_batch_size_count", engine="test") == 3
    assert value(after, "gradient_engine_queue_seconds_count", engine="test") == 3
    assert value(after, "gradient_engine_queue_depth", engine="test") == 0
    assert value(after, "gradient_generated_tokens_total", engine="test") >= 3
    assert value(after, "gradient_generated_tokens_per_second", engine="test") > 0
    assert value(after, "gradient_fine_tune_steps_total", engine="test") == 1
    assert value(after, "gradient_fine_tune_duration_seconds_count", engine="test") == 1
    assert value(after, "gradient_fine_tune_trainable_tokens_total", engine="test") == 2
    assert value(after, "gradient_adapters", workspace=TEST_WORKSPACE) == 1
    # labels are route templates: no model id ever becomes a label value
    assert not any(base in str(key) or adapter.id in str(key) for key in after)


async def test_unknown_paths_share_one_label(gradient_server: GradientServer) -> None:
    for i in range(3):
        assert (await raw(gradient_server, "GET", f"/api/nowhere/{i}")).status_code == 404
    samples = await scrape(gradient_server)
    assert value(samples, "gradient_http_requests_total", method="GET", route="other", status="404") == 3
    assert not any("nowhere" in str(key) for key in samples)


async def test_routes_behind_a_proxy_root_path_keep_their_template(gradient_server: GradientServer) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gradient_server.app, root_path="/gradient"), base_url="http://local"
    ) as http:
        resp = await http.get("/gradient/api/models", headers=HEADERS)
    assert resp.status_code == 200
    samples = await scrape(gradient_server)
    assert value(samples, "gradient_http_requests_total", method="GET", route="/api/models", status="200") == 1


async def test_odd_methods_share_one_label(gradient_server: GradientServer) -> None:
    for i in range(3):
        await raw(gradient_server, f"BREW{i}", "/api/models")
    samples = await scrape(gradient_server)
    assert not any("BREW" in str(key) for key in samples)
    assert value(samples, "gradient_http_requests_total", method="_OTHER", route="/api/models", status="405") == 3


async def test_fault_answers_are_counted_under_their_route(gradient_server: GradientServer) -> None:
    gradient_server.faults.fail_rate = 1.0
    base = gradient_server.base_model_ids[-1]
    resp = await raw(gradient_server, "POST", f"/api/models/{base}/complete", json={"query": "x"})
    assert resp.status_code == 503
    samples = await scrape(gradient_server)
    assert value(samples, "gradient_http_requests_total", method="POST", route=COMPLETE, status="503") == 1


async def test_record_rejection_from_state_app_request_or_scope(gradient_server: GradientServer) -> None:
    state = gradient_server.state
    record_rejection(state, status=413, reason="body_too_large")
    record_rejection(gradient_server.app, status=429, reason="queue_full")
    record_rejection({"type": "http", "app": gradient_server.app}, status=422, reason="too_many_tokens")

    class FakeRequest:
        app = gradient_server.app

    record_rejection(FakeRequest(), status=413, reason="body_too_large")
    record_rejection(object(), status=413, reason="ignored")  # no app: nothing, no error
    samples = await scrape(gradient_server)
    assert value(samples, "gradient_limit_rejections_total", status="413", reason="body_too_large") == 2
    assert value(samples, "gradient_limit_rejections_total", status="429", reason="queue_full") == 1
    assert value(samples, "gradient_limit_rejections_total", status="422", reason="too_many_tokens") == 1


async def test_the_servers_own_limit_answers_are_counted_by_limit(gradient_server: GradientServer) -> None:
    import dataclasses

    srv = gradient_server
    settings = srv.state.settings
    settings.limits = dataclasses.replace(
        settings.limits, max_body_bytes=1000, max_query_tokens=5, requests_per_minute=1
    )
    path = COMPLETE.format(model_id=srv.base_model_ids[-1])
    assert (await raw(srv, "POST", path, content=b"x" * 2000)).status_code == 413  # at the edge
    assert (await raw(srv, "POST", path, json={"query": "one two three four five six seven"})).status_code == 422
    assert (await raw(srv, "POST", path, json={"query": "hi"})).status_code == 200
    assert (await raw(srv, "POST", path, json={"query": "hi"})).status_code == 429  # admission: rate of this token
    samples = await scrape(srv)
    assert value(samples, "gradient_limit_rejections_total", status="413", reason="max_body_bytes") == 1
    assert value(samples, "gradient_limit_rejections_total", status="422", reason="max_query_tokens") == 1
    assert value(samples, "gradient_limit_rejections_total", status="429", reason="requests_per_minute") == 1


async def test_every_response_carries_a_request_id(gradient_server: GradientServer) -> None:
    fresh = await raw(gradient_server, "GET", "/api/models")
    assert len(fresh.headers["x-request-id"]) == 32
    echoed = await raw(gradient_server, "GET", "/api/models", headers={**HEADERS, "x-request-id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    hostile = await raw(gradient_server, "GET", "/health", headers={"x-request-id": b"a b\xe9<script>" + b"x" * 300})
    assert hostile.headers["x-request-id"] != "a b"
    assert len(hostile.headers["x-request-id"]) == 32
    denied = await raw(gradient_server, "GET", "/api/models", headers={})
    assert denied.status_code == 401 and len(denied.headers["x-request-id"]) == 32
    assert "x-gradient-generated-tokens" not in denied.headers


async def test_sdk_errors_carry_the_servers_request_id(gradient_server: GradientServer) -> None:
    from gradient_async import NotFoundError

    with pytest.raises(NotFoundError) as info:
        await gradient_server.client.adapters.get("0" * 36 + "_model_adapter")
    assert info.value.request_id is not None and len(info.value.request_id) == 32
    assert gradient_server.calls[-1].status == 404


async def test_access_log_one_json_line_per_request_without_secrets(
    gradient_server: GradientServer, access_lines: io.StringIO
) -> None:
    base = gradient_server.base_model_ids[-1]
    await gradient_server.client.completions.create(base, query=SECRET_PROMPT)
    bad = await raw(
        gradient_server,
        "GET",
        "/api/models?token=" + TEST_TOKEN,
        headers={"Authorization": "Bearer " + TEST_TOKEN, "x-gradient-workspace-id": TEST_TOKEN},
    )
    assert bad.status_code == 403
    lines = access_lines.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["route"] == COMPLETE and first["status"] == 200 and first["method"] == "POST"
    assert first["workspace"] == TEST_WORKSPACE and first["model_id"] == base
    assert len(first["request_id"]) == 32 and first["duration_ms"] >= 0
    assert second["workspace"] == "<redacted>"  # a token pasted into the workspace header stays out
    text = access_lines.getvalue()
    assert TEST_TOKEN not in text and SECRET_PROMPT not in text


def _record(**access: Any) -> logging.LogRecord:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "x", None, None)
    record.access = access
    return record


def test_text_format_quotes_values_so_nothing_forges_a_field() -> None:
    line = AccessLogFormatter("text").format(
        _record(route="/x", status=200, workspace='ws\nstatus=500 "x"', model_id=None)
    )
    assert "\n" not in line
    assert ' route=/x status=200 workspace="ws\\nstatus=500 \\"x\\""' in line
    assert "model_id" not in line


def test_formatter_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="'json' or 'text'"):
        AccessLogFormatter("xml")  # type: ignore[arg-type]


def test_token_rate_over_a_sliding_window() -> None:
    now = [1000.0]
    rate = TokenRate(window_s=10, now=lambda: now[0])
    rate.add(50)
    now[0] += 5
    rate.add(50)
    assert rate.per_second() == pytest.approx(100 / 5)
    now[0] += 20
    assert rate.per_second() == 0


def _descends(span: Any, ancestor: Any, spans: list[Any]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    while span.parent is not None:
        if span.parent.span_id == ancestor.context.span_id:
            return True
        span = by_id.get(span.parent.span_id)
        if span is None:
            return False
    return False


@pytest.mark.parametrize("fastapi_native", [True, False], ids=["fastapi-native-span", "own-span"])
async def test_server_span_continues_the_callers_trace(
    gradient_server: GradientServer, otel: Otel, fastapi_native: bool
) -> None:
    native = getattr(gradient_server.app, "_telemetry", None)  # FastAPI versions with built-in OpenTelemetry
    if not fastapi_native:
        if native is not None:
            native["tracing"] = False
    elif native is None:
        pytest.skip("this FastAPI has no native OpenTelemetry")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**HEADERS, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    base = gradient_server.base_model_ids[-1]
    resp = await raw(gradient_server, "POST", f"/api/models/{base}/complete", headers=headers, json={"query": "Hi"})
    assert resp.status_code == 200
    assert int(resp.headers["x-gradient-generated-tokens"]) > 0
    spans = otel.spans()
    [server] = otel.spans(f"POST {COMPLETE}")  # exactly one server span either way
    assert f"{server.context.trace_id:032x}" == trace_id
    assert f"{server.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == COMPLETE
    assert server.attributes["gradient.request_id"] == resp.headers["x-request-id"]
    for child in ("gradient.queue", "gradient.generate"):
        [span] = otel.spans(child)
        assert _descends(span, server, spans)
    generate = otel.spans("gradient.generate")[0]
    assert generate.attributes["gen_ai.usage.output_tokens"] > 0
    assert otel.spans("gradient.queue")[0].end_time <= generate.start_time


async def test_fine_tune_span_is_a_child_of_the_request(gradient_server: GradientServer, otel: Otel) -> None:
    adapter = await (await gradient_server.client.models.list(only_base=True))[-1].create_adapter(name="a1")
    await adapter.fine_tune(samples=["one two three"])
    [server] = otel.spans("POST /api/models/{model_id}/fine-tune")
    [tune] = otel.spans("gradient.fine_tune")
    assert _descends(tune, server, otel.spans())
    assert tune.attributes["gradient.fine_tune.trainable_tokens"] == 3
    assert tune.attributes["gradient.fine_tune.samples"] == 1


def test_serve_has_a_log_format_option_and_respects_the_log_level() -> None:
    import argparse

    from gradient_async.server.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).log_format == "text"
    assert parser.parse_args(["--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-format", "xml"])
    logger = logging.getLogger(ACCESS_LOGGER)
    try:
        configure_access_log("json", io.StringIO(), level="warning")
        assert not logger.isEnabledFor(logging.INFO)
        configure_access_log("text", io.StringIO(), level="debug")
        assert logger.isEnabledFor(logging.INFO)
        assert len([h for h in logger.handlers if getattr(h, "_gradient_access", False)]) == 1  # replaced, not added
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


async def test_an_engine_that_batches_on_its_own_is_timed_per_request() -> None:
    """Layouts where routes call `state.engine.complete` and no DynamicBatcher exists (e.g. vLLM)."""
    from types import SimpleNamespace

    from gradient_async.engine.base import GenerationRequest, GenerationResult
    from gradient_async.server.engine_observer import ObservedFront, install_engine_observer, request_usage
    from gradient_async.server.metrics import ServerMetrics

    class SelfBatching:
        tuned = 0

        async def complete(self, request: GenerationRequest) -> GenerationResult:
            return GenerationResult("four tokens right here", "stop", generated_tokens=4)

    state = SimpleNamespace(engine=SelfBatching(), settings=SimpleNamespace(engine="vllm"), metrics=ServerMetrics())
    install_engine_observer(state)
    install_engine_observer(state)  # twice is once
    assert isinstance(state.engine, ObservedFront) and not isinstance(state.engine.inner, ObservedFront)
    usage: dict[str, int] = {}
    token = request_usage.set(usage)
    try:
        result = await state.engine.complete(GenerationRequest(model_slug="m", prompt="p"))
    finally:
        request_usage.reset(token)
    assert result.generated_tokens == 4 and usage == {"output": 4}
    assert state.engine.tuned == 0  # other attributes pass through
    text = state.metrics.render()[0].decode()
    assert 'gradient_engine_generation_seconds_count{engine="vllm"} 1.0' in text
    assert 'gradient_generated_tokens_total{engine="vllm"} 4.0' in text
    assert 'gradient_engine_queue_depth{engine="vllm"} 0.0' in text


async def test_identical_failures_have_one_signature_despite_request_ids(gradient_server: GradientServer) -> None:
    from gradient_async import NotFoundError
    from gradient_async._errors import error_signature

    errors = []
    for _ in range(2):
        with pytest.raises(NotFoundError) as info:
            await gradient_server.client.adapters.get("0" * 36 + "_model_adapter")
        errors.append(info.value)
    assert errors[0].request_id != errors[1].request_id and str(errors[0]) != str(errors[1])
    assert error_signature(errors[0]) == error_signature(errors[1])
    assert "request_id" not in error_signature(errors[0])
