"""Batched decoding, guidance scoring and embeddings for the local engine (synchronous, torch).

Batches are left-padded for generation (pad = eos) and right-padded with
explicit position ids for plain forward passes. Each row has its own token cap
(a per-row stopping criterion), so one batch can mix `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig as _GenerationConfig
from transformers import StoppingCriteria, StoppingCriteriaList

from gradient_async.engine.base import FinishReason

__all__ = ["Sampling", "embed_batch", "generate_rows", "pad_batch", "score_choices"]

GenerationConfig: Any = _GenerationConfig  # untyped in transformers


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by a generation group; temperature None means greedy."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature is None


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of a padded batch."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        start = width - len(seq) if left else 0
        ids[i, start : start + len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, start : start + len(seq)] = 1
    return ids, mask


class _RowCaps(StoppingCriteria):
    """Marks row i finished once it has generated caps[i] tokens."""

    def __init__(self, caps: Sequence[int], prompt_width: int) -> None:
        self.caps = torch.tensor(list(caps), dtype=torch.long)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done: torch.BoolTensor = (input_ids.shape[1] - self.prompt_width) >= self.caps  # type: ignore[assignment]
        return done


def generate_rows(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    caps: Sequence[int],
    sampling: Sampling,
    eos_ids: Sequence[int],
) -> list[tuple[str, FinishReason, int]]:
    """Generate for left-padded prompts; return (text, finish_reason, generated tokens) per row
    (the end-of-sequence token counts; the caller chooses each row's adapter through the LoRA router)."""
    pad_id = int(tokenizer.pad_token_id)
    ids, mask = pad_batch(prompts, pad_id, left=True)
    config = GenerationConfig(
        max_new_tokens=max(caps),
        pad_token_id=pad_id,
        eos_token_id=list(eos_ids),
        do_sample=not sampling.greedy,
    )
    if not sampling.greedy:
        config.temperature = sampling.temperature
        config.top_k = sampling.top_k or 0
        config.top_p = 1.0 if sampling.top_p is None else sampling.top_p
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([_RowCaps(caps, ids.shape[1])]),
        )
    new = out[:, ids.shape[1] :].tolist()
    eos = set(eos_ids)
    results: list[tuple[str, FinishReason, int]] = []
    for row, cap in zip(new, caps, strict=True):
        row = row[:cap]
        stop = next((i for i, tok in enumerate(row) if tok in eos), None)
        if stop is None:
            results.append((tokenizer.decode(row, skip_special_tokens=True), "length", len(row)))
        else:
            results.append((tokenizer.decode(row[:stop], skip_special_tokens=True), "stop", stop + 1))
    return results


def score_choices(
    model: Any,
    pad_id: int,
    prompt: Sequence[int],
    choices: Sequence[Sequence[int]],
) -> int:
    """Index of the choice with the highest total log-likelihood after the prompt."""
    seqs = [list(prompt) + list(c) for c in choices]
    ids, mask = pad_batch(seqs, pad_id, left=False)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        token_lp = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    scores = []
    for i, choice in enumerate(choices):
        start = len(prompt) - 1  # logits at t predict token t + 1
        scores.append(float(token_lp[i, start : start + len(choice)].sum()))
    return max(range(len(scores)), key=scores.__getitem__)


def embed_batch(decoder: Any, pad_id: int, seqs: Sequence[Sequence[int]]) -> list[list[float]]:
    """Mean of the last hidden states over the tokens, L2-normalised."""
    ids, mask = pad_batch(seqs, pad_id, left=False)
    positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    with torch.inference_mode():
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    vectors: list[list[float]] = pooled.tolist()
    return vectors
