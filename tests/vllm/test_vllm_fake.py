"""The vLLM engine against a fake vLLM child (fast): request mapping, versioned LoRA loading,
deletion, embeddings fallback, and a child that fails to start or dies."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import FakeTrainer

from gradient_async.engine import AdapterSpec, BaseModelSpec, EngineError, GenerationRequest, TrainingSample
from gradient_async.engine import TrainingSegment as Seg
from gradient_async.engine._vllm_wire import completion_body, completion_result, finish_reason
from gradient_async.engine.vllm import VllmEngine

MODEL = BaseModelSpec("tok-model", "Tok Model")
SAMPLE = [TrainingSample((Seg("hi the answer"),))]


def make_engine(tmp_path: Path, python: Path, model_dir: Path, **kwargs: object) -> VllmEngine:
    return VllmEngine(
        tmp_path / "vllm",
        trainer=FakeTrainer(tmp_path / "trainer"),
        model=MODEL,
        model_dir=model_dir,
        python=python,
        startup_timeout_s=60,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def engine(tmp_path: Path, fake_vllm_python: Path, tokenizer_dir: Path) -> AsyncIterator[VllmEngine]:
    engine = make_engine(tmp_path, fake_vllm_python, tokenizer_dir)
    try:
        yield engine
    finally:
        await engine.aclose()


async def fake_log(engine: VllmEngine) -> dict[str, object]:
    assert engine.child is not None
    async with httpx.AsyncClient() as http:
        data: dict[str, object] = (await http.get(f"{engine.child.url}/fake/log")).json()
        return data


def echoed(text: str) -> dict[str, object]:
    body: dict[str, object] = json.loads(text[text.index("echo:") + 5 :])
    return body


def test_completion_body_maps_the_contract() -> None:
    r = GenerationRequest("m", "Q", max_new_tokens=5, temperature=0.7, top_k=40, top_p=0.9, guidance_choices=("a", "b"))
    body = completion_body(r, model="lora-x", prompt="<t>Q", templated=True, max_tokens=64)
    assert body == {
        "model": "lora-x",
        "prompt": "<t>Q",
        "max_tokens": 5,
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "n": 1,
        "stream": False,
        "add_special_tokens": False,
        "structured_outputs": {"choice": ["a", "b"]},
    }
    greedy = completion_body(
        GenerationRequest("m", "Q", temperature=0.7, top_k=1), model="m", prompt="Q", templated=False, max_tokens=64
    )
    assert (greedy["temperature"], greedy["max_tokens"], "top_k" in greedy, "add_special_tokens" in greedy) == (
        0.0,
        64,
        False,
        False,
    )
    assert [finish_reason(x) for x in ("length", "stop", "abort", None)] == ["length", "stop", "stop", "stop"]
    with pytest.raises(EngineError, match="unexpected completion"):
        completion_result({"choices": []})
    counted = completion_result(
        {"choices": [{"text": "x", "finish_reason": "length"}], "usage": {"completion_tokens": 7}}
    )
    assert (counted.text, counted.finish_reason, counted.generated_tokens) == ("x", "length", 7)
    assert (
        completion_result({"choices": [{"text": "x"}], "usage": {"completion_tokens": True}}).generated_tokens is None
    )


async def test_completions_template_and_finish_reasons(engine: VllmEngine) -> None:
    await engine.warm_up()
    assert engine.readiness() is None
    out = await engine.complete(GenerationRequest(MODEL.slug, "hi", max_new_tokens=7))
    sent = echoed(out.text)
    assert sent["prompt"] == "<|im_start|> user hi <|im_end|> <|im_start|> assistant "
    assert (sent["model"], sent["max_tokens"], sent["add_special_tokens"]) == (MODEL.slug, 7, False)
    raw = echoed((await engine.complete(GenerationRequest(MODEL.slug, "hi", auto_template=False))).text)
    assert raw["prompt"] == "hi" and "add_special_tokens" not in raw and raw["max_tokens"] == 64
    capped = await engine.complete(GenerationRequest(MODEL.slug, "hi", max_new_tokens=1))
    assert capped.finish_reason == "length"
    chosen = await engine.complete(GenerationRequest(MODEL.slug, "hi", guidance_choices=("yes", "no")))
    assert (chosen.text, chosen.finish_reason) == ("no", "stop")


async def test_refusals_are_engine_errors(engine: VllmEngine) -> None:
    with pytest.raises(EngineError, match="vLLM refused the completion: This model's maximum context") as info:
        await engine.complete(GenerationRequest(MODEL.slug, "x" * 3000, auto_template=False))
    assert info.value.status_code == 422
    with pytest.raises(EngineError, match="topP"):
        await engine.complete(GenerationRequest(MODEL.slug, "hi", top_p=2.0))
    with pytest.raises(EngineError, match="unknown base model"):
        await engine.complete(GenerationRequest("other", "hi"))
    with pytest.raises(EngineError, match="--max-lora-rank"):
        await engine.create_adapter(AdapterSpec("a", MODEL.slug, rank=128))


async def test_fine_tune_loads_a_new_version_and_unloads_the_old(engine: VllmEngine) -> None:
    spec = AdapterSpec("adapter-1", MODEL.slug)
    await engine.create_adapter(spec)
    before = await engine.complete(GenerationRequest(MODEL.slug, "hi", adapter_id=spec.adapter_id))
    assert not before.text.startswith("[lora-")  # no weights yet: the base model answers
    await engine.fine_tune(spec, SAMPLE)
    first = (await engine.complete(GenerationRequest(MODEL.slug, "hi", adapter_id=spec.adapter_id))).text
    assert first.startswith("[lora-") and "-v1]" in first
    await engine.fine_tune(spec, SAMPLE)
    second = (await engine.complete(GenerationRequest(MODEL.slug, "hi", adapter_id=spec.adapter_id))).text
    assert "-v2]" in second
    log = await fake_log(engine)
    loaded = log["loras"]
    assert isinstance(loaded, dict) and [n.rsplit("-", 1)[1] for n in loaded] == ["v2"]
    paths = [r["path"] for r in log["requests"]]  # type: ignore[index, union-attr]
    assert paths.index("/v1/load_lora_adapter") < paths.index("/v1/unload_lora_adapter")  # new, then old out
    versions = sorted(p.name for p in (engine.data_dir / "loras").iterdir() for p in p.iterdir())
    assert versions == ["v1", "v2"]  # the previous version stays for requests in flight
    await engine.delete_adapter(spec.adapter_id)
    assert (await fake_log(engine))["loras"] == {}
    assert not list((engine.data_dir / "loras").iterdir())


async def test_adapters_reload_after_a_restart_of_the_gateway(
    tmp_path: Path, fake_vllm_python: Path, tokenizer_dir: Path
) -> None:
    spec = AdapterSpec("adapter-2", MODEL.slug)
    first = make_engine(tmp_path, fake_vllm_python, tokenizer_dir)
    try:
        await first.fine_tune(spec, SAMPLE)
        await first.fine_tune(spec, SAMPLE)
    finally:
        await first.aclose()
    assert first.child is not None and not first.child.running  # aclose stops the child
    second = make_engine(tmp_path, fake_vllm_python, tokenizer_dir)
    try:
        text = (await second.complete(GenerationRequest(MODEL.slug, "hi", adapter_id=spec.adapter_id))).text
        assert "-v2]" in text  # lazily loaded: the newest version on disk
    finally:
        await second.aclose()


async def test_embeddings_fall_back_to_the_trainer(engine: VllmEngine) -> None:
    assert await engine.embed(["abc"]) == [[3.0, 0.0]]
    assert engine.embeddings_source == "local"


async def test_embeddings_through_vllm_when_it_serves_them(
    tmp_path: Path, fake_vllm_python: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EMBED", "1")
    engine = make_engine(tmp_path, fake_vllm_python, tokenizer_dir)
    try:
        assert await engine.embed(["ab", "abcd"]) == [[2.0, 1.0], [4.0, 1.0]]
        assert engine.embeddings_source == "vllm"
    finally:
        await engine.aclose()


async def test_a_child_that_fails_to_start_is_one_clear_error(
    tmp_path: Path, fake_vllm_python: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EXIT", "3")
    engine = make_engine(tmp_path, fake_vllm_python, tokenizer_dir, restarts=0)
    try:
        with pytest.raises(EngineError, match="exited with code 3") as info:
            await engine.warm_up()
        assert info.value.status_code == 503 and "fake start-up failure" in info.value.message
        assert "exited with code 3" in (engine.readiness() or "")
        with pytest.raises(EngineError, match="no restarts left"):
            await engine.complete(GenerationRequest(MODEL.slug, "hi"))
    finally:
        await engine.aclose()


async def test_a_dying_child_is_reported_then_restarted(
    tmp_path: Path, fake_vllm_python: Path, tokenizer_dir: Path
) -> None:
    engine = make_engine(tmp_path, fake_vllm_python, tokenizer_dir, restarts=1)
    spec = AdapterSpec("adapter-3", MODEL.slug)
    try:
        await engine.fine_tune(spec, SAMPLE)
        assert engine.child is not None and engine.child.pid is not None
        os.kill(engine.child.pid, signal.SIGKILL)
        assert await engine.child.wait_exit(10)
        assert "killed by signal 9" in (engine.readiness() or "")
        # the next request restarts the child and reloads the adapter lazily
        text = (await engine.complete(GenerationRequest(MODEL.slug, "hi", adapter_id=spec.adapter_id))).text
        assert "-v1]" in text and engine.child.starts == 2 and engine.readiness() is None
        os.kill(engine.child.pid, signal.SIGKILL)
        assert await engine.child.wait_exit(10)
        with pytest.raises(EngineError, match="killed by signal 9") as info:
            await engine.complete(GenerationRequest(MODEL.slug, "hi"))
        assert info.value.status_code == 503 and "no restarts left" in info.value.message
    finally:
        await engine.aclose()


async def test_unreachable_vllm_url_is_a_clear_error(tmp_path: Path, tokenizer_dir: Path) -> None:
    from gradient_async.engine._vllm_child import free_port

    engine = VllmEngine(
        tmp_path / "vllm",
        trainer=FakeTrainer(tmp_path / "trainer"),
        model=MODEL,
        model_dir=tokenizer_dir,
        url=f"http://127.0.0.1:{free_port()}",
    )
    try:
        with pytest.raises(EngineError, match="did not list its models") as info:
            await engine.warm_up()
        assert info.value.status_code == 503
        assert "did not list its models" in (engine.readiness() or "")
    finally:
        await engine.aclose()


def test_the_child_dies_with_a_killed_gateway(tmp_path: Path, fake_vllm_python: Path) -> None:
    import subprocess
    import sys
    import time

    script = f"""
