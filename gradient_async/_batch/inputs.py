"""Turning what users pass as prompts into `Job`s, lazily, one at a time.

A prompt is a string, or a dict with `query` (or `prompt`), an optional `id`, and per-item
completion parameters that override the batch's.

Example::

    prompts = ["Hi", {"id": "q2", "query": "Bye", "temperature": 0.0}]
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Mapping
from typing import Any

from gradient_async._batch.items import Job
from gradient_async._errors import ValidationError

__all__ = ["Tokenizer", "aiter_any", "completion_job", "estimate_tokens", "known_length"]

Tokenizer = Callable[[str], int]


async def aiter_any(source: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """Iterate a sync or async iterable, lazily."""
    if isinstance(source, AsyncIterable):
        async for value in source:
            yield value
    else:
        for value in source:
            yield value


def known_length(source: object) -> int | None:
    """`len(source)` when it has one (lists, tuples), else None (generators, files)."""
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def estimate_tokens(text: str, max_tokens: int | None, tokenizer: Tokenizer | None) -> float:
    """Prompt tokens (the tokenizer's count, else len/4) plus the tokens it may generate."""
    prompt = tokenizer(text) if tokenizer is not None else math.ceil(len(text) / 4)
    return float(prompt + (max_tokens or 0))


def completion_job(
    index: int, raw: object, defaults: Mapping[str, Any], *, tokenizer: Tokenizer | None, count_tokens: bool
) -> Job[str]:
    """The job for one input item; ValidationError (naming the index) when it is malformed."""
    if isinstance(raw, str):
        item_id: Any = None
        query = raw
        params = dict(defaults)
    elif isinstance(raw, Mapping):
        fields = dict(raw)
        item_id = fields.pop("id", None)
        query = fields.pop("query", None)
        if query is None:
            query = fields.pop("prompt", None)
        if not isinstance(query, str):
            raise ValidationError(f"prompt {index}: expected a string 'query' (or 'prompt'), got {query!r}")
        params = {**defaults, **fields}
    else:
        raise ValidationError(f"prompt {index}: expected a string or a dict with 'query', got {type(raw).__name__}")
    cost = estimate_tokens(query, params.get("max_generated_token_count"), tokenizer) if count_tokens else 0.0
    return Job(index=index, id=item_id, prompt=query, params=params, cost=cost)
