"""Status → error class, messages from the server, and bodies that break the contract."""

from __future__ import annotations

import httpx
import pytest

from gradient_async import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncGradient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GradientError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)

from .conftest import ADAPTER_ID, FakeAPI

COMPLETE = f"/api/models/{ADAPTER_ID}/complete"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
        (418, APIStatusError),
    ],
)
async def test_status_maps_to_class(client: AsyncGradient, api: FakeAPI, status: int, cls: type[Exception]) -> None:
    api.add(
        "POST",
        COMPLETE,
        httpx.Response(
            status,
            json={"message": "adapter unknown", "type": "unknownModelAdapter"},
            headers={"x-request-id": "req-9"},
        ),
    )
    with pytest.raises(cls) as info:
        await client.with_options(max_retries=0).completions.create(ADAPTER_ID, query="q")
    exc = info.value
    assert type(exc) is cls
    assert isinstance(exc, APIStatusError) and isinstance(exc, GradientError)
    assert exc.status_code == status
    assert exc.message.startswith("adapter unknown")
    assert exc.error_type == "unknownModelAdapter"
    assert exc.request_id == "req-9"
    assert exc.body == {"message": "adapter unknown", "type": "unknownModelAdapter"}
    assert "adapter unknown" in str(exc) and "req-9" in str(exc)


async def test_auth_errors_carry_a_hint(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(401, json={"message": "invalid token"}))
    with pytest.raises(AuthenticationError, match="GRADIENT_ACCESS_TOKEN"):
        await client.models.list()


async def test_text_error_body_becomes_the_message(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(400, text="<html>Bad things</html>"))
    with pytest.raises(BadRequestError) as info:
        await client.models.list()
    assert info.value.message == "<html>Bad things</html>"
    assert info.value.body == "<html>Bad things</html>"


async def test_empty_error_body_uses_reason_phrase(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(404))
    with pytest.raises(NotFoundError, match="Not Found"):
        await client.models.list()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html><body>Gateway says hi</body></html>"),
        httpx.Response(200, text='{"finishReason": "stop", "generatedOut'),
        httpx.Response(200, json={"finishReason": "stop"}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, content=b""),
    ],
    ids=["html", "truncated", "missing-field", "wrong-shape", "empty"],
)
async def test_bad_2xx_bodies_raise_response_validation_error(
    client: AsyncGradient, api: FakeAPI, response: httpx.Response
) -> None:
    api.add("POST", COMPLETE, response)
    with pytest.raises(APIResponseValidationError) as info:
        await client.completions.create(ADAPTER_ID, query="q")
    assert info.value.status_code == 200
    assert "/complete" in str(info.value)


async def test_unknown_model_type_is_a_response_validation_error(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json={"models": [{"id": "x", "type": "spaceship"}]}))
    with pytest.raises(APIResponseValidationError, match="spaceship"):
        await client.models.list()


async def test_transport_errors_are_typed(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.ConnectError("refused"))
    api.add("GET", "/api/embeddings", httpx.ReadTimeout("slow"))
    api.add("DELETE", f"/api/models/{ADAPTER_ID}", httpx.RemoteProtocolError("peer closed"))
    quick = client.with_options(max_retries=0)
    with pytest.raises(APIConnectionError) as conn:
        await quick.models.list()
    assert not isinstance(conn.value, APITimeoutError) and conn.value.sent is False
    assert isinstance(conn.value.__cause__, httpx.ConnectError)
    with pytest.raises(APITimeoutError) as timeout:
        await quick.embeddings.list()
    assert timeout.value.sent is True
    with pytest.raises(APIConnectionError, match="peer closed"):
        await quick.adapters.delete(ADAPTER_ID)


def test_a_hopeless_streak_needs_the_same_failure_in_a_row() -> None:
    """Only identical errors no retry can fix count; a success or any other error starts over."""
    from gradient_async._errors import HopelessStreak, make_status_error

    def not_found(model: str, request_id: str) -> NotFoundError:
        response = httpx.Response(
            404,
            json={"message": f"no model {model!r}", "type": "unknownModelAdapter"},
            headers={"x-request-id": request_id},
            request=httpx.Request("POST", "http://x/api/models/m/complete"),
        )
        error = make_status_error(response)
        assert isinstance(error, NotFoundError)
        return error

    streak = HopelessStreak(3)
    assert not streak.add(not_found("a", "r1")) and not streak.add(not_found("a", "r2"))
    assert not streak.add(None)  # a success resets it
    assert not streak.add(not_found("a", "r3")) and not streak.add(not_found("b", "r4"))  # another model
    assert not streak.add(not_found("b", "r5"))
    assert streak.add(not_found("b", "r6"))  # request ids differ; the failure is the same
    unfixable = APIConnectionError("refused", sent=False)
    assert not HopelessStreak(1).add(APIConnectionError("reset", sent=True))  # may have arrived: not hopeless
    assert HopelessStreak(1).add(unfixable)
