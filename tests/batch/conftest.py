"""A stateful fake Gradient API behind httpx.MockTransport (works under asyncio and trio), with knobs."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy

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


@dataclass
class FakeServer:
    """Knobs: `latency` (real seconds), `max_in_flight_ok` (more concurrent requests get 429),
    `storm` (the first `storm` complete requests get 429), `retry_after` header value,
    `fail_every` (every n-th request is a 503), `!status:NNN` inside a query forces that status."""

    latency: float = 0.0
    max_in_flight_ok: int | None = None
    storm: int = 0
    retry_after: tuple[str, str] | None = ("Retry-After", "0.002")
    fail_every: int = 0
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    queries: Counter[str] = field(default_factory=Counter)
    gate: anyio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.latency:
                await anyio.sleep(self.latency)
            response = self._answer(request)
        finally:
            self.in_flight -= 1
        self.statuses[response.status_code] += 1
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.storm > 0:
            self.storm -= 1
            return self._too_many()
        if self.max_in_flight_ok is not None and self.in_flight > self.max_in_flight_ok:
            return self._too_many()
        if self.fail_every and self.requests % self.fail_every == 0:
            return httpx.Response(503, json={"message": "busy"})
        body = json.loads(request.content)
        if request.url.path.startswith("/api/embeddings/"):
            vectors = [{"embedding": [float(len(i["input"]))], "index": n} for n, i in enumerate(body["inputs"])]
            return httpx.Response(200, json={"embeddings": vectors[::-1]})
        query = body["query"]
        self.queries[query] += 1
        forced = _FORCED.search(query)
        if forced:
            return httpx.Response(int(forced.group(1)), json={"message": "forced", "type": "failed"})
        return httpx.Response(200, json={"finishReason": "length", "generatedOutput": "echo: " + query})

    def _too_many(self) -> httpx.Response:
        headers = dict([self.retry_after]) if self.retry_after else {}
        return httpx.Response(429, json={"message": "slow down"}, headers=headers)


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def make_client(server: FakeServer, fake_sleep: FakeSleep) -> Callable[..., AsyncGradient]:
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
