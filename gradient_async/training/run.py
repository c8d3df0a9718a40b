"""`fine_tune_run`: train an adapter on a whole dataset: epochs, batches, a checkpoint, progress, evaluation.

Steps are sent one at a time, in plan order (training order matters). Each step is recorded in the
checkpoint before it is sent and again when the server confirms it, so a run killed at any moment
resumes without training any confirmed step twice (see `checkpoint`).

Example::

    run = await fine_tune_run(client, adapter.id, "train.jsonl", epochs=3, batch_size=8,
                              checkpoint="run.ckpt.jsonl", progress="tqdm")
    for epoch in run.epochs:
        print(epoch.epoch, epoch.mean_loss)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from gradient_async._errors import APIConnectionError, APIStatusError, GradientError, InputValidationError
from gradient_async.training.checkpoint import VERSION, CheckpointError, CheckpointWriter, read_checkpoint
from gradient_async.training.dataset import (
    DEFAULT_MAX_REQUEST_BYTES,
    SampleSource,
    Step,
    TrainingSet,
    load_samples,
    plan_digest,
    plan_steps,
)

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient
    from gradient_async.evaluation.dataset import EvalSource
    from gradient_async.evaluation.results import EvalSummary
    from gradient_async.evaluation.scorers import ScorerArg

__all__ = [
    "EpochRecord",
    "FineTuneRunResult",
    "StepRecord",
    "TrainingProgress",
    "UncertainStepError",
    "fine_tune_run",
]

TrainingProgress: TypeAlias = Callable[[int, int, "float | None"], None]
"""`callback(steps_done, steps_total, running_mean_loss_of_this_epoch)`."""


class UncertainStepError(GradientError):
    """A step was sent but never confirmed: the server may or may not have trained on it.

    `step` is its number. Resume with `resend_uncertain=True` (CLI: `--resend-uncertain`) to send it again.
    """

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class StepRecord:
    """One confirmed fine-tune request. `resumed`: confirmed by an earlier run (read from the checkpoint)."""

    step: int
    epoch: int
    samples: int
    trainable_tokens: int
    sum_loss: float
    duration: float
    resumed: bool = False

    @property
    def mean_loss(self) -> float | None:
        return None if self.trainable_tokens == 0 else self.sum_loss / self.trainable_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "samples": self.samples,
            "trainable_tokens": self.trainable_tokens,
            "sum_loss": self.sum_loss,
            "mean_loss": self.mean_loss,
            "duration": self.duration,
            "resumed": self.resumed,
        }


@dataclass(frozen=True)
class EpochRecord:
    """Totals of one epoch; `scores` (scorer -> mean) and `evaluation` when an eval set was given."""

    epoch: int
    steps: int
    trainable_tokens: int
    sum_loss: float
    scores: dict[str, float | None] | None = None
    evaluation: dict[str, Any] | None = None

    @property
    def mean_loss(self) -> float | None:
        """Token-weighted mean loss over the epoch."""
        return None if self.trainable_tokens == 0 else self.sum_loss / self.trainable_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "steps": self.steps,
            "trainable_tokens": self.trainable_tokens,
            "sum_loss": self.sum_loss,
            "mean_loss": self.mean_loss,
            "scores": self.scores,
        }


@dataclass
class FineTuneRunResult:
    """Every step (`steps`), per-epoch totals (`epochs`), and what this run did: `sent` requests,
    `skipped` steps already confirmed in the checkpoint."""

    adapter_id: str
    steps: list[StepRecord] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)
    sent: int = 0
    skipped: int = 0
    checkpoint: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter_id": self.adapter_id,
            "sent": self.sent,
            "skipped": self.skipped,
            "steps": [s.to_json() for s in self.steps],
            "epochs": [e.to_json() for e in self.epochs],
        }


class _TqdmBar:
    def __init__(self, total: int) -> None:
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise InputValidationError("progress='tqdm' needs tqdm: pip install 'gradient-async[batch]'") from None
        self._bar = tqdm(total=total, desc="fine-tune", unit="step", dynamic_ncols=True)

    def __call__(self, done: int, total: int, loss: float | None) -> None:
        self._bar.n = done
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _header(adapter_id: str, digest: str, steps: Sequence[Step], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "run",
        "version": VERSION,
        "adapter_id": adapter_id,
        "plan": digest,
        "steps": len(steps),
        **settings,
    }


def _open_checkpoint(
    path: Path, *, resume: bool, header: dict[str, Any]
) -> tuple[CheckpointWriter, dict[int, dict[str, Any]], set[int], dict[int, dict[str, Any]]]:
    state = read_checkpoint(path)
    if state.header is None and (state.confirmed or state.uncertain):
        raise CheckpointError(f"checkpoint {path} has no header line; it cannot be resumed safely")
    if state.header is not None and not resume:
        raise CheckpointError(
            f"checkpoint {path} already holds a run: pass resume=True (--resume) to continue it, "
            "or delete the file to start over"
        )
    if state.header is not None and (
        state.header.get("plan") != header["plan"] or state.header.get("adapter_id") != header["adapter_id"]
    ):
        raise CheckpointError(
            f"checkpoint {path} was written for another run (adapter {state.header.get('adapter_id')!r}, "
            "or different data, epochs, batch size, seed or caps); use the same settings or a new checkpoint file"
        )
    writer = CheckpointWriter(path, valid_bytes=state.valid_bytes)
    if state.header is None:
        writer.write(header)
    return writer, state.confirmed, state.uncertain, state.evals


async def fine_tune_run(
    client: AsyncGradient,
    adapter_id: str,
    data: SampleSource | TrainingSet,
    *,
    epochs: int = 1,
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_request_tokens: int | None = None,
    tokenizer: Callable[[str], int] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    resend_uncertain: bool = False,
    progress: TrainingProgress | Literal["tqdm"] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    eval_data: EvalSource | None = None,
    scorers: Sequence[ScorerArg] = ("contains",),
    eval_options: Mapping[str, Any] | None = None,
) -> FineTuneRunResult:
    """Fine-tune `adapter_id` on every sample of `data` for `epochs` epochs, `batch_size` samples per request.

    Args:
        data: a JSONL path, or a list/iterable of samples (strings or `{"inputs", "multiplier"?}` dicts).
        shuffle, seed: each epoch's order is a seeded shuffle (the same on every run with the same seed).
        max_request_bytes, max_request_tokens: a request closes early rather than pass these caps; tokens
            are estimated as len/4 unless `tokenizer` counts them.
        checkpoint: JSONL file recording each step before it is sent and when it is confirmed.
        resume: continue the run `checkpoint` holds: confirmed steps are skipped, never sent again.
        resend_uncertain: send again a step that was sent but not confirmed (else UncertainStepError).
        progress: `callback(done, total, running_loss)` or "tqdm" (the bar shows the epoch's running loss).
        on_step: called with each StepRecord as it is confirmed.
        eval_data, scorers, eval_options: evaluate the adapter after each epoch (see `evaluate`).

    Raises:
        UncertainStepError: the checkpoint has a sent-but-unconfirmed step and `resend_uncertain` is False.
        CheckpointError: the checkpoint belongs to another run, is corrupt, or exists without `resume`.
        APIError: a step failed; it was recorded as not applied when that is certain, so `resume` retries it.

    Example::

        run = await fine_tune_run(client, adapter_id, "train.jsonl", epochs=2, checkpoint="ckpt.jsonl")
        print([round(e.mean_loss or 0, 3) for e in run.epochs])
    """
    train = data if isinstance(data, TrainingSet) else load_samples(data, tokenizer=tokenizer)
    steps = plan_steps(
        train,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        max_request_bytes=max_request_bytes,
        max_request_tokens=max_request_tokens,
    )
    evaluator = None
    if eval_data is not None:
        from gradient_async.evaluation.dataset import load_items
        from gradient_async.evaluation.scorers import resolve_scorers

        eval_items = load_items(eval_data)
        eval_scorers = resolve_scorers(scorers)
        evaluator = (eval_items, eval_scorers)
    if resume and checkpoint is None:
        raise InputValidationError("resume=True needs a checkpoint file to resume from")
    result = FineTuneRunResult(adapter_id=adapter_id, checkpoint=None if checkpoint is None else Path(checkpoint))
    writer = None
    confirmed: dict[int, dict[str, Any]] = {}
    uncertain: set[int] = set()
    evals: dict[int, dict[str, Any]] = {}
    if checkpoint is not None:
        settings = {
            "epochs": epochs,
            "batch_size": batch_size,
            "shuffle": shuffle,
            "seed": seed,
            "samples": len(train),
        }
        header = _header(adapter_id, plan_digest(adapter_id, steps), steps, settings)
        writer, confirmed, uncertain, evals = _open_checkpoint(Path(checkpoint), resume=resume, header=header)
    bar: _TqdmBar | None = None
    callback: TrainingProgress | None
    if progress == "tqdm":
        bar = _TqdmBar(len(steps))
        callback = bar
    elif progress is None or callable(progress):
        callback = progress
    else:
        raise InputValidationError(f"progress must be a callable (done, total, loss), 'tqdm' or None, got {progress!r}")
    try:
        pending = sorted(uncertain)
        if pending and not resend_uncertain:
            first = next(s for s in steps if s.number == pending[0])
            raise UncertainStepError(
                f"step {first.number} of {len(steps)} (epoch {first.epoch}, {len(first.indices)} samples) was sent "
                "but never confirmed, so the server may or may not have trained on it. Fine-tunes are not "
                "idempotent: resume with resend_uncertain=True (--resend-uncertain) to send it again anyway",
                step=first.number,
            )
        epoch_steps: list[StepRecord] = []
        for step in steps:
            done = confirmed.get(step.number)
            if done is not None:
                if done.get("digest") != step.digest:
                    raise CheckpointError(f"checkpoint step {step.number} does not match this run's plan")
                record = StepRecord(
                    step=step.number,
                    epoch=step.epoch,
                    samples=len(step.indices),
                    trainable_tokens=int(done["trainable_tokens"]),
                    sum_loss=float(done["sum_loss"]),
                    duration=float(done.get("duration", 0.0)),
                    resumed=True,
                )
                result.skipped += 1
            else:
                record = await _send(client, adapter_id, train, step, writer)
                result.sent += 1
                if on_step is not None:
                    on_step(record)
            result.steps.append(record)
            epoch_steps.append(record)
            if callback is not None:
                callback(len(result.steps), len(steps), _running_loss(epoch_steps))
            if step.number == len(steps) or steps[step.number].epoch != step.epoch:
                epoch = await _close_epoch(client, adapter_id, step.epoch, epoch_steps, evaluator, eval_options, evals)
                if writer is not None and evaluator is not None and step.epoch not in evals:
                    writer.write({"type": "eval", "epoch": step.epoch, "summary": epoch.evaluation})
                result.epochs.append(epoch)
                epoch_steps = []
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return result


def _refused_before_work(error: APIStatusError) -> bool:
    """Statuses that mean the fine-tune was certainly not applied."""
    return (400 <= error.status_code < 500 and error.status_code != 408) or error.status_code == 507


def _running_loss(records: Sequence[StepRecord]) -> float | None:
    tokens = sum(r.trainable_tokens for r in records)
    return None if tokens == 0 else sum(r.sum_loss for r in records) / tokens


async def _send(
    client: AsyncGradient, adapter_id: str, train: TrainingSet, step: Step, writer: CheckpointWriter | None
) -> StepRecord:
    if writer is not None:
        writer.write({"type": "sent", "step": step.number, "digest": step.digest, "at": time.time()})
    started = time.monotonic()
    try:
        answer = await client.fine_tunes.create(adapter_id, samples=[train.sample(i) for i in step.indices])
    except (APIStatusError, APIConnectionError) as exc:
        # The server refused it before any work (a 4xx other than 408, or 507: nothing changed), or it
        # never left: not applied, so a resumed run may send it again. A 5xx or 408 may come after the
        # adapter was trained (a proxy's 502, an engine that died after training), and anything else
        # (a broken connection after sending, a cancelled run) stays uncertain too.
        not_applied = _refused_before_work(exc) if isinstance(exc, APIStatusError) else not exc.sent
        if writer is not None and not_applied:
            writer.write({"type": "rejected", "step": step.number, "error": f"{type(exc).__name__}: {exc}"})
        raise
    duration = time.monotonic() - started
    record = StepRecord(
        step=step.number,
        epoch=step.epoch,
        samples=len(step.indices),
        trainable_tokens=answer.number_of_trainable_tokens,
        sum_loss=answer.sum_loss,
        duration=duration,
    )
    if not math.isfinite(record.sum_loss):
        raise GradientError(f"step {step.number}: the server answered a non-finite loss {record.sum_loss!r}")
    if writer is not None:
        writer.write(
            {
                "type": "confirmed",
                "step": step.number,
                "digest": step.digest,
                "epoch": step.epoch,
                "samples": record.samples,
                "trainable_tokens": record.trainable_tokens,
                "sum_loss": record.sum_loss,
                "duration": round(duration, 6),
            }
        )
    return record


async def _close_epoch(
    client: AsyncGradient,
    adapter_id: str,
    epoch: int,
    records: Sequence[StepRecord],
    evaluator: tuple[Any, Any] | None,
    eval_options: Mapping[str, Any] | None,
    evals: dict[int, dict[str, Any]],
) -> EpochRecord:
    tokens = sum(r.trainable_tokens for r in records)
    loss = sum(r.sum_loss for r in records)
    summary: dict[str, Any] | None = None
    if evaluator is not None:
        if epoch in evals:
            summary = evals[epoch].get("summary")
        else:
            from gradient_async.evaluation.runner import evaluate

            items, scorers = evaluator
            ran: EvalSummary = (
                await evaluate(client, items, models=[adapter_id], scorers=scorers, **dict(eval_options or {}))
            ).summary
            summary = ran.to_json()
    scores = None
    if summary is not None:
        model = summary["models"].get(adapter_id, {})
        scores = {name: s.get("mean") for name, s in model.get("scores", {}).items()}
    return EpochRecord(epoch, len(records), tokens, loss, scores, summary)
