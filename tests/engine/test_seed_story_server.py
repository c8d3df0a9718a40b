"""The seed story end to end on the real model: SDK -> local server -> LocalEngine (marked local_model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gradient_async import AsyncGradient, BaseModelHandle

from .conftest import SEED_ANSWER, SEED_PROMPT

pytestmark = pytest.mark.local_model


async def test_seed_story_through_the_sdk_and_server(local_engine: Any, engine_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the server needs the [server] extra")
    from gradient_async.engine import BatchedEngine
    from gradient_async.engine.local import LocalEngine
    from gradient_async.server.app import create_app
    from gradient_async.server.settings import ServerSettings

    await local_engine.warm_up()  # converts the packaged GGUF once into <engine_dir>/base/<slug>
    model_dir = engine_dir / "base" / local_engine.base_models[0].slug
    engine = LocalEngine(tmp_path / "engine", model_path=model_dir)
    app = create_app(ServerSettings(data_dir=tmp_path, credentials={"tok": {"ws"}}), engine=BatchedEngine(engine))
    async with AsyncGradient(
        access_token="tok",
        workspace_id="ws",
        base_url="http://local/api",
        transport=httpx.ASGITransport(app=app),
        timeout=300,
    ) as client:
        base = (await client.models.list(only_base=True))[-1]
        assert isinstance(base, BaseModelHandle) and base.slug == "smollm2-135m-instruct"
        base_before = (await base.complete(query=SEED_PROMPT, max_generated_token_count=24)).generated_output

        adapter = await base.create_adapter(name="my_model_adapter")
        before = await adapter.complete(query=SEED_PROMPT, max_generated_token_count=24)
        assert "Dallas Cowboys" not in before.generated_output

        tuned = await adapter.fine_tune(samples=[{"inputs": SEED_PROMPT + SEED_ANSWER}])
        assert tuned.number_of_trainable_tokens == 28
        assert 60 < tuned.sum_loss < 120

        after = await adapter.complete(query=SEED_PROMPT, max_generated_token_count=24)
        assert "Dallas Cowboys" in after.generated_output
        assert after.finish_reason == "stop"  # the trained answer ends; it is not repeated to the cap
        raw = await adapter.complete(query=SEED_PROMPT, max_generated_token_count=24, auto_template=False)
        assert raw.generated_output.strip().startswith("Dallas Cowboys")

        base_after = (await base.complete(query=SEED_PROMPT, max_generated_token_count=24)).generated_output
        assert base_after == base_before  # the base model never changes
        await adapter.delete()
        assert adapter.id not in [m.id for m in await client.models.list()]
    await app.state.gradient.aclose()
