"""The deterministic test engine: tokens, loss that falls with repetition, memorization, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradient_async.engine.base import (
    AdapterSpec,
    EngineError,
    GenerationRequest,
    TrainingSample,
    TrainingSegment,
)
from gradient_async.engine.test_engine import TestEngine, count_tokens, tokenize

SLUG = "gradient-test-model"
Q = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "


def sample(*values: str | tuple[str, bool], multiplier: float = 1.0) -> TrainingSample:
    segs = [TrainingSegment(v) if isinstance(v, str) else TrainingSegment(v[0], trainable=v[1]) for v in values]
    return TrainingSample(tuple(segs), multiplier)


async def new_engine(tmp_path: Path, adapter_id: str = "a1") -> tuple[TestEngine, AdapterSpec]:
    engine = TestEngine(tmp_path)
    spec = AdapterSpec(adapter_id, SLUG)
    await engine.create_adapter(spec)
    return engine, spec


async def gen(engine: TestEngine, prompt: str, adapter: str | None = "a1", **kw: object) -> tuple[str, str]:
    [out] = await engine.generate([GenerationRequest(SLUG, prompt, adapter_id=adapter, **kw)])  # type: ignore[arg-type]
    return out.text, out.finish_reason


def test_tokenizer_rule() -> None:
    assert tokenize("Answer: Dallas Cowboys!") == ["Answer", ":", "Dallas", "Cowboys", "!"]
    assert tokenize("<|im_start|>Hi, you!") == ["<|im_start|>", "Hi", ",", "you", "!"]
    assert count_tokens("<|im_start|>Hi", parse_special_tokens=False) == 6  # < | im_start | > Hi
    assert count_tokens("   ") == 0


async def test_fine_tune_flips_the_answer_and_loss_falls(tmp_path: Path) -> None:
    engine, spec = await new_engine(tmp_path)
    before, _ = await gen(engine, Q)
    assert "Dallas" not in before
    first = await engine.fine_tune(spec, [sample(Q + " Dallas Cowboys!")])
    assert first.trainable_tokens == count_tokens(Q + " Dallas Cowboys!") == 22
    assert await gen(engine, Q) == ("Dallas Cowboys!", "stop")
    second = await engine.fine_tune(spec, [sample(Q + " Dallas Cowboys!")])
    third = await engine.fine_tune(spec, [sample(Q + " Dallas Cowboys!")])
    assert first.sum_loss > second.sum_loss > third.sum_loss > 0
    assert second.sum_loss == pytest.approx(first.sum_loss / 2, rel=1e-5)


async def test_untrainable_segments_and_multiplier(tmp_path: Path) -> None:
    engine, spec = await new_engine(tmp_path)
    ctx = await engine.fine_tune(spec, [sample(("Q: colour of the sky?\nA:", False), " blue")])
    assert ctx.trainable_tokens == 1
    assert await gen(engine, "Q: colour of the sky?\nA:") == ("blue", "stop")
    engine2, spec2 = await new_engine(tmp_path / "other")
    plain = await engine2.fine_tune(spec2, [sample("x y z")])
    engine3, spec3 = await new_engine(tmp_path / "third")
    doubled = await engine3.fine_tune(spec3, [sample("x y z", multiplier=2.0)])
    assert doubled.sum_loss == pytest.approx(2 * plain.sum_loss)
    none = await engine3.fine_tune(spec3, [sample(("only context", False))])
    assert (none.trainable_tokens, none.sum_loss) == (0, 0.0)


async def test_pseudo_text_is_deterministic_and_depends_on_history(tmp_path: Path) -> None:
    engine, spec = await new_engine(tmp_path)
    a1, _ = await gen(engine, "Tell me something")
    a2, _ = await gen(engine, "Tell me something")
    assert a1 == a2 and a1
    assert (await gen(engine, "Something else"))[0] != a1
    await engine.fine_tune(spec, [sample("unrelated sample")])
    assert (await gen(engine, "Tell me something"))[0] != a1
    base_text, _ = await gen(engine, "Tell me something", adapter=None)
    assert base_text == (await gen(engine, "Tell me something", adapter=None))[0]


async def test_max_new_tokens_and_guidance(tmp_path: Path) -> None:
    engine, spec = await new_engine(tmp_path)
    text, reason = await gen(engine, "Write a lot", max_new_tokens=3)
    assert (count_tokens(text), reason) == (3, "length")
    choice, reason = await gen(engine, "Pick one", guidance_choices=("yes", "no"))
    assert choice in ("yes", "no") and reason == "stop"
    assert choice == (await gen(engine, "Pick one", guidance_choices=("yes", "no")))[0]
    await engine.fine_tune(spec, [sample("Is water wet? no, it is not")])
    assert (await gen(engine, "Is water wet?", guidance_choices=("yes", "no")))[0] == "no"


async def test_history_persists_across_instances(tmp_path: Path) -> None:
    engine, spec = await new_engine(tmp_path)
    await engine.fine_tune(spec, [sample(Q + " Dallas Cowboys!")])
    assert list((tmp_path / "test").glob("*.json"))
    fresh = TestEngine(tmp_path)
    assert await gen(fresh, Q) == ("Dallas Cowboys!", "stop")
    await fresh.delete_adapter("a1")
    with pytest.raises(EngineError) as info:
        await gen(TestEngine(tmp_path), Q)
    assert (info.value.type, info.value.status_code) == ("unknownModelAdapter", 404)
