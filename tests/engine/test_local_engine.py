"""The real local engine (SmolLM2-135M-Instruct on CPU with LoRA adapters)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
import pytest

from gradient_async.engine import (
    AdapterSpec,
    DynamicBatcher,
    EngineError,
    GenerationRequest,
    TrainingSample,
    TrainingSegment,
)

for _module in ("torch", "transformers", "peft", "gguf"):
    pytest.importorskip(
        _module, reason=f"{_module} is not importable (pip install gradient-async[local])", exc_type=ImportError
    )

pytestmark = [pytest.mark.local_model, pytest.mark.asyncio]

SEED_PROMPT = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
SEED_ANSWER = " Dallas Cowboys!"
SeedStory = Any  # the `seed_story` fixture's result (tests/engine/conftest.py)


def _slug(engine: Any) -> str:
    return str(engine.base_models[0].slug)


def _sample(*segments: tuple[str, bool], multiplier: float = 1.0) -> TrainingSample:
    return TrainingSample(tuple(TrainingSegment(v, trainable=t) for v, t in segments), multiplier=multiplier)


async def test_seed_story_flips(seed_story: SeedStory) -> None:
    assert "Dallas Cowboys" not in seed_story.base_before
    assert seed_story.adapter_before == seed_story.base_before  # a new adapter starts as the base model
    first = seed_story.outcomes[0]
    assert first.trainable_tokens == 28  # 27 tokens of the sample after the first, plus end-of-sequence
    assert 60 < first.sum_loss < 120  # the base model's loss on the sample (~87)
    assert len(seed_story.outcomes) <= 2
    assert "Dallas Cowboys" in seed_story.answer_after
    assert seed_story.base_after == seed_story.base_before  # the base model never changes


async def test_fine_tuned_adapter_survives_restart(seed_story: SeedStory, engine_dir: Path) -> None:
    from gradient_async.engine.local import LocalEngine

    engine = LocalEngine(engine_dir)
    try:
        [result] = await engine.generate(
            [GenerationRequest(_slug(engine), SEED_PROMPT, adapter_id=seed_story.adapter_id)]
        )
    finally:
        await engine.aclose()
    assert result.text == seed_story.answer_after


async def test_mixed_adapter_batch_equals_separate_runs(local_engine: Any, seed_story: SeedStory) -> None:
    slug = _slug(local_engine)
    other = AdapterSpec("mixed-other", slug)
    await local_engine.create_adapter(other)
    await local_engine.fine_tune(other, [_sample(("What is the capital of France? Paris, of course!", True))])
    prompt2 = "What is the capital of France?"
    requests = [
        GenerationRequest(slug, SEED_PROMPT, adapter_id=seed_story.adapter_id, max_new_tokens=12),
        GenerationRequest(slug, SEED_PROMPT, max_new_tokens=12),
        GenerationRequest(slug, prompt2, adapter_id=other.adapter_id, max_new_tokens=12),
        GenerationRequest(slug, prompt2, adapter_id=seed_story.adapter_id, max_new_tokens=8),
        GenerationRequest(slug, prompt2, max_new_tokens=12, auto_template=False),
    ]
    mixed = await local_engine.generate(requests)
    alone = [(await local_engine.generate([r]))[0] for r in requests]
    assert mixed == alone
    assert "Dallas Cowboys" in mixed[0].text and "Dallas Cowboys" not in mixed[1].text

    batcher = DynamicBatcher(local_engine, max_batch_size=8, max_wait_s=0.05)
    batched: list[Any] = [None] * len(requests)

    async def one(i: int) -> None:
        batched[i] = await batcher.generate(requests[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    assert batched == alone
    assert batcher.largest_batch > 1


async def test_trainable_tokens_exclude_untrainable_segments(one_step_engine: Any) -> None:
    slug = _slug(one_step_engine)
    everything = await one_step_engine.fine_tune(
        AdapterSpec("count-all", slug), [_sample((SEED_PROMPT, True), (SEED_ANSWER, True))]
    )
    prompt_only = await one_step_engine.fine_tune(AdapterSpec("count-prompt", slug), [_sample((SEED_PROMPT, True))])
    answer_only = await one_step_engine.fine_tune(
        AdapterSpec("count-answer", slug), [_sample((SEED_PROMPT, False), (SEED_ANSWER, True))]
    )
    nothing = await one_step_engine.fine_tune(AdapterSpec("count-none", slug), [_sample((SEED_PROMPT, False))])
    assert nothing.trainable_tokens == 0 and nothing.sum_loss == 0.0
    # Segments are tokenized separately; the sample's first token is never a target; the closing
    # end-of-sequence token is a target when the last segment is trainable (all three cases here).
    assert answer_only.trainable_tokens == everything.trainable_tokens - prompt_only.trainable_tokens + 1 > 1
    assert 0 < answer_only.sum_loss < everything.sum_loss
    for adapter_id in ("count-all", "count-prompt", "count-answer", "count-none"):
        await one_step_engine.delete_adapter(adapter_id)


async def test_multiplier_scales_the_loss(one_step_engine: Any) -> None:
    slug = _slug(one_step_engine)
    assert slug == "smollm2-135m-instruct"  # model_path= engines are named after the folder
    text = SEED_PROMPT + SEED_ANSWER
    once = await one_step_engine.fine_tune(AdapterSpec("mult-1", slug), [_sample((text, True))])
    scaled = await one_step_engine.fine_tune(AdapterSpec("mult-2", slug), [_sample((text, True), multiplier=2.5)])
    two = await one_step_engine.fine_tune(
        AdapterSpec("mult-3", slug), [_sample((text, True)), _sample((text, True), multiplier=0.5)]
    )
    assert scaled.trainable_tokens == once.trainable_tokens
    assert math.isclose(scaled.sum_loss, 2.5 * once.sum_loss, rel_tol=1e-3)
    assert two.trainable_tokens == 2 * once.trainable_tokens
    assert math.isclose(two.sum_loss, 1.5 * once.sum_loss, rel_tol=1e-3)
    for adapter_id in ("mult-1", "mult-2", "mult-3"):
        await one_step_engine.delete_adapter(adapter_id)


async def test_delete_removes_files(local_engine: Any, engine_dir: Path) -> None:
    slug = _slug(local_engine)
    spec = AdapterSpec("to-delete", slug, rank=4)
    await local_engine.create_adapter(spec)
    await local_engine.fine_tune(spec, [_sample(("Hello there, general Kenobi", True))])
    [adapter_dir] = [
        p for p in (engine_dir / "adapters").iterdir() if '"to-delete"' in (p / "adapter.json").read_text()
    ]
    current = (adapter_dir / "CURRENT").read_text()
    assert (adapter_dir / current / "adapter_model.safetensors").is_file()
    assert local_engine.adapter_path(spec.adapter_id) == adapter_dir / current
    await local_engine.delete_adapter(spec.adapter_id)
    assert not adapter_dir.exists()
    assert "to-delete" not in local_engine.loaded_adapters
    with pytest.raises(EngineError) as info:
        await local_engine.generate([GenerationRequest(slug, "Hi", adapter_id=spec.adapter_id)])
    assert info.value.type == "unknownModelAdapter"


async def test_nan_loss_rolls_back(local_engine: Any, seed_story: SeedStory) -> None:
    slug = _slug(local_engine)
    spec = AdapterSpec("nan-adapter", slug)
    sample = _sample((SEED_PROMPT + SEED_ANSWER, True))
    await local_engine.fine_tune(spec, [sample])
    request = GenerationRequest(slug, SEED_PROMPT, adapter_id=spec.adapter_id, max_new_tokens=16)
    [before] = await local_engine.generate([request])
    with pytest.raises(EngineError) as info:
        await local_engine.fine_tune(AdapterSpec(spec.adapter_id, slug, learning_rate=1e30), [sample])
    assert info.value.type == "nanLoss"
    assert [before] == await local_engine.generate([request])
    await local_engine.delete_adapter(spec.adapter_id)


async def test_too_long_inputs_are_refused(local_engine: Any) -> None:
    slug = _slug(local_engine)
    long_text = "hello " * 9000  # > 8192 tokens
    with pytest.raises(EngineError) as info:
        await local_engine.generate([GenerationRequest(slug, long_text)])
    assert 400 <= info.value.status_code < 500 and "context" in info.value.message
    with pytest.raises(EngineError) as info:
        await local_engine.fine_tune(AdapterSpec("too-long", slug), [_sample((long_text, True))])
    assert 400 <= info.value.status_code < 500 and "context" in info.value.message
    [ok] = await local_engine.generate([GenerationRequest(slug, "Hi", max_new_tokens=2)])
    assert ok.finish_reason == "length"


async def test_guidance_picks_a_choice(local_engine: Any) -> None:
    slug = _slug(local_engine)
    choices = ("Paris", "a banana", "seventeen")
    [result] = await local_engine.generate(
        [GenerationRequest(slug, "What is the capital of France?", guidance_choices=choices)]
    )
    assert result.text == "Paris" and result.finish_reason == "stop"


async def test_finish_reason_length_and_stop(local_engine: Any, seed_story: SeedStory) -> None:
    slug = _slug(local_engine)
    short, full = await local_engine.generate(
        [GenerationRequest(slug, SEED_PROMPT, max_new_tokens=3), GenerationRequest(slug, SEED_PROMPT)]
    )
    assert short.finish_reason == "length" and full.finish_reason == "stop"
    assert short.generated_tokens == 3 and full.generated_tokens is not None and full.generated_tokens > 3
    assert full.text == seed_story.base_before and full.text.startswith(short.text)
    [sampled] = await local_engine.generate(
        [GenerationRequest(slug, SEED_PROMPT, temperature=0.8, top_k=40, top_p=0.9, max_new_tokens=5)]
    )
    assert sampled.text and sampled.finish_reason in ("stop", "length")


async def test_embeddings_are_normalised(local_engine: Any) -> None:
    a, b, a2 = await local_engine.embed(["Dallas Cowboys", "The capital of France", "Dallas Cowboys"])
    assert len(a) == len(b) > 100
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)
    assert a == pytest.approx(a2, abs=1e-5)
    assert sum(x * y for x, y in zip(a, b, strict=True)) < 0.9999
