"""Pool ownership, with_options, use after close, and the token never leaking."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import httpx
import pytest

from gradient_async import APIStatusError, AsyncGradient, ClientClosedError, RetryPolicy

from .conftest import ADAPTER_ID, BASE_URL, TOKEN, WORKSPACE, FakeAPI, FakeSleep


async def test_client_closes_its_own_pool(make_client: Callable[..., AsyncGradient]) -> None:
    client = make_client()
    http = client._pool.http
    async with client:
        pass
    assert http.is_closed and client.is_closed


async def test_user_http_client_is_never_closed(api: FakeAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(api.handler)) as http:
        async with AsyncGradient(access_token=TOKEN, workspace_id=WORKSPACE, base_url=BASE_URL, http_client=http):
            pass
        assert not http.is_closed


async def test_use_after_close_fails_loudly(make_client: Callable[..., AsyncGradient]) -> None:
    client = make_client()
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(ClientClosedError, match="closed"):
        await client.models.list()


async def test_with_options_shares_pool_and_limiter(make_client: Callable[..., AsyncGradient], api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json={"models": []}))
    client = make_client(max_concurrency=3)
    patient = client.with_options(timeout=600, max_retries=7)
    assert patient._pool is client._pool
    assert patient.config.retry.max_retries == 7 and client.config.retry.max_retries == 2
    assert patient.config.timeout.read == 600 and client.config.timeout.read == 120
    await patient.models.list()
    assert patient._pool.limiter is client._pool.limiter and client._pool.limiter.max_concurrency == 3
    await patient.aclose()  # a copy closes nothing
    assert not client.is_closed
    await client.aclose()
    assert patient.is_closed


async def test_with_options_keeps_custom_retry_fields(make_client: Callable[..., AsyncGradient]) -> None:
    client = make_client(retry=RetryPolicy(max_delay=1.5))
    assert client.with_options(max_retries=9).config.retry.max_delay == 1.5


def test_both_http_client_and_transport_is_an_error() -> None:
    from gradient_async import InputValidationError

    with pytest.raises(InputValidationError, match="either"):
        AsyncGradient(
            access_token="t",
            workspace_id="w",
            http_client=httpx.AsyncClient(),
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )


async def test_token_never_appears_in_reprs_errors_logs_or_traceback_locals(
    make_client: Callable[..., AsyncGradient], api: FakeAPI, fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    api.add(
        "POST",
        f"/api/models/{ADAPTER_ID}/complete",
        httpx.Response(503, json={"message": "busy"}),
        httpx.Response(401, json={"message": "bad token"}),
    )
    client = make_client(retry=RetryPolicy(max_retries=1, sleep=fake_sleep))
    assert TOKEN not in repr(client) and TOKEN not in str(client.config)
    with caplog.at_level(logging.DEBUG, logger="gradient_async"), pytest.raises(APIStatusError) as info:
        await client.completions.create(ADAPTER_ID, query="q")
    exc = info.value
    assert exc.request is not None and exc.request.headers["authorization"] == f"Bearer {TOKEN}"  # sent, but...
    texts = [str(exc), repr(exc), repr(exc.request), repr(exc.request.headers), caplog.text]
    texts.append("".join(traceback.format_exception(exc)))
    tb = exc.__traceback__
    while tb is not None:
        for name, value in tb.tb_frame.f_locals.items():
            texts.append(f"{name}={value!r}")
        tb = tb.tb_next
    for text in texts:
        assert TOKEN not in text
    await client.aclose()
