"""Fair sharing and all-or-nothing fine-tunes inside the local engine (a tiny random model: fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from gradient_async.engine import AdapterSpec, GenerationRequest, TrainingSample, TrainingSegment

pytestmark = [pytest.mark.local_model, pytest.mark.asyncio]


def _engine(tiny_model_dir: Path, tmp_path: Path, **kwargs: Any) -> Any:
    from gradient_async.engine.local import LocalEngine

    return LocalEngine(tmp_path, model_path=tiny_model_dir, threads=1, **kwargs)


async def until(engine: Any, condition: Any) -> None:
    """Wait until `condition()` holds, checked at every scheduler event."""
    reached = anyio.Event()
    engine.scheduler.on_event = lambda _: reached.set() if condition() else None
    if not condition():
        with anyio.fail_after(300):
            await reached.wait()
    engine.scheduler.on_event = None


async def test_a_completion_is_served_between_training_micro_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = _engine(tiny_model_dir, tmp_path, steps_per_call=4)
    slug = engine.base_models[0].slug
    spec = AdapterSpec("long-job", slug)
    # Three samples of ~1,100 tokens: three micro-batches per step, twelve units in all.
    samples = [TrainingSample((TrainingSegment(f"{n} " + "word " * 1100),)) for n in range(3)]
    history = engine.scheduler.history
    try:
        await engine.warm_up()
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.fine_tune, spec, samples)
            await until(engine, lambda: sum(e == ("granted", "train", spec.adapter_id) for e in history) >= 3)
            [answer] = await engine.generate([GenerationRequest(slug, "Hi", max_new_tokens=2)])
        assert answer.text is not None
        events = list(history)
        queued = max(i for i, e in enumerate(events) if e == ("queued", "infer", None))
        granted = next(i for i in range(queued, len(events)) if events[i] == ("granted", "infer", None))
        trained_between = sum(e == ("granted", "train", spec.adapter_id) for e in events[queued:granted])
        trained_after = sum(e == ("granted", "train", spec.adapter_id) for e in events[granted:])
        assert trained_between <= 1  # at most the micro-batch that was running
        assert trained_after >= 6  # the fine-tune was far from done: the completion did not wait for it
    finally:
        await engine.aclose()


async def test_completions_see_the_previous_version_until_the_fine_tune_returns(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    engine = _engine(tiny_model_dir, tmp_path, steps_per_call=6, learning_rate=5e-2)
    slug = engine.base_models[0].slug
    spec = AdapterSpec("versioned", slug)
    sample = [TrainingSample((TrainingSegment("Hello there, general Kenobi! " * 40),))]
    request = GenerationRequest(slug, "Hello there,", adapter_id=spec.adapter_id, max_new_tokens=6, auto_template=False)
    try:
        await engine.fine_tune(spec, sample)
        [v1] = await engine.generate([request])
        during: list[str] = []
        tuned = False

        async def tune() -> None:
            nonlocal tuned
            await engine.fine_tune(spec, sample)
            tuned = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(tune)
            while not tuned:  # completions between the training micro-batches
                [r] = await engine.generate([request])
                during.append(r.text)
        [v2] = await engine.generate([request])
        assert engine.adapter_version(spec.adapter_id).number == 2
        assert v1.text != v2.text and len(during) >= 3
        # Never a half-trained answer: the previous version until the switch, then the new one.
        switch = during.index(v2.text) if v2.text in during else len(during)
        assert during == [v1.text] * switch + [v2.text] * (len(during) - switch)
        assert switch >= 2
    finally:
        await engine.aclose()


async def test_eight_adapters_in_one_batch_answer_as_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = _engine(tiny_model_dir, tmp_path, steps_per_call=2, learning_rate=5e-2)
    slug = engine.base_models[0].slug
    try:
        for n in range(8):
            text = f"Adapter {n} says: " + " ".join(["alpha", "beta", "gamma", "delta"][n % 4] for _ in range(20))
            await engine.fine_tune(AdapterSpec(f"a{n}", slug), [TrainingSample((TrainingSegment(text),))])
        requests = [
            GenerationRequest(slug, f"Adapter {i % 8} says:", adapter_id=None if i % 5 == 4 else f"a{i % 8}",
                              max_new_tokens=4 + i % 3, auto_template=i % 2 == 0)
            for i in range(20)
        ]  # fmt: skip
        mixed = await engine.generate(requests)
        alone = [(await engine.generate([r]))[0] for r in requests]
        assert mixed == alone
        assert len({r.text for r in mixed}) > 2
    finally:
        await engine.aclose()
