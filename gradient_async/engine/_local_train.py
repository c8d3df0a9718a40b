"""LoRA training steps for the local engine (synchronous, torch).

A sample is tokenized segment by segment (so segment borders are token
borders) and trained verbatim, no chat template, closed by the end-of-sequence token. The loss is the causal-LM
cross-entropy summed over the tokens of trainable segments (the first token of
a sample is never a target), times the sample's `multiplier`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradient_async.engine._local_generate import pad_batch
from gradient_async.engine.base import TrainingSample

__all__ = ["EncodedSample", "StepResult", "encode_sample", "train_steps"]

_MICRO_BATCH_TOKENS = 2048


@dataclass(frozen=True)
class EncodedSample:
    ids: list[int]
    trainable: list[bool]  # per token: is it a loss target
    multiplier: float

    @property
    def trainable_tokens(self) -> int:
        return sum(self.trainable[1:])


@dataclass(frozen=True)
class StepResult:
    trainable_tokens: int
    sum_loss: float  # loss of the first step, i.e. before this call's updates
    finite: bool


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


def _micro_batches(samples: Sequence[EncodedSample]) -> list[list[EncodedSample]]:
    batches: list[list[EncodedSample]] = []
    current: list[EncodedSample] = []
    for s in sorted(samples, key=lambda s: len(s.ids)):
        if current and (len(current) + 1) * len(s.ids) > _MICRO_BATCH_TOKENS:
            batches.append(current)
            current = []
        current.append(s)
    if current:
        batches.append(current)
    return batches


def _loss(model: Any, batch: list[EncodedSample], pad_id: int) -> torch.Tensor:
    ids, mask = pad_batch([s.ids for s in batch], pad_id, left=False)
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    for i, s in enumerate(batch):
        weights[i, : len(s.ids)] = torch.tensor(s.trainable, dtype=torch.float32) * s.multiplier
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll * weights[:, 1:]).sum()


def train_steps(
    model: Any,
    params: list[torch.nn.Parameter],
    optimizer: Any,
    samples: Sequence[EncodedSample],
    steps: int,
    pad_id: int,
) -> StepResult:
    """Run `steps` Adam steps on the samples; on a non-finite loss or weight, restore
    the parameters and optimizer state from before the call and report `finite=False`."""
    tokens = sum(s.trainable_tokens for s in samples)
    weighted = any(s.multiplier != 0 and s.trainable_tokens for s in samples)
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(optimizer.state_dict())
    try:
        first_loss, finite = _run_steps(model, params, optimizer, samples, steps, pad_id, weighted)
    except BaseException:
        _restore(params, optimizer, saved_params, saved_state)
        raise
    if not finite:
        _restore(params, optimizer, saved_params, saved_state)
    return StepResult(trainable_tokens=tokens, sum_loss=first_loss, finite=finite)


def _restore(params: list[torch.nn.Parameter], optimizer: Any, saved: list[torch.Tensor], state: Any) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, old in zip(params, saved, strict=True):
            p.copy_(old)
    optimizer.load_state_dict(state)


def _run_steps(
    model: Any,
    params: list[torch.nn.Parameter],
    optimizer: Any,
    samples: Sequence[EncodedSample],
    steps: int,
    pad_id: int,
    weighted: bool,
) -> tuple[float, bool]:
    first_loss = 0.0
    finite = True
    for step in range(steps):
        total = 0.0
        for batch in _micro_batches(samples):
            loss = _loss(model, batch, pad_id)
            value = float(loss.detach())
            if not math.isfinite(value):
                finite = False
                break
            if weighted:
                backward: Any = loss.backward  # untyped in torch
                backward()
            total += value
        if not finite:
            break
        if step == 0:
            first_loss = total
        if not weighted:
            break  # nothing to learn from: no optimizer step
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if finite and not all(bool(torch.isfinite(p).all()) for p in params):
        finite = False
    return first_loss, finite
