"""The batch options, in one place: `BatchOptions` (an object you can build once and reuse) and
`BatchKwargs` (the same names as keywords, for `client.completions.batch(..., max_concurrency=16)`).

Every batch entry point (`completions.batch` / `stream_batch`, `embeddings.batch`, and the functions
in `gradient_async.batch`) takes `options=` and/or these keywords; keywords override the object.

Example::

    nightly = BatchOptions(max_concurrency=32, requests_per_minute=600, progress="tqdm")
    result = await client.completions.batch(model_id, prompts, options=nightly, max_generated_token_count=64)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from gradient_async._batch.progress import ProgressArg
from gradient_async._errors import ValidationError
from gradient_async._retry import RetryPolicy
from gradient_async.types.completions import CompletionParams

__all__ = ["BatchKwargs", "BatchOptions", "CompletionBatchKwargs"]


class BatchKwargs(TypedDict, total=False):
    """The batch options as keywords (see `BatchOptions` for what each one does)."""

    max_concurrency: int | None
    window: int | None
    requests_per_minute: float | None
    tokens_per_minute: float | None
    tokenizer: Callable[[str], int] | None
    retry: RetryPolicy | None
    fail_fast: bool
    progress: ProgressArg


class CompletionBatchKwargs(BatchKwargs, CompletionParams, total=False):
    """Batch options and completion settings (applied to every prompt), as keywords."""


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How a batch runs. Immutable; `replace(...)` derives another.

    Args:
        max_concurrency: this batch's cap on requests in flight (default: the client's cap, which
            every batch and call on the client shares anyway).
        window: most items in flight or finished-but-not-consumed (default 2 × max_concurrency):
            the memory bound of a streamed batch.
        requests_per_minute, tokens_per_minute: smooth client-side rate limits. Tokens are
            estimated as len(prompt)/4 + max_generated_token_count unless `tokenizer` counts them.
        tokenizer: `text -> token count`, for `tokens_per_minute`.
        retry: per-item retry policy (default: the client's, with at least 5 retries); its
            `deadline` bounds each item. A 429 pauses the whole batch for its Retry-After.
        fail_fast: cancel everything at the first item that fails for good, and raise its error.
        progress: `callback(done, total, ok, failed)` or "tqdm" (extra [batch]).

    Example::

        BatchOptions(max_concurrency=16, retry=RetryPolicy(max_retries=8, deadline=60.0))
    """

    max_concurrency: int | None = None
    window: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    tokenizer: Callable[[str], int] | None = None
    retry: RetryPolicy | None = None
    fail_fast: bool = False
    progress: ProgressArg = None

    def __post_init__(self) -> None:
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ValidationError(f"retry must be a RetryPolicy or None, got {type(self.retry).__name__}")
        if not isinstance(self.fail_fast, bool):
            raise ValidationError(f"fail_fast must be True or False, got {self.fail_fast!r}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
            ):
                raise ValidationError(f"{name} must be a positive finite number or None, got {value!r}")

    def replace(self, **changes: Any) -> BatchOptions:
        return dataclasses.replace(self, **changes)

    @classmethod
    def take(cls, options: BatchOptions | None, kwargs: dict[str, Any]) -> BatchOptions:
        """`options` (or the defaults) with the batch keywords found in `kwargs` applied; those keys
        are removed from `kwargs`, which keeps the rest (completion settings)."""
        if options is not None and not isinstance(options, BatchOptions):
            raise ValidationError(f"options must be a BatchOptions or None, got {type(options).__name__}")
        changes = {name: kwargs.pop(name) for name in _FIELDS if name in kwargs}
        base = options or _DEFAULT
        return dataclasses.replace(base, **changes) if changes else base


_FIELDS = tuple(f.name for f in dataclasses.fields(BatchOptions))
_DEFAULT = BatchOptions()
