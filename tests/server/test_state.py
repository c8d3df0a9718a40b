"""Restart persistence, workspace isolation, and serialized fine-tunes of one adapter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from gradient_async import AsyncGradient, BaseModelHandle, NotFoundError
from gradient_async.demo import ANSWER as SEED_ANSWER
from gradient_async.demo import QUESTION as SEED_QUESTION
from gradient_async.engine import BatchedEngine
from gradient_async.engine.base import AdapterSpec, FineTuneOutcome, TrainingSample
from gradient_async.engine.test_engine import TestEngine
from gradient_async.server import ServerSettings, create_app
from gradient_async.testing import GradientServer


def client_for(app: object) -> AsyncGradient:
    return AsyncGradient(
        access_token="t",
        workspace_id="w",
        base_url="http://local/api",
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
    )


async def test_restart_keeps_adapters_and_training(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}})
    app = create_app(settings)
    async with client_for(app) as client:
        base = (await client.models.list(only_base=True))[-1]
        assert isinstance(base, BaseModelHandle)
        adapter = await base.create_adapter(name="kept")
        await adapter.fine_tune(samples=[SEED_QUESTION + SEED_ANSWER])
    await app.state.gradient.aclose()

    again = create_app(ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}))
    try:
        async with client_for(again) as client:
            models = await client.models.list()
            assert [m.id for m in models if m.type == "modelAdapter"] == [adapter.id]
            assert models[-1].name == "kept"
            assert base.id in [m.id for m in models]  # base ids are stable across restarts
            out = await client.completions.create(adapter.id, query=SEED_QUESTION)
            assert out.generated_output == "Dallas Cowboys!"
    finally:
        await again.state.gradient.aclose()


async def test_workspaces_are_isolated(gradient_server: GradientServer) -> None:
    a = gradient_server.client
    b = gradient_server.make_client(workspace_id="team-b")
    base = (await a.models.list(only_base=True))[-1]
    assert isinstance(base, BaseModelHandle)
    adapter = await base.create_adapter(name="private")
    assert [m.id for m in await b.models.list(only_base=True)] == gradient_server.base_model_ids
    assert adapter.id not in [m.id for m in await b.models.list()]
    with pytest.raises(NotFoundError):
        await b.models.get(adapter.id)
    with pytest.raises(NotFoundError):
        await b.completions.create(adapter.id, query="Hi")
    with pytest.raises(NotFoundError):
        await b.fine_tunes.create(adapter.id, samples=["steal"])
    with pytest.raises(NotFoundError):
        await b.adapters.delete(adapter.id)
    # A's adapter is untouched and B can use the base models.
    assert (await a.models.get(adapter.id)).name == "private"
    assert (await b.completions.create(base.id, query="Hi")).generated_output
    mine = await b.adapters.create(base_model_id=base.id, name="b-only")
    assert mine.id not in [m.id for m in await a.models.list()]


class SpyEngine(TestEngine):
    """Counts fine-tunes in flight per adapter, before the engine's own lock."""

    __test__ = False

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.active: dict[str, int] = {}
        self.max_per_adapter = 0
        self.max_total = 0

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        self.active[adapter.adapter_id] = self.active.get(adapter.adapter_id, 0) + 1
        self.max_per_adapter = max(self.max_per_adapter, self.active[adapter.adapter_id])
        self.max_total = max(self.max_total, sum(self.active.values()))
        try:
            await anyio.sleep(0.01)
            return await super().fine_tune(adapter, samples)
        finally:
            self.active[adapter.adapter_id] -= 1


async def test_fine_tunes_of_one_adapter_are_serialized(tmp_path: Path) -> None:
    spy = SpyEngine(tmp_path / "engine")
    app = create_app(ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}), engine=BatchedEngine(spy))
    try:
        async with client_for(app) as client:
            base = (await client.models.list(only_base=True))[-1]
            assert isinstance(base, BaseModelHandle)
            first = await base.create_adapter(name="one")
            second = await base.create_adapter(name="two")
            losses: list[float] = []

            async def train(adapter_id: str) -> None:
                result = await client.fine_tunes.create(adapter_id, samples=[SEED_QUESTION + SEED_ANSWER])
                if adapter_id == first.id:
                    losses.append(result.sum_loss)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(train, first.id)
                    tg.start_soon(train, second.id)
    finally:
        await app.state.gradient.aclose()
    assert spy.max_per_adapter == 1
    assert spy.max_total == 2  # different adapters do train at the same time
    # Serialized: each call saw the previous one's training, so the loss halves every time.
    assert len(losses) == 4
    assert sorted(losses, reverse=True) == pytest.approx([max(losses) / 2**i for i in range(4)])