import os, signal, anyio, httpx
from pathlib import Path
from gradient_async.engine._vllm_child import VllmChild

async def main():
    python, log = Path({str(fake_vllm_python)!r}), Path({str(tmp_path / "log")!r})
    child = VllmChild(python, Path("."), served_name="m", log_path=log)
    child.start()
    async with httpx.AsyncClient() as http:
        await child.wait_ready(http, timeout=60)
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

anyio.run(main)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == -signal.SIGKILL, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, "the vLLM child outlived its killed parent"
        time.sleep(0.05)


async def test_token_hooks_use_the_model_tokenizer(engine: VllmEngine) -> None:
    assert engine.count_tokens(MODEL.slug, "hi the answer") == 3  # estimate before start-up: 13 bytes // 4
    await engine.warm_up()
    assert engine.count_tokens(MODEL.slug, "hi the answer w1") == 4
    assert engine.context_tokens(MODEL.slug) == 2048


def test_max_lora_rank_is_small_by_default_and_the_callers_flag_wins(tmp_path: Path, tokenizer_dir: Path) -> None:
    """vLLM computes every adapter at --max-lora-rank: a child we start gets 8 (the trainer's rank),
    `--vllm-arg=--max-lora-rank=N` replaces it, and adapters are checked against the value used."""
    from gradient_async.engine.vllm import DEFAULT_MAX_LORA_RANK

    python = tmp_path / "python"
    default = make_engine(tmp_path, python, tokenizer_dir)
    assert default.child is not None and default.max_lora_rank == DEFAULT_MAX_LORA_RANK == 8
    command = default.child.command()
    assert command[command.index("--max-lora-rank") + 1] == "8"

    wide = make_engine(tmp_path, python, tokenizer_dir, extra_args=("--max-lora-rank=64",))
    assert wide.child is not None and wide.max_lora_rank == 64
    assert [a for a in wide.child.command() if a.startswith("--max-lora-rank")] == ["--max-lora-rank=64"]
    underscored = make_engine(tmp_path, python, tokenizer_dir, extra_args=("--max_lora_rank", "16"))
    assert underscored.child is not None and underscored.max_lora_rank == 16  # vLLM's argparse takes both
    assert "--max-lora-rank" not in underscored.child.command()

    remote = VllmEngine(tmp_path / "r", trainer=FakeTrainer(tmp_path / "t"), model=MODEL, url="http://127.0.0.1:9")
    assert remote.max_lora_rank is None  # the running server's own setting decides

    for bad in ("big", "0", "-8"):
        with pytest.raises(ValueError, match="--max-lora-rank must be an integer >= 1"):
            make_engine(tmp_path, python, tokenizer_dir, extra_args=("--max-lora-rank", bad))
    from gradient_async.engine._vllm_child import VllmChild

    assert VllmChild(python, tokenizer_dir, served_name="m", log_path=tmp_path / "log").max_lora_rank == 8


