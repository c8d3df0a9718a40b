"""Fixtures for the client's unit tests: the project's fake API behind httpx.MockTransport, no network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy
from gradient_async.fake_api import FakeGradientAPI

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


FakeAPI = FakeGradientAPI
"""The unit tests' scripted server is the project's one fake API: `api.add(method, path, *responses)`,
`api.requests`, `api.body(i)`; routes nobody scripted get the fake's contract-shaped answers."""


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def api() -> FakeGradientAPI:
    return FakeGradientAPI()


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
