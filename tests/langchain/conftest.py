"""Fixtures for the LangChain integration tests.

The server fixtures and `fake_gradient` (the project's one fake API: `fake_gradient.answers[query] = ...`
scripts one prompt, `fake_gradient.extra` adds fields to every completion) come from the test kit
(`gradient_async.testing`); they are imported here so these tests run whether or not its pytest11
entry point is installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy
from gradient_async.fake_api import FakeGradientAPI
from gradient_async.testing import fake_gradient, gradient_server, gradient_server_url

__all__ = ["fake_gradient", "gradient_server", "gradient_server_url", "mock_client"]


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def mock_client(fake_gradient: FakeGradientAPI) -> AsyncIterator[AsyncGradient]:
    client = AsyncGradient(
        access_token="sk-lc-SECRET-token",
        workspace_id="ws_lc",
        base_url="http://gradient.test/api",
        transport=httpx.MockTransport(fake_gradient.handler),
        retry=RetryPolicy(max_retries=2, sleep=_no_sleep),
    )
    async with client:
        yield client
