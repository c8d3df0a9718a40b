"""Batch completions and embeddings: push 10 to 10^6 inputs through one model, get every answer back.

Results come back in input order (`complete_batch`) or as they complete with flat memory
(`stream_complete_batch`). Every call shares the client's concurrency cap; a batch adds its own
cap, smooth requests/tokens-per-minute limits, adaptive slow-down on 429 and bounded retries.
Usually reached through `client.completions.batch` / `stream_batch` and `client.embeddings.batch`.

Example::

    result = await client.completions.batch(adapter_id, ["Hi", "Bye"], max_generated_token_count=32)
    for item in result:
        print(item.index, item.value.generated_output if item.ok else item.error)

    async with client.completions.stream_batch(adapter_id, prompts, requests_per_minute=600) as stream:
        async for item in stream:
            ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, Unpack

from gradient_async._batch.inputs import aiter_any, completion_job, estimate_tokens, known_length
from gradient_async._batch.items import BatchFailed, BatchItem, BatchOk, BatchResult, BatchStats, Job, batch_item
from gradient_async._batch.options import BatchKwargs, BatchOptions, CompletionBatchKwargs
from gradient_async._batch.progress import ProgressCallback, TqdmProgress, resolve_progress
from gradient_async._batch.runner import BatchRunner
from gradient_async._errors import ValidationError
from gradient_async._hooks import BatchObserver
from gradient_async._retry import RetryPolicy
from gradient_async.resources._base import path_id
from gradient_async.resources.completions import build_complete_body
from gradient_async.types._base import validate_input
from gradient_async.types.completions import Completion
from gradient_async.types.embeddings import EmbedInput

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient

__all__ = [
    "BATCH_MIN_RETRIES",
    "BatchFailed",
    "BatchItem",
    "BatchKwargs",
    "BatchOk",
    "BatchOptions",
    "BatchResult",
    "BatchStats",
    "BatchStream",
    "CompletionBatchKwargs",
    "Prompt",
    "ProgressCallback",
    "TqdmProgress",
    "complete_batch",
    "embed_batch",
    "partial_result",
    "stream_complete_batch",
]

T = TypeVar("T")
P = TypeVar("P")

Prompt: TypeAlias = "str | Mapping[str, Any]"
"""A prompt string, or `{"query": ..., "id"?: ..., **completion_params}`."""

BATCH_MIN_RETRIES = 5
"""With `retry=None` a batch retries each item at least this often (the client's policy otherwise)."""


def partial_result(error: BaseException) -> BatchResult[Any] | None:
    """The items a batch had finished when `error` stopped it (`fail_fast`, your prompt source or a
    hook raising), in input order; None for an error no batch raised.

    Example::

        try:
            result = await client.completions.batch(model_id, read_prompts())
        except KeyError as exc:                     # your prompt generator's bug
            result = partial_result(exc)            # what had finished before it
    """
    found = getattr(error, "partial_result", None)
    return found if isinstance(found, BatchResult) else None


def _attach_partial(error: Exception, result: BatchResult[Any]) -> None:
    """Put `result` on `error` (`error.partial_result`) with a note saying so (replacing an earlier one)."""
    with contextlib.suppress(Exception):  # an exception type refusing attributes carries the note only
        setattr(error, "partial_result", result)  # noqa: B010
    note = f"gradient_async: {len(result.items)} batch items had finished (gradient_async.batch.partial_result(error))"
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list) and notes and str(notes[-1]).startswith("gradient_async: "):
        notes[-1] = note
    else:
        with contextlib.suppress(Exception):  # an odd __notes__: the error itself matters more than the note
            error.add_note(note)


def batch_policy(client: AsyncGradient, retry: RetryPolicy | None) -> RetryPolicy:
    """`retry`, or the client's policy with at least BATCH_MIN_RETRIES retries."""
    if retry is not None:
        if not isinstance(retry, RetryPolicy):
            raise ValidationError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        return retry
    policy = client.config.retry
    if policy.max_retries >= BATCH_MIN_RETRIES:
        return policy
    return dataclasses.replace(policy, max_retries=BATCH_MIN_RETRIES)


