"""Fine-tune runs: plan, records, checkpoint and resume against the in-process server (test engine)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gradient_async import InputValidationError
from gradient_async.testing import GradientServer
from gradient_async.training import (
    CheckpointError,
    UncertainStepError,
    fine_tune_run,
    load_samples,
    plan_steps,
)

SAMPLES = [f"Question: what is {i} + {i}?\n\nAnswer: {2 * i}" for i in range(10)]


async def _adapter(server: GradientServer) -> str:
    base = server.base_model_ids[-1]
    adapter = await server.client.adapters.create(base_model_id=base, name="run-test")
    return adapter.id


class Trained:
    """Counts every sample text the server's engine trains on (wraps its fine_tune)."""

    def __init__(self, server: Any) -> None:
        self.counts: Counter[str] = Counter()
        self.calls = 0
        engine = server.state.engine
        inner = engine.fine_tune

        async def fine_tune(adapter: Any, samples: Any) -> Any:
            self.calls += 1
            self.counts.update("".join(seg.value for seg in sample.segments) for sample in samples)
            return await inner(adapter, samples)

        engine.fine_tune = fine_tune


def test_plan_is_deterministic_and_respects_batch_size_and_caps() -> None:
    train = load_samples(SAMPLES)
    steps = plan_steps(train, epochs=2, batch_size=3, seed=7)
    assert [s.epoch for s in steps] == [1] * 4 + [2] * 4
    assert [len(s.indices) for s in steps] == [3, 3, 3, 1] * 2
    assert sorted(i for s in steps if s.epoch == 1 for i in s.indices) == list(range(10))
    assert steps == plan_steps(train, epochs=2, batch_size=3, seed=7)
    assert [s.indices for s in steps] != [s.indices for s in plan_steps(train, epochs=2, batch_size=3, seed=8)]
    assert [s.indices for s in plan_steps(train, batch_size=10, shuffle=False)] == [tuple(range(10))]
    # a byte cap closes requests early; every request stays under it
    capped = plan_steps(train, batch_size=10, max_request_bytes=200)
    assert all(s.body_bytes <= 200 for s in capped) and len(capped) > 1
    body = json.dumps({"samples": [train.sample(i) for i in capped[0].indices]}, separators=(",", ":"))
    assert len(body.encode()) == capped[0].body_bytes
    tokens = plan_steps(train, batch_size=10, max_request_tokens=25)
    assert all(s.tokens <= 25 for s in tokens) and len(tokens) > 1


