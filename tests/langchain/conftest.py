"""Fixtures for the LangChain integration tests.

The server fixtures come from the test kit (`gradient_async.testing`); they are imported here so
these tests run whether or not its pytest11 entry point is installed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy
from gradient_async.testing import gradient_server, gradient_server_url

__all__ = ["FakeGradient", "fake_gradient", "gradient_server", "gradient_server_url", "mock_client"]


async def _no_sleep(_: float) -> None:
    return None


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class FakeGradient:
    """A scripted API behind httpx.MockTransport: completes by echoing, embeds by text length.

    `script[query]` overrides the answer for one prompt (a Response, or an async handler).
    """

    script: dict[str, httpx.Response | Handler] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content) if request.content else {}
        if request.url.path.endswith("/complete"):
            answer = self.script.get(body["query"])
            if isinstance(answer, httpx.Response):
                return answer
            if answer is not None:
                return await answer(request)
            return httpx.Response(
                200, json={"finishReason": "stop", "generatedOutput": f"echo: {body['query']}", **self.extra}
            )
        if "/embeddings/" in request.url.path:
            inputs = [item["input"] for item in body["inputs"]]
            # Answer in reverse order: the client must sort by `index`.
            data = [{"embedding": [float(len(t)), float(i)], "index": i} for i, t in enumerate(inputs)]
            return httpx.Response(200, json={"embeddings": data[::-1]})
        return httpx.Response(404, json={"message": "no route"})

    def bodies(self, suffix: str) -> list[dict[str, object]]:
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith(suffix)]


@pytest.fixture
def fake_gradient() -> FakeGradient:
    return FakeGradient()


@pytest.fixture
async def mock_client(fake_gradient: FakeGradient) -> AsyncIterator[AsyncGradient]:
    client = AsyncGradient(
        access_token="sk-lc-SECRET-token",
        workspace_id="ws_lc",
        base_url="http://gradient.test/api",
        transport=httpx.MockTransport(fake_gradient.handler),
        retry=RetryPolicy(max_retries=2, sleep=_no_sleep),
    )
    async with client:
        yield client
