"""The server on a real loopback socket (`gradient_server_url`): our SDK over aiohttp, and raw clients."""

from __future__ import annotations

import aiohttp
import httpx
import pytest

from gradient_async import AsyncGradient, BaseModelHandle, RateLimitError
from gradient_async.demo import ANSWER as SEED_ANSWER
from gradient_async.demo import QUESTION as SEED_QUESTION
from gradient_async.testing import GradientServerURL


async def test_seed_story_over_a_socket(gradient_server_url: GradientServerURL) -> None:
    srv = gradient_server_url
    assert srv.url.startswith("http://127.0.0.1:") and srv.url.endswith("/api")
    async with AsyncGradient(access_token=srv.token, workspace_id=srv.workspace, base_url=srv.url) as client:
        base = (await client.models.list(only_base=True))[-1]
        assert isinstance(base, BaseModelHandle)
        adapter = await base.create_adapter(name="my_model_adapter")
        assert "Dallas" not in (await adapter.complete(query=SEED_QUESTION)).generated_output
        result = await adapter.fine_tune(samples=[SEED_QUESTION + SEED_ANSWER])
        assert result.number_of_trainable_tokens == 22
        assert (await adapter.complete(query=SEED_QUESTION)).generated_output == "Dallas Cowboys!"
        await adapter.delete()
    assert [c.status for c in srv.calls] == [200] * 6


async def test_raw_aiohttp_and_sync_httpx(gradient_server_url: GradientServerURL) -> None:
    srv = gradient_server_url
    headers = {"Authorization": f"Bearer {srv.token}", "x-gradient-workspace-id": srv.workspace}
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{srv.url}/models", params={"onlyBase": "True", "capability": "any"}, headers=headers
        ) as r:
            assert r.status == 200
            assert [m["slug"] for m in (await r.json())["models"]] == [
                "gradient-test-model-mini",
                "gradient-test-model",
            ]
        async with session.get(f"{srv.url}/models") as r:
            assert r.status == 401 and "message" in await r.json()
    async with httpx.AsyncClient() as http:
        health = await http.get(srv.root_url + "/health")
    assert health.json()["status"] == "ok"


async def test_rate_limit_over_socket(gradient_server_url: GradientServerURL) -> None:
    srv = gradient_server_url
    srv.faults.rate_limit_rps = 0.01  # a burst of one request, then one every 100 s

    async with AsyncGradient(
        access_token=srv.token, workspace_id=srv.workspace, base_url=srv.url, max_retries=3
    ) as client:
        base_id = srv.base_model_ids[-1]
        await client.completions.create(base_id, query="first", max_generated_token_count=4)
        with pytest.raises(RateLimitError) as info:
            # Retry-After (~100 s) exceeds the policy's max_retry_after: raised at once, not waited for.
            await client.completions.create(base_id, query="second", max_generated_token_count=4)
    assert info.value.retry_after is not None and 50 < info.value.retry_after <= 100
    assert [c.status for c in srv.calls] == [200, 429]