def test_bad_data_is_named_before_sending(tmp_path: Path) -> None:
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"inputs": "ok"}\n\n{"inputs": ""}\n', encoding="utf-8")
    with pytest.raises(InputValidationError, match=r"train.jsonl:3"):
        load_samples(bad)
    bad.write_text('{"inputs": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(InputValidationError, match=r"train.jsonl:2: not valid JSON"):
        load_samples(bad)
    with pytest.raises(InputValidationError, match="not found"):
        load_samples(tmp_path / "missing.jsonl")
    with pytest.raises(InputValidationError, match="sample 1"):
        load_samples(["fine", 42])  # type: ignore[list-item]
    with pytest.raises(InputValidationError, match="no samples"):
        load_samples([])
    with pytest.raises(InputValidationError, match=r"sample 0 is .* bytes, over max_request_bytes=100"):
        plan_steps(load_samples(["x" * 200]), max_request_bytes=100)
    with pytest.raises(InputValidationError, match="batch_size must be an integer >= 1"):
        plan_steps(load_samples(["x"]), batch_size=0)


async def test_run_records_steps_epochs_and_progress(gradient_server: GradientServer) -> None:
    adapter_id = await _adapter(gradient_server)
    trained = Trained(gradient_server)
    seen: list[tuple[int, int, float | None]] = []
    run = await fine_tune_run(
        gradient_server.client, adapter_id, SAMPLES, epochs=2, batch_size=4, progress=lambda *a: seen.append(a)
    )
    assert [s.step for s in run.steps] == [1, 2, 3, 4, 5, 6]
    assert [e.epoch for e in run.epochs] == [1, 2] and [e.steps for e in run.epochs] == [3, 3]
    assert run.sent == 6 and run.skipped == 0
    assert all(s.trainable_tokens > 0 and s.duration >= 0 for s in run.steps)
    first, second = run.epochs
    assert first.trainable_tokens == second.trainable_tokens
    assert first.mean_loss is not None and second.mean_loss is not None
    assert second.mean_loss == pytest.approx(first.mean_loss / 2)  # the test engine halves a repeated sample's loss
    assert first.sum_loss == pytest.approx(sum(s.sum_loss for s in run.steps[:3]))
    assert [d for d, _, _ in seen] == [1, 2, 3, 4, 5, 6] and {t for _, t, _ in seen} == {6}
    assert seen[2][2] == pytest.approx(first.mean_loss) and seen[5][2] == pytest.approx(second.mean_loss)
    assert set(trained.counts.values()) == {2} and len(trained.counts) == 10


async def test_resume_skips_confirmed_steps_and_stops_on_uncertain(
    gradient_server: GradientServer, tmp_path: Path
) -> None:
    adapter_id = await _adapter(gradient_server)
    ckpt = tmp_path / "run.ckpt.jsonl"
    client = gradient_server.client
    trained = Trained(gradient_server)
    run = await fine_tune_run(client, adapter_id, SAMPLES, batch_size=2, checkpoint=ckpt)
    assert run.sent == 5
    with pytest.raises(CheckpointError, match="already holds a run"):
        await fine_tune_run(client, adapter_id, SAMPLES, batch_size=2, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="another run"):
        await fine_tune_run(client, adapter_id, SAMPLES, batch_size=3, checkpoint=ckpt, resume=True)
    again = await fine_tune_run(client, adapter_id, SAMPLES, batch_size=2, checkpoint=ckpt, resume=True)
    assert again.sent == 0 and again.skipped == 5 and all(s.resumed for s in again.steps)
    assert [s.sum_loss for s in again.steps] == [s.sum_loss for s in run.steps]
    assert set(trained.counts.values()) == {1} and trained.calls == 5

    # cut the checkpoint after step 3 was sent (as a crash would), with a torn half line at the end
    lines = ckpt.read_text().splitlines(keepends=True)
    sent3 = next(
        i for i, line in enumerate(lines) if json.loads(line) == {**json.loads(line), "type": "sent", "step": 3}
    )
    ckpt.write_text("".join(lines[: sent3 + 1]) + '{"type":"confi')
    with pytest.raises(UncertainStepError, match="step 3 of 5") as info:
        await fine_tune_run(client, adapter_id, SAMPLES, batch_size=2, checkpoint=ckpt, resume=True)
    assert info.value.step == 3
    calls = trained.calls
    resent = await fine_tune_run(
        client, adapter_id, SAMPLES, batch_size=2, checkpoint=ckpt, resume=True, resend_uncertain=True
    )
    assert resent.sent == 3 and resent.skipped == 2
    assert trained.calls == calls + 3
    records = [json.loads(line) for line in ckpt.read_text().splitlines()]  # the torn line is gone
    assert [r["step"] for r in records if r["type"] == "confirmed"] == [1, 2, 3, 4, 5]


async def test_rejected_step_is_safe_to_resend(gradient_server: GradientServer, tmp_path: Path) -> None:
    adapter_id = await _adapter(gradient_server)
    ckpt = tmp_path / "ckpt.jsonl"
    settings = gradient_server.state.settings
    default = settings.limits
    settings.limits = dataclasses.replace(default, max_fine_tune_samples=1)  # 413 before any work
    with pytest.raises(Exception, match="max_fine_tune_samples"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES, batch_size=5, checkpoint=ckpt)
    kinds = [json.loads(line)["type"] for line in ckpt.read_text().splitlines()]
    assert kinds == ["run", "sent", "rejected"]
    settings.limits = default
    run = await fine_tune_run(gradient_server.client, adapter_id, SAMPLES, batch_size=5, checkpoint=ckpt, resume=True)
    assert run.sent == 2


async def test_a_5xx_leaves_the_step_uncertain(gradient_server: GradientServer, tmp_path: Path) -> None:
    # A 5xx may come after the adapter was trained (a proxy's 502, an engine that died after training):
    # a resumed run must not send that step again unless told to.
    adapter_id = await _adapter(gradient_server)
    ckpt = tmp_path / "ckpt.jsonl"
    gradient_server.faults.fail_rate = 1.0  # every request answered 503
    with pytest.raises(Exception, match="503"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES, batch_size=5, checkpoint=ckpt)
    kinds = [json.loads(line)["type"] for line in ckpt.read_text().splitlines()]
    assert kinds == ["run", "sent"]
    gradient_server.faults.fail_rate = 0.0
    with pytest.raises(UncertainStepError, match="step 1 of 2"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES, batch_size=5, checkpoint=ckpt, resume=True)
    run = await fine_tune_run(
        gradient_server.client, adapter_id, SAMPLES, batch_size=5, checkpoint=ckpt, resume=True, resend_uncertain=True
    )
    assert run.sent == 2


async def test_per_epoch_evaluation(gradient_server: GradientServer, tmp_path: Path) -> None:
    adapter_id = await _adapter(gradient_server)
    items: list[dict[str, Any]] = [
        {"query": f"Question: what is {i} + {i}?\n\nAnswer:", "expected": str(2 * i)} for i in range(10)
    ]
    ckpt = tmp_path / "ckpt.jsonl"
    options: dict[str, Any] = {"epochs": 2, "batch_size": 5, "eval_data": items, "scorers": ["exact", "number"]}
    run = await fine_tune_run(gradient_server.client, adapter_id, SAMPLES, checkpoint=ckpt, **options)
    assert [e.scores for e in run.epochs] == [{"exact": 1.0, "number": 1.0}] * 2
    assert run.epochs[0].evaluation is not None and run.epochs[0].evaluation["n"] == 10
    again = await fine_tune_run(gradient_server.client, adapter_id, SAMPLES, checkpoint=ckpt, resume=True, **options)
    assert again.sent == 0 and [e.scores for e in again.epochs] == [e.scores for e in run.epochs]


def test_hostile_files(tmp_path: Path) -> None:
    binary = tmp_path / "train.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(InputValidationError, match="not UTF-8"):
        load_samples(binary)
    with pytest.raises(InputValidationError, match="not found"):
        load_samples(_dir_link(tmp_path))


def _dir_link(tmp_path: Path) -> Path:
    """A .jsonl name that is really a directory."""
    target = tmp_path / "adir"
    target.mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    return link


async def test_checkpoint_with_a_damaged_record_is_refused(gradient_server: GradientServer, tmp_path: Path) -> None:
    adapter_id = await _adapter(gradient_server)
    ckpt = tmp_path / "ckpt.jsonl"
    await fine_tune_run(gradient_server.client, adapter_id, SAMPLES[:4], batch_size=2, checkpoint=ckpt)
    lines = ckpt.read_text().splitlines()
    lines[2] = json.dumps({"type": "confirmed", "step": 1})  # no tokens, loss or digest
    ckpt.write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="line 3"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES[:4], batch_size=2, checkpoint=ckpt, resume=True)
    ckpt.write_text("garbage\n" + "\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="corrupt at line 1"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES[:4], batch_size=2, checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES[:4], checkpoint=tmp_path, resume=True)


async def test_tqdm_progress_shows_the_running_loss(
    gradient_server: GradientServer, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter_id = await _adapter(gradient_server)
    run = await fine_tune_run(gradient_server.client, adapter_id, SAMPLES[:4], batch_size=2, progress="tqdm")
    err = capsys.readouterr().err
    assert "fine-tune" in err and "2/2" in err and f"loss={run.epochs[0].mean_loss:.4f}" in err
    with pytest.raises(InputValidationError, match="progress must be"):
        await fine_tune_run(gradient_server.client, adapter_id, SAMPLES[:4], progress="bar")  # type: ignore[arg-type]
