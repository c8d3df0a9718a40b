"""Service-grade options: per-call options on every method, raw responses and request ids,
with_options(default_headers), GRADIENT_LOG, NaN refused before the network, response size cap,
no private httpx API on the hot path."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gradient_async import APIResponseValidationError, AsyncGradient, GradientError, InternalServerError
from gradient_async._errors import ValidationError
from gradient_async._logs import setup_logging
from gradient_async.resources import AsyncAdapters, AsyncCompletions, AsyncEmbeddings, AsyncFineTunes, AsyncModels

from .conftest import ADAPTER_ID, BASE_ID, BASE_URL, FakeAPI

BASE = BASE_URL

COMPLETE = f"/api/models/{ADAPTER_ID}/complete"
OK = {"finishReason": "stop", "generatedOutput": "ok"}
MODELS = {"models": [{"id": BASE_ID, "name": "B", "slug": "b", "type": "baseModel", "capabilities": []}]}
PER_CALL = {"timeout", "max_retries", "extra_headers", "extra_query", "extra_body"}


@pytest.mark.parametrize("resource", [AsyncAdapters, AsyncCompletions, AsyncEmbeddings, AsyncFineTunes, AsyncModels])
def test_every_request_method_takes_the_per_call_options(resource: type) -> None:
    for name, method in inspect.getmembers(resource, inspect.iscoroutinefunction):
        if name.startswith("_") or name == "batch":
            continue
        missing = PER_CALL - set(inspect.signature(method).parameters)
        assert not missing, f"{resource.__name__}.{name} lacks {sorted(missing)}"


async def test_models_list_takes_max_retries(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(503), httpx.Response(503), httpx.Response(200, json=MODELS))
    with pytest.raises(InternalServerError):
        await client.models.list(max_retries=1)
    assert len(api.requests) == 2


async def test_extra_headers_query_and_body_reach_the_wire(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", COMPLETE, httpx.Response(200, json=OK))
    await client.completions.create(
        ADAPTER_ID,
        query="q",
        extra_headers={"x-trace": "t1"},
        extra_query={"debug": "1"},
        extra_body={"newField": True},
    )
    sent = api.requests[-1]
    assert sent.headers["x-trace"] == "t1" and sent.url.params["debug"] == "1"
    assert api.body()["newField"] is True and api.body()["query"] == "q"
    api.add("GET", "/api/models", httpx.Response(200, json=MODELS))
    await client.models.list()  # the per-call header was not kept
    assert "x-trace" not in api.requests[-1].headers


async def test_with_options_adds_default_headers(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json=MODELS))
    tagged = client.with_options(default_headers={"x-team": "search"})
    await tagged.models.list()
    assert api.requests[-1].headers["x-team"] == "search"
    assert api.requests[-1].headers["authorization"].startswith("Bearer ")
    await client.models.list()
    assert "x-team" not in api.requests[-1].headers


async def test_raw_response_and_request_id(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", COMPLETE, httpx.Response(503), httpx.Response(200, json=OK, headers={"x-request-id": "req-1"}))
    raw = await client.with_raw_response(client.completions.create, ADAPTER_ID, query="q")
    assert raw.status_code == 200 and raw.request_id == "req-1" and raw.retries_taken == 1
    assert raw.headers["content-type"] == "application/json"
    assert raw.parsed.generated_output == "ok" and raw.parse() is raw.parsed
    assert raw.parsed.request_id == "req-1"  # also on the plain result
    api.add("GET", "/api/models", httpx.Response(200, json=MODELS, headers={"x-request-id": "req-2"}))
    listed = await client.with_raw_response(client.models.list, only_base=True)
    assert listed.request_id == "req-2" and listed.parsed[0].id == BASE_ID


async def test_raw_response_of_a_call_that_sent_nothing(client: AsyncGradient) -> None:
    async def nothing() -> int:
        return 1

    with pytest.raises(GradientError, match="sent no request"):
        await client.with_raw_response(nothing)


def test_gradient_log_turns_on_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("gradient_async")
    before = (logger.level, list(logger.handlers))
    try:
        monkeypatch.setenv("GRADIENT_LOG", "debug")
        setup_logging()
        setup_logging()  # idempotent: one handler
        assert logger.level == logging.DEBUG
        assert sum(h.get_name() == "gradient_async.GRADIENT_LOG" for h in logger.handlers) == 1
        monkeypatch.setenv("GRADIENT_LOG", "info")
        setup_logging()
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before[0])
        logger.handlers[:] = before[1]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
async def test_nan_and_infinities_never_reach_the_network(client: AsyncGradient, api: FakeAPI, bad: float) -> None:
    with pytest.raises(ValidationError, match="temperature"):
        await client.completions.create(ADAPTER_ID, query="q", temperature=bad)
    with pytest.raises(ValidationError, match="JSON"):
        await client.completions.create(ADAPTER_ID, query="q", extra_body={"x": bad})
    with pytest.raises(ValidationError):
        await client.fine_tunes.create(ADAPTER_ID, samples=["x"], multiplier=bad)
    assert api.requests == []


async def test_response_size_cap(make_client: Callable[..., AsyncGradient], api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json=MODELS))
    async with make_client(max_response_bytes=20) as client:
        with pytest.raises(APIResponseValidationError, match="max_response_bytes"):
            await client.models.list()
    with pytest.raises(ValidationError, match="max_response_bytes"):
        make_client(max_response_bytes=0)


async def test_hot_path_calls_no_private_httpx_api(
    client: AsyncGradient, api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    stock = httpx.AsyncClient._transport_for_url

    def counting(self: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport:
        calls.append(url)
        return stock(self, url)

    monkeypatch.setattr(httpx.AsyncClient, "_transport_for_url", counting)
    api.add("POST", COMPLETE, httpx.Response(200, json=OK))
    await client.completions.create(ADAPTER_ID, query="q")
    assert calls == []


async def test_size_cap_and_raw_response_with_a_users_http_client(api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json=MODELS, headers={"x-request-id": "r9"}))
    async with httpx.AsyncClient(transport=httpx.MockTransport(api.handler)) as http:
        small = AsyncGradient(
            access_token="t", workspace_id="w", base_url=BASE, http_client=http, max_response_bytes=20
        )
        with pytest.raises(APIResponseValidationError, match="max_response_bytes"):
            await small.models.list()
        client = AsyncGradient(access_token="t", workspace_id="w", base_url=BASE, http_client=http)
        raw = await client.with_raw_response(client.models.list)
        assert raw.request_id == "r9" and raw.parsed[0].id == BASE_ID
        await client.aclose()
        assert not http.is_closed  # a user's http_client is never closed by us


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extra_headers": {"x": 1}}, "extra_headers"),
        ({"extra_headers": {"x-name": "caf\u00e9"}}, "non-ASCII character at position 3"),
        ({"extra_headers": {"x-split": "a\r\nX-Evil: 1"}}, "line break at position 1"),
        ({"extra_headers": {"Connection": "close"}}, "set by the client"),
        ({"extra_headers": {"x-nul": "a\x00"}}, "x-nul"),
        ({"extra_headers": {"bad name": "v"}}, "not a valid HTTP header name"),
        ({"extra_headers": {"Content-Length": "1"}}, "set by the client"),
        ({"extra_headers": {"transfer-encoding": "chunked"}}, "set by the client"),
        ({"extra_headers": {"Host": "evil.test"}}, "set by the client"),
        ({"extra_query": {"q": "caf\u00e9"}}, None),
        ({"extra_query": {"x": None}}, "extra_query"),
        ({"extra_body": ["x"]}, "extra_body"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
async def test_bad_per_call_options_fail_before_the_network(
    client: AsyncGradient, api: FakeAPI, kwargs: dict[str, Any], match: str | None
) -> None:
    if match is None:  # allowed: query values are percent-encoded, not header-checked
        await client.completions.create(ADAPTER_ID, query="q", **kwargs)
        return
    with pytest.raises(ValidationError, match=match):
        await client.completions.create(ADAPTER_ID, query="q", **kwargs)
    assert api.requests == []


def test_bad_default_headers_fail_at_construction_and_in_copies() -> None:
    with pytest.raises(ValidationError, match="line break at position 1"):
        AsyncGradient(access_token="t", workspace_id="w", base_url=BASE, default_headers={"x-a": "1\n2"})
    client = AsyncGradient(access_token="t", workspace_id="w", base_url=BASE)
    with pytest.raises(ValidationError, match="Transfer-Encoding"):
        client.with_options(default_headers={"Transfer-Encoding": "chunked"})


@pytest.mark.parametrize("where", ["default_headers", "extra_headers"])
@pytest.mark.parametrize("secret", ["Bearer SECRET-123\n", "SECRET-123\u00e9", "SECRET-123\r\nX: y"])
async def test_a_refused_header_value_is_never_quoted(client: AsyncGradient, where: str, secret: str) -> None:
    """Header values carry credentials: the error says what is wrong and where, not the value."""
    with pytest.raises(ValidationError) as caught:
        if where == "default_headers":
            AsyncGradient(access_token="t", workspace_id="w", base_url=BASE, default_headers={"Authorization": secret})
        else:
            await client.models.list(extra_headers={"X-Api-Key": secret})
    assert "SECRET" not in str(caught.value) and "SECRET" not in repr(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"access_token": "SECRET-123\n"},
            r"access_token \(or GRADIENT_ACCESS_TOKEN\) contains a line break .* trailing",
        ),
        ({"access_token": "SECRET-123\u00e9"}, "access_token .* non-ASCII"),
        ({"workspace_id": "ws\r\n"}, "workspace_id .* line break"),
    ],
)
def test_credentials_that_cannot_be_sent_fail_at_construction(kwargs: dict[str, str], match: str) -> None:
    settings = {"access_token": "t", "workspace_id": "w", **kwargs}
    with pytest.raises(ValidationError, match=match) as caught:
        AsyncGradient(base_url=BASE, **settings)
    assert "SECRET" not in str(caught.value)


async def test_default_headers_replace_case_insensitively(api: FakeAPI) -> None:
    """A default header named in another case replaces the client's own (one header, not two)."""
    client = AsyncGradient(
        access_token="t", workspace_id="w", base_url=BASE, transport=api.transport(), default_headers={"x-team": "a"}
    )
    async with client:
        copy = client.with_options(default_headers={"X-Team": "b", "user-agent": "mine/1.0"})
        await copy.models.list()
    sent = api.requests[-1].headers
    assert sent.get_list("x-team") == ["b"] and sent.get_list("user-agent") == ["mine/1.0"]
    assert sent.get_list("authorization") == ["Bearer t"]
