"""The project's fake Gradient API behind httpx.MockTransport (works under asyncio and trio), with knobs."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy
from gradient_async.fake_api import FakeGradientAPI

TOKEN = "sk-batch-SECRET-token"
BASE_URL = "http://gradient.test/api"
MODEL = "m" * 50
_FORCED = re.compile(r"!status:(\d{3})")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class FakeSleep:
    """Records waits without waiting (a checkpoint only)."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await anyio.lowlevel.checkpoint()


FakeServer = FakeGradientAPI
"""The batch tests' server is the project's one fake API (knobs: latency, storm, max_in_flight_ok,
retry_after, fail_every, gate; `!status:NNN` in a query forces that status; `handled` counts requests)."""


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def handler_client(handler: Callable[[httpx.Request], Any], **kwargs: Any) -> AsyncGradient:
    """A client whose requests `handler` answers (`httpx.MockTransport`), for tests that script the
    server themselves or run on trio's fake clock (the `make_client` fixture fakes sleeps instead)."""
    return AsyncGradient(
        access_token="t", workspace_id="w", base_url=BASE_URL, transport=httpx.MockTransport(handler), **kwargs
    )


@pytest.fixture
def server() -> FakeGradientAPI:
    return FakeGradientAPI()


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def make_client(server: FakeGradientAPI, fake_sleep: FakeSleep) -> Callable[..., AsyncGradient]:
    def make(**kwargs: Any) -> AsyncGradient:
        kwargs.setdefault("retry", RetryPolicy(sleep=fake_sleep))
        return AsyncGradient(
            access_token=TOKEN,
            workspace_id="ws",
            base_url=BASE_URL,
            transport=httpx.MockTransport(server.handler),
            **kwargs,
        )

    return make