class BatchStream(Generic[T]):
    """Items as they complete (`async for`), with `stats` updated live. Use it as a context
    manager when you may stop early, so in-flight requests are cancelled at once.

    Example::

        async with client.completions.stream_batch(model_id, prompts) as stream:
            async for item in stream:
                print(item.index, item.value)
        print(stream.stats)
    """

    def __init__(self, runner: BatchRunner[Any, T], start: Callable[[], AsyncGenerator[BatchItem[T], None]]) -> None:
        self._runner = runner
        self._start = start
        self._gen: AsyncGenerator[BatchItem[T], None] | None = None

    @property
    def stats(self) -> BatchStats:
        return self._runner.stats

    def __aiter__(self) -> AsyncIterator[BatchItem[T]]:
        if self._gen is not None:
            raise RuntimeError("a BatchStream can be iterated only once")
        self._gen = self._start()
        return self._gen

    async def aclose(self) -> None:
        """Cancel whatever is still running."""
        if self._gen is not None:
            await self._gen.aclose()

    async def collect(self) -> BatchResult[T]:
        """Run to the end and return every item in input order.

        A batch that stops with an error (`fail_fast`, your prompt source or a hook raising) raises
        it with the items that had finished attached (`partial_result(error)`), so nothing already
        answered is lost.

        Example::

            result = await client.completions.stream_batch(model_id, prompts).collect()
        """
        items: list[BatchItem[T]] = []
        try:
            async with aclosing(self.__aiter__()) as gen:  # type: ignore[type-var]
                async for item in gen:
                    items.append(item)
        except Exception as exc:  # not cancellation: the caller stopped the batch and wants nothing back
            if self._runner.stopped_by is not None:  # fail_fast: the failed item is a finished one too
                items.append(self._runner.stopped_by)
            items.sort(key=lambda item: item.index)
            _attach_partial(exc, BatchResult(items, self.stats))
            raise
        items.sort(key=lambda item: item.index)
        return BatchResult(items, self.stats)

    async def __aenter__(self) -> BatchStream[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _runner(
    client: AsyncGradient,
    opts: BatchOptions,
    call: Callable[[Job[P]], Awaitable[T]],
    total: int | None,
    operation: tuple[str, str],
) -> BatchRunner[P, T]:
    """The one place batch options become a runner. `operation`: (GenAI operation name, model) for tracing."""
    return BatchRunner(
        call,
        limiter=lambda: client.limiter,
        max_concurrency=client.config.max_concurrency if opts.max_concurrency is None else opts.max_concurrency,
        window=opts.window,
        requests_per_minute=opts.requests_per_minute,
        tokens_per_minute=opts.tokens_per_minute,
        retry=batch_policy(client, opts.retry),
        fail_fast=opts.fail_fast,
        progress=resolve_progress(opts.progress),
        total=total,
        observer=BatchObserver.create(client._instrumentation, *operation),
    )


def stream_complete_batch(
    client: AsyncGradient,
    model_id: str,
    prompts: Iterable[Prompt] | AsyncIterable[Prompt],
    *,
    options: BatchOptions | None = None,
    **kwargs: Unpack[CompletionBatchKwargs],
) -> BatchStream[Completion]:
    """Complete every prompt, yielding items as they finish; see `client.completions.stream_batch`.
    Batch options come as `options=BatchOptions(...)` and/or keywords; other keywords are completion
    settings for every prompt (checked once, before anything is sent).

    Example::

        async with stream_complete_batch(client, model_id, open_prompts(), max_concurrency=16) as stream:
            async for item in stream:
                save(item.id, item.value)
    """
    params: dict[str, Any] = dict(kwargs)
    opts = BatchOptions.take(options, params)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Iterable, AsyncIterable)):
        raise ValidationError(
            f"prompts must be an iterable of prompts (e.g. ['Hi', 'Bye']), got {type(prompts).__name__}"
        )
    path_id(model_id, "model_id")  # fail on a bad id before the batch starts
    build_complete_body("-", params)  # fail on a bad or unknown setting before the batch starts
    tokenizer = opts.tokenizer
    wants_tokens = opts.tokens_per_minute is not None
    create = client.completions.create

    def make_job(index: int, raw: Any) -> Job[str]:
        return completion_job(index, raw, params, tokenizer=tokenizer, count_tokens=wants_tokens)

    async def call(job: Job[str]) -> Completion:
        # the resource builds and checks the body (a bad item fails alone); the batch retries
        return await create(model_id, query=job.prompt, max_retries=0, **job.params)

    runner: BatchRunner[str, Completion] = _runner(
        client, opts, call, known_length(prompts), ("text_completion", model_id)
    )
    return BatchStream(runner, lambda: runner.iterate(prompts, make_job))


async def complete_batch(
    client: AsyncGradient,
    model_id: str,
    prompts: Iterable[Prompt] | AsyncIterable[Prompt],
    *,
    options: BatchOptions | None = None,
    **kwargs: Unpack[CompletionBatchKwargs],
) -> BatchResult[Completion]:
    """Complete every prompt; items in input order. Same options as `stream_complete_batch`.

    Example::

        result = await complete_batch(client, model_id, ["Hi", "Bye"], max_concurrency=16)
    """
    return await stream_complete_batch(client, model_id, prompts, options=options, **kwargs).collect()


