"""Issue 11 §2: admission (bounded queue, per-token rates -> 429 + Retry-After), /health and /ready under
load, and heavy test-engine work off the event loop. No timing asserts: the engine is held on a gate."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import pytest

from gradient_async.engine import test_engine
from gradient_async.engine.base import GenerationRequest, GenerationResult
from gradient_async.server.admission import Admission
from gradient_async.server.errors import ApiError
from gradient_async.server.limits import DEFAULT_LIMITS, ServerLimits
from gradient_async.testing import TEST_TOKEN, TEST_WORKSPACE, GradientServer

HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}", "x-gradient-workspace-id": TEST_WORKSPACE}


def http(srv: GradientServer, token: str = TEST_TOKEN) -> httpx.AsyncClient:
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=srv.app), base_url="http://local", headers=headers)


def limited(srv: GradientServer, **changes: Any) -> None:
    fields = {name: getattr(DEFAULT_LIMITS, name) for name in DEFAULT_LIMITS.__dataclass_fields__}
    srv.state.settings.limits = ServerLimits(**{**fields, **changes})


class Gate:
    """Holds the engine's generate() until opened; says when a call is inside."""

    def __init__(self, engine: Any) -> None:
        self.inside = anyio.Event()
        self.open = anyio.Event()
        self._generate = engine.generate

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.inside.set()
        await self.open.wait()
        result: list[GenerationResult] = await self._generate(requests)
        return result


async def test_full_queue_is_429_while_health_and_ready_answer(
    gradient_server: GradientServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = gradient_server
    limited(srv, max_queue=1)
    engine = srv.state.engine
    while hasattr(engine, "inner"):  # the metrics and batching wrappers end at the engine that generates
        engine = engine.inner
    gate = Gate(engine)
    monkeypatch.setattr(engine, "generate", gate.generate)
    path = f"/api/models/{srv.base_model_ids[-1]}/complete"
    answers: list[int] = []
    async with http(srv) as client, anyio.create_task_group() as tg:

        async def first() -> None:
            answers.append((await client.post(path, json={"query": "held"})).status_code)

        tg.start_soon(first)
        with anyio.fail_after(10):
            await gate.inside.wait()
        # The engine is stuck: the queue (1) is full, yet liveness and readiness answer at once.
        busy = await client.post(path, json={"query": "second"})
        assert busy.status_code == 429 and "max_queue 1" in busy.json()["message"]
        assert int(busy.headers["Retry-After"]) >= 1 and "retry-after-ms" in busy.headers
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["queued"] == 1 and ready.json()["ready"] is False
        gate.open.set()
    assert answers == [200]
    async with http(srv) as client:
        assert (await client.get("/ready")).json() == {
            "ready": True,
            "engine": "test",
            "queued": 0,
            "maxQueue": 1,
            "requests": 1,
            "shuttingDown": False,
        }


async def test_health_answers_while_a_fine_tune_is_stuck_in_its_thread(
    gradient_server: GradientServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = gradient_server
    inside, release = threading.Event(), threading.Event()
    train = test_engine._train

    def stuck_train(*args: Any) -> Any:
        inside.set()
        release.wait(30)
        return train(*args)

    monkeypatch.setattr(test_engine, "_train", stuck_train)
    async with http(srv) as client:
        created = await client.post("/api/models", json={"model": {"baseModelId": srv.base_model_ids[-1], "name": "a"}})
        aid = created.json()["id"]
        results: list[int] = []
        async with anyio.create_task_group() as tg:

            async def tune() -> None:
                body = {"samples": [{"inputs": "word " * 5000}]}
                results.append((await client.post(f"/api/models/{aid}/fine-tune", json=body)).status_code)

            tg.start_soon(tune)
            assert await anyio.to_thread.run_sync(inside.wait, 10)
            # Training is blocked in a worker thread; the event loop still serves everyone else.
            assert (await client.get("/health")).status_code == 200
            other = await client.post(f"/api/models/{srv.base_model_ids[0]}/complete", json={"query": "hi"})
            assert other.status_code == 200
            release.set()
    assert results == [200]


async def test_per_token_request_rate(gradient_server: GradientServer) -> None:
    srv = gradient_server
    limited(srv, requests_per_minute=2)
    srv.state.settings.grant("other-token", TEST_WORKSPACE)
    path = f"/api/models/{srv.base_model_ids[-1]}/complete"
    async with http(srv) as client, http(srv, "other-token") as other:
        assert [(await client.post(path, json={"query": "q"})).status_code for _ in range(2)] == [200, 200]
        refused = await client.post(path, json={"query": "q"})
        assert refused.status_code == 429 and "requests_per_minute 2" in refused.json()["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 30
        assert (await other.post(path, json={"query": "q"})).status_code == 200  # per access token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_refill_on_a_fake_clock() -> None:
    clock = Clock()
    limits = ServerLimits(requests_per_minute=60, tokens_per_minute=600)
    admission = Admission(lambda: limits, clock=clock)
    admission.check("a", cost_tokens=500)
    with pytest.raises(ApiError) as info:
        admission.check("a", cost_tokens=500)  # 100 left; 400 more take 40 s at 10 tokens/s
    assert info.value.status_code == 429 and "tokens_per_minute" in info.value.message
    assert info.value.headers is not None and info.value.headers["Retry-After"] == "40"
    clock.now += 40
    admission.check("a", cost_tokens=500)
    clock.now += 60
    admission.check("a", cost_tokens=1600)  # more than a minute's worth: needs a full bucket, leaves a debt
    with pytest.raises(ApiError) as info:
        admission.check("a", cost_tokens=1)
    assert info.value.headers is not None and info.value.headers["Retry-After"] == "101"  # 1000 debt + 1
    admission.check("b", cost_tokens=600)  # another access token has its own buckets


def test_request_bucket_holds_one_minute() -> None:
    clock = Clock()
    admission = Admission(lambda: ServerLimits(requests_per_minute=3), clock=clock)
    for _ in range(3):
        admission.check("a")
    with pytest.raises(ApiError) as info:
        admission.check("a")
    assert info.value.headers is not None and info.value.headers["retry-after-ms"] == "20000"
    clock.now += 20
    admission.check("a")


def test_closing_refuses_with_503() -> None:
    admission = Admission(lambda: DEFAULT_LIMITS)
    admission.close()
    with pytest.raises(ApiError) as info:
        admission.check("a")
    assert info.value.status_code == 503 and "shutting down" in info.value.message


async def test_engine_work_holds_a_queue_place_until_done() -> None:
    admission = Admission(lambda: ServerLimits(max_queue=1))
    async with admission.admit("a"):
        assert admission.in_flight == 1
        with pytest.raises(ApiError):
            admission.check("b", engine_work=True)
        admission.check("b", engine_work=False)  # listing models needs no engine place
    assert admission.in_flight == 0
