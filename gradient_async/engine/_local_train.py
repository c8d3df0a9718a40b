"""LoRA training for the local engine, one micro-batch at a time (synchronous, torch).

A sample is tokenized segment by segment (so segment borders are token
borders) and trained verbatim, no chat template, closed by the end-of-sequence
token. The loss is the causal-LM cross-entropy summed over the tokens of
trainable segments (the first token of a sample is never a target), times the
sample's `multiplier`.

`TrainingRun` trains a private copy of the adapter: the engine's scheduler runs
its micro-batches one by one (each a forward and backward of at most
`MICRO_BATCH_TOKENS` tokens; the last one of a step also takes the Adam step), so
completions are served between them, and nothing the server answers from
changes until the run is committed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradient_async.engine._local_generate import pad_batch
from gradient_async.engine._local_lora import LoraRouter, LoraWeights
from gradient_async.engine.base import TrainingSample

__all__ = ["MICRO_BATCH_TOKENS", "EncodedSample", "TrainingRun", "encode_sample"]

MICRO_BATCH_TOKENS = 2048


@dataclass(frozen=True)
class EncodedSample:
    ids: list[int]
    trainable: list[bool]  # per token: is it a loss target
    multiplier: float

    @property
    def trainable_tokens(self) -> int:
        return sum(self.trainable[1:])


def encode_sample(
    tokenizer: Any, sample: TrainingSample, prefix: Sequence[int], suffix: Sequence[int] = ()
) -> EncodedSample:
    """Token ids and loss mask; `prefix` (e.g. BOS) is context, never a target. `suffix` (the
    end-of-sequence token) closes the sample and is a target when the last segment is trainable,
    so the model learns where a trained answer ends instead of repeating it up to the token cap."""
    ids = list(prefix)
    trainable = [False] * len(ids)
    for segment in sample.segments:
        toks = tokenizer(
            segment.value, add_special_tokens=False, split_special_tokens=not segment.parse_special_tokens
        ).input_ids
        ids += toks
        trainable += [segment.trainable] * len(toks)
    if suffix and sample.segments:
        ids += suffix
        trainable += [sample.segments[-1].trainable] * len(suffix)
    return EncodedSample(ids=ids, trainable=trainable, multiplier=float(sample.multiplier))


def micro_batches(samples: Sequence[EncodedSample]) -> list[list[EncodedSample]]:
    """Samples grouped (shortest first) so a padded micro-batch holds at most MICRO_BATCH_TOKENS."""
    batches: list[list[EncodedSample]] = []
    current: list[EncodedSample] = []
    for s in sorted(samples, key=lambda s: len(s.ids)):
        if current and (len(current) + 1) * len(s.ids) > MICRO_BATCH_TOKENS:
            batches.append(current)
            current = []
        current.append(s)
    if current:
        batches.append(current)
    return batches


class TrainingRun:
    """`steps` Adam steps on `samples`, on a trainable copy of `start`.

    Call `unit()` until `done`; then `finite` says whether every loss and weight
    stayed finite, `sum_loss` is the first step's loss (before this run's
    updates) and `weights` / `optimizer_state()` are what to commit.
    """

    def __init__(
        self,
        model: Any,
        router: LoraRouter,
        start: LoraWeights,
        optimizer_state: dict[str, Any] | None,
        samples: Sequence[EncodedSample],
        *,
        steps: int,
        lr: float,
        pad_id: int,
    ) -> None:
        self.model = model
        self.router = router
        self.weights = start.trainable_copy()
        params = self.weights.parameters()
        self.optimizer = torch.optim.Adam(params, lr=lr)
        if optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(optimizer_state)
            except (RuntimeError, ValueError, KeyError):
                self.optimizer = torch.optim.Adam(params, lr=lr)  # a state for other shapes: start afresh
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.steps = steps
        self.pad_id = pad_id
        self.batches = micro_batches(samples)
        self.trainable_tokens = sum(s.trainable_tokens for s in samples)
        # Nothing to learn from (no weighted trainable token): one forward for the loss, no step.
        self.weighted = any(s.multiplier != 0 and s.trainable_tokens for s in samples)
        self.step = 0  # optimizer steps taken
        self.sum_loss = 0.0
        self.finite = True
        self._batch = 0
        self._total = 0.0
        self.done = False

    @property
    def units(self) -> int:
        """How many `unit()` calls the whole run takes."""
        return (self.steps if self.weighted else 1) * len(self.batches)

    def unit(self) -> bool:
        """One micro-batch (forward + backward; Adam step after the last one of a step).
        Returns True when that completed an optimizer step."""
        if self.done:
            raise RuntimeError("the training run is finished")
        with self.router.training(self.weights), torch.enable_grad():
            loss = self._loss(self.batches[self._batch])
            value = float(loss.detach())
            if not math.isfinite(value):
                self.finite, self.done = False, True
                return False
            if self.weighted:
                backward: Any = loss.backward  # untyped in torch
                backward()
        self._total += value
        self._batch += 1
        if self._batch < len(self.batches):
            return False
        if self.step == 0:
            self.sum_loss = self._total
        self._batch, self._total = 0, 0.0
        if not self.weighted:
            self.done = True
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if not self.weights.finite():
            self.finite, self.done = False, True
        elif self.step >= self.steps:
            self.done = True
        return True

    def optimizer_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.optimizer.state_dict()
        return state

    def _loss(self, batch: list[EncodedSample]) -> torch.Tensor:
        ids, mask = pad_batch([s.ids for s in batch], self.pad_id, left=False)
        weights = torch.zeros(ids.shape, dtype=torch.float32)
        for i, s in enumerate(batch):
            weights[i, : len(s.ids)] = torch.tensor(s.trainable, dtype=torch.float32) * s.multiplier
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return (nll * weights[:, 1:]).sum()