async def test_an_adapter_over_the_max_lora_rank_is_refused_with_the_fix(tmp_path: Path, tokenizer_dir: Path) -> None:
    engine = make_engine(tmp_path, tmp_path / "python", tokenizer_dir)
    with pytest.raises(EngineError, match="rank must be <= 8"):
        await engine.create_adapter(AdapterSpec("a1", MODEL.slug, rank=32))
    await engine.aclose()


async def test_the_server_answers_422_for_a_rank_over_the_limit(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Through the Gradient API: a rank the vLLM child cannot serve is a 422 that says how to fix it."""
    from gradient_async import AsyncGradient, UnprocessableEntityError
    from gradient_async.server import ServerSettings, create_app

    engine = make_engine(tmp_path, tmp_path / "python", tokenizer_dir)
    app = create_app(ServerSettings(data_dir=tmp_path / "server", credentials={"t": {"w"}}), engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with AsyncGradient(
        access_token="t", workspace_id="w", base_url="http://local/api", transport=transport
    ) as client:
        base = (await client.models.list(only_base=True))[0]
        with pytest.raises(UnprocessableEntityError, match=r"rank must be <= 8 .*--vllm-arg=--max-lora-rank=N"):
            await base.create_adapter(name="wide", rank=32)
        assert await client.models.list(only_base=False) == await client.models.list(only_base=True)  # none made
    await app.state.gradient.aclose()


async def test_an_adapter_vllm_cannot_serve_is_a_422_not_a_retryable_502(
    tmp_path: Path, fake_vllm_python: Path, tokenizer_dir: Path
) -> None:
    """An adapter made elsewhere (another engine, another gateway) with a rank above the child's
    --max-lora-rank: vLLM refuses to load it, and that is the caller's to fix, not a transient error."""
    engine = make_engine(tmp_path, fake_vllm_python, tokenizer_dir)
    engine.max_lora_rank = None  # as under --vllm-url: the gateway does not check ranks itself
    try:
        await engine.create_adapter(AdapterSpec("wide", MODEL.slug, rank=32))
        with pytest.raises(EngineError, match=r"rank 32 is greater than max_lora_rank 8.*--max-lora-rank") as info:
            await engine.fine_tune(AdapterSpec("wide", MODEL.slug, rank=32), SAMPLE)
        assert info.value.status_code == 422
    finally:
        await engine.aclose()