async def _chunks(
    texts: Iterable[str] | AsyncIterable[str],
    size: int,
    rejected: list[BatchItem[list[float]]],
    fail_fast: bool = False,
) -> AsyncIterator[list[tuple[int, str]]]:
    """Valid texts in chunks of `size`, each with its input index; an invalid text becomes its own
    failed item in `rejected` (naming its index) instead of failing the chunk it would have joined,
    or, with `fail_fast`, stops the batch with its error."""
    chunk: list[tuple[int, str]] = []
    index = 0
    async with aclosing(aiter_any(texts)) as source:  # closed here too when a text stops the batch
        async for text in source:
            try:
                validate_input(EmbedInput, f"text {index}", {"input": text})
            except ValidationError as err:
                rejected.append(batch_item(index, text, error=err))
                if fail_fast:
                    raise
            else:
                chunk.append((index, text))
                if len(chunk) == size:
                    yield chunk
                    chunk = []
            index += 1
    if chunk:
        yield chunk


async def embed_batch(
    client: AsyncGradient,
    slug: str,
    texts: Iterable[str] | AsyncIterable[str],
    *,
    chunk_size: int = 256,
    options: BatchOptions | None = None,
    **kwargs: Unpack[BatchKwargs],
) -> BatchResult[list[float]]:
    """Embed every text (sent `chunk_size` per request, same engine as completions); one item per
    text in input order, value = its vector. Progress counts requests (chunks).

    Example::

        result = await embed_batch(client, "bge-large", texts)
        vectors = [item.unwrap() for item in result]
    """
    rest: dict[str, Any] = dict(kwargs)
    opts = BatchOptions.take(options, rest)
    if rest:
        raise ValidationError(f"unknown embeddings batch option(s): {', '.join(sorted(rest))}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= 256:
        raise ValidationError(f"chunk_size must be an integer from 1 to 256, got {chunk_size!r}")
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (Iterable, AsyncIterable)):
        raise ValidationError(f"texts must be an iterable of strings, e.g. ['hello'], got {type(texts).__name__}")
    path_id(slug, "slug")  # fail on a bad slug before the batch starts
    tokenizer = opts.tokenizer
    wants_tokens = opts.tokens_per_minute is not None
    embed = client.embeddings.create

    def make_job(index: int, chunk: list[tuple[int, str]]) -> Job[list[tuple[int, str]]]:
        cost = sum(estimate_tokens(t, 0, tokenizer) for _, t in chunk) if wants_tokens else 0.0
        return Job(index=index, id=None, prompt=chunk, params={}, cost=cost)

    async def call(job: Job[list[tuple[int, str]]]) -> list[list[float]]:
        result = await embed(slug, inputs=[text for _, text in job.prompt], max_retries=0)
        return [e.embedding for e in sorted(result.embeddings, key=lambda e: e.index)]

    length = known_length(texts)
    total = None if length is None else math.ceil(length / chunk_size)
    runner: BatchRunner[list[tuple[int, str]], list[list[float]]] = _runner(
        client, opts, call, total, ("embeddings", slug)
    )
    items: list[BatchItem[list[float]]] = []
    stream = BatchStream(runner, lambda: runner.iterate(_chunks(texts, chunk_size, items, opts.fail_fast), make_job))
    try:
        chunks = await stream.collect()
    except Exception as exc:  # the items that had finished ride on the error: per text, as a result would be
        partial = partial_result(exc)
        if partial is not None:
            _attach_partial(exc, _per_text(partial.items, items, runner.stats))
        raise
    return _per_text(chunks.items, items, runner.stats)


def _per_text(
    chunk_items: Sequence[BatchItem[list[list[float]]]], rejected: list[BatchItem[list[float]]], runner: BatchStats
) -> BatchResult[list[float]]:
    """Embedding chunks split back into one item per text (with the texts rejected before sending)."""
    items = list(rejected)
    for chunk in chunk_items:
        texts_in_chunk: list[tuple[int, str]] = chunk.prompt
        vectors = chunk.value
        for offset, (index, text) in enumerate(texts_in_chunk):
            value = vectors[offset] if vectors is not None and offset < len(vectors) else None
            error = chunk.error
            if error is None and value is None:
                error = ValidationError(f"the server returned no embedding for text {offset} of chunk {chunk.index}")
            items.append(batch_item(index, text, value=value, error=error, attempts=chunk.attempts))
    stats = BatchStats(
        ok=sum(item.ok for item in items),
        failed=sum(not item.ok for item in items),
        requests=runner.requests,
        retried=runner.retried,
        rate_limited=runner.rate_limited,
        elapsed=runner.elapsed,
    )
    items.sort(key=lambda item: item.index)
    return BatchResult(items, stats)
