"""Fixtures for the client's unit tests: a scripted fake API behind httpx.MockTransport, no network."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy

TOKEN = "sk-test-SECRET-token-123"
WORKSPACE = "ws_123"
BASE_URL = "http://gradient.test/api"
BASE_ID = "99148c6d-c2a0-4fbe-a4a7-e7c05bdb8a09_base_ml_model"
ADAPTER_ID = "11111111-2222-3333-4444-555555555555_model_adapter"


@dataclass
class FakeSleep:
    """Records the waits the retry loop asks for, without waiting."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


Responder = Callable[[httpx.Request], httpx.Response] | httpx.Response | Exception


@dataclass
class FakeAPI:
    """A scripted server: queue responses per (method, path); every request is recorded."""

    script: dict[tuple[str, str], list[Responder]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def add(self, method: str, path: str, *responders: Responder) -> None:
        self.script.setdefault((method, path), []).extend(responders)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.raw_path.split(b"?")[0].decode())
        queue = self.script.get(key)
        if not queue:
            return httpx.Response(404, json={"message": f"no route {key}"})
        responder = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(responder, Exception):
            raise responder
        if isinstance(responder, httpx.Response):
            return responder
        return responder(request)

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def make_client(api: FakeAPI, fake_sleep: FakeSleep) -> Iterator[Callable[..., AsyncGradient]]:
    def make(**kwargs: Any) -> AsyncGradient:
        kwargs.setdefault("retry", RetryPolicy(sleep=fake_sleep))
        return AsyncGradient(
            access_token=TOKEN,
            workspace_id=WORKSPACE,
            base_url=BASE_URL,
            transport=httpx.MockTransport(api.handler),
            **kwargs,
        )

    yield make


@pytest.fixture
async def client(make_client: Callable[..., AsyncGradient]) -> AsyncIterator[AsyncGradient]:
    async with make_client() as c:
        yield c
