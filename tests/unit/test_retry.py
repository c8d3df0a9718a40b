"""The retry loop: what is retried, how long it waits, and when it stops."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable

import httpx
import pytest

from gradient_async import (
    APIConnectionError,
    AsyncGradient,
    Hooks,
    InputValidationError,
    InternalServerError,
    RateLimitError,
    RetryEvent,
    RetryPolicy,
)
from gradient_async._errors import parse_retry_after

from .conftest import ADAPTER_ID, FakeAPI, FakeSleep

COMPLETE = f"/api/models/{ADAPTER_ID}/complete"
FINE_TUNE = f"/api/models/{ADAPTER_ID}/fine-tune"
OK = httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "ok"})
FT_OK = httpx.Response(200, json={"numberOfTrainableTokens": 1, "sumLoss": 1.0})


async def test_503_twice_then_success(client: AsyncGradient, api: FakeAPI, fake_sleep: FakeSleep) -> None:
    api.add("POST", COMPLETE, httpx.Response(503), httpx.Response(503), OK)
    out = await client.completions.create(ADAPTER_ID, query="q")
    assert out.generated_output == "ok"
    assert len(api.requests) == 3
    assert len(fake_sleep.waits) == 2
    # full jitter under the exponential ceiling: 0.5 then 1.0
    assert 0 <= fake_sleep.waits[0] <= 0.5 and 0 <= fake_sleep.waits[1] <= 1.0


@pytest.mark.parametrize(
    ("failure", "retried"),
    [
        (httpx.Response(408), True),
        (httpx.Response(409), True),
        (httpx.Response(429), True),
        (httpx.Response(500), True),
        (httpx.Response(502), True),
        (httpx.Response(504), True),
        (httpx.Response(400), False),
        (httpx.Response(404), False),
        (httpx.Response(422), False),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
    ],
)
async def test_what_is_retried_for_idempotent_calls(
    client: AsyncGradient, api: FakeAPI, failure: httpx.Response | Exception, retried: bool
) -> None:
    api.add("POST", COMPLETE, failure, OK)
    if retried:
        await client.completions.create(ADAPTER_ID, query="q")
        assert len(api.requests) == 2
    else:
        with pytest.raises(Exception):  # noqa: B017 - the class is tested in test_errors
            await client.completions.create(ADAPTER_ID, query="q")
        assert len(api.requests) == 1


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize(
    ("make_headers", "minimum"),
    [
        (lambda: {"retry-after": "3"}, 3.0),
        (lambda: {"retry-after": "2.5"}, 2.5),
        (lambda: {"retry-after-ms": "1500"}, 1.5),
        # an HTTP date has second resolution; built when the test runs, not at collection
        (lambda: {"retry-after": _http_date(5)}, 3.5),
    ],
    ids=["seconds", "float-seconds", "milliseconds", "http-date"],
)
async def test_429_waits_at_least_retry_after(
    client: AsyncGradient,
    api: FakeAPI,
    fake_sleep: FakeSleep,
    make_headers: Callable[[], dict[str, str]],
    minimum: float,
) -> None:
    api.add("POST", COMPLETE, httpx.Response(429, headers=make_headers()), OK)
    await client.completions.create(ADAPTER_ID, query="q")
    assert len(fake_sleep.waits) == 1
    assert fake_sleep.waits[0] >= minimum
    assert fake_sleep.waits[0] <= minimum * 1.5 + 1.5


def test_retry_after_adds_jitter_so_waiters_spread() -> None:
    policy = RetryPolicy()
    error = RateLimitError(
        "slow down",
        response=httpx.Response(429, headers={"retry-after": "2"}, request=httpx.Request("GET", "http://x")),
        body=None,
    )
    rng = random.Random(7)
    waits = {round(policy.compute_wait(0, error, rng), 6) for _ in range(50)}
    assert min(waits) >= 2.0 and len(waits) > 40


def test_parse_retry_after_forms() -> None:
    now = time.time()
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after": "0.25"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


async def test_retry_after_beyond_cap_is_not_waited_for(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", COMPLETE, httpx.Response(429, headers={"retry-after": "3600"}), OK)
    with pytest.raises(RateLimitError) as info:
        await client.completions.create(ADAPTER_ID, query="q")
    assert info.value.retry_after == 3600
    assert len(api.requests) == 1


async def test_attempt_budget_is_respected(client: AsyncGradient, api: FakeAPI, fake_sleep: FakeSleep) -> None:
    api.add("POST", COMPLETE, httpx.Response(503))
    with pytest.raises(InternalServerError) as info:
        await client.completions.create(ADAPTER_ID, query="q")
    assert len(api.requests) == 3  # 1 + max_retries=2
    assert info.value.retries_taken == 2


async def test_max_retries_zero_disables_retrying(make_client: Callable[..., AsyncGradient], api: FakeAPI) -> None:
    api.add("POST", COMPLETE, httpx.Response(503), OK)
    async with make_client(max_retries=0) as client:
        with pytest.raises(InternalServerError):
            await client.completions.create(ADAPTER_ID, query="q")
    assert len(api.requests) == 1


async def test_per_call_override(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", COMPLETE, httpx.Response(503))
    with pytest.raises(InternalServerError):
        await client.completions.create(ADAPTER_ID, query="q", max_retries=5)
    assert len(api.requests) == 6


async def test_deadline_stops_before_a_wait_would_cross_it(
    make_client: Callable[..., AsyncGradient], api: FakeAPI, fake_sleep: FakeSleep
) -> None:
    api.add("POST", COMPLETE, httpx.Response(429, headers={"retry-after": "4"}), OK)
    async with make_client(retry=RetryPolicy(max_retries=5, deadline=2.0, sleep=fake_sleep)) as client:
        with pytest.raises(RateLimitError):
            await client.completions.create(ADAPTER_ID, query="q")
    assert len(api.requests) == 1 and fake_sleep.waits == []


async def test_fine_tune_is_not_retried_after_it_may_have_reached_the_server(
    client: AsyncGradient, api: FakeAPI
) -> None:
    api.add("POST", FINE_TUNE, httpx.Response(503), FT_OK)
    with pytest.raises(InternalServerError):
        await client.fine_tunes.create(ADAPTER_ID, samples=["x"])
    assert len(api.requests) == 1


async def test_fine_tune_read_timeout_is_not_retried(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", FINE_TUNE, httpx.ReadTimeout("slow"), FT_OK)
    with pytest.raises(APIConnectionError):
        await client.fine_tunes.create(ADAPTER_ID, samples=["x"])
    assert len(api.requests) == 1


async def test_fine_tune_is_retried_when_it_never_left(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", FINE_TUNE, httpx.ConnectError("refused"), FT_OK)
    await client.fine_tunes.create(ADAPTER_ID, samples=["x"])
    assert len(api.requests) == 2


async def test_fine_tune_is_retried_on_429(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", FINE_TUNE, httpx.Response(429, headers={"retry-after": "1"}), FT_OK)
    await client.fine_tunes.create(ADAPTER_ID, samples=["x"])
    assert len(api.requests) == 2


async def test_fine_tune_opt_in_retries(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", FINE_TUNE, httpx.Response(503), FT_OK)
    await client.fine_tunes.create(ADAPTER_ID, samples=["x"], idempotent=True)
    assert len(api.requests) == 2


async def test_create_adapter_is_not_retried(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", "/api/models", httpx.Response(502), httpx.Response(200, json={"id": ADAPTER_ID}))
    with pytest.raises(InternalServerError):
        await client.adapters.create(base_model_id="b", name="n")
    assert len(api.requests) == 1


async def test_retry_hook_and_debug_log(client: AsyncGradient, api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.add("POST", COMPLETE, httpx.Response(503), OK)
    events: list[RetryEvent] = []
    with caplog.at_level(logging.DEBUG, logger="gradient_async"):
        await client.with_options(hooks=Hooks(on_retry=[events.append])).completions.create(ADAPTER_ID, query="q")
    assert [e.attempt for e in events] == [1]
    assert isinstance(events[0].error, InternalServerError)
    retry_lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retry_lines) == 1
    assert "attempt=1" in retry_lines[0] and "status=503" in retry_lines[0] and "wait=" in retry_lines[0]


def test_policy_validation() -> None:
    with pytest.raises(InputValidationError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(InputValidationError, match="deadline"):
        RetryPolicy(deadline=0)


async def test_per_call_max_retries_is_checked_every_time(client: AsyncGradient) -> None:
    """A cached policy for max_retries=1 must not let True or 1.0 through later."""
    await client.models.list(max_retries=1)
    for bad in (True, 1.0):
        with pytest.raises(InputValidationError, match="max_retries"):
            await client.models.list(max_retries=bad)  # type: ignore[arg-type]
