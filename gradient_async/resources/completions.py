"""`client.completions`: `POST /models/{id}/complete`."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Unpack

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async._retry import RetryHook, RetryPolicy
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody, Completion, CompletionParams

if TYPE_CHECKING:
    from gradient_async.batch import BatchResult, BatchStream, ProgressCallback

__all__ = ["AsyncCompletions", "build_complete_body"]


def build_complete_body(query: str, params: CompletionParams | dict[str, Any]) -> dict[str, Any]:
    """The wire body for one completion, validated (ValidationError names the bad field)."""
    return validate_input(CompleteBody, "completion request", {"query": query, **params}).to_wire()


class AsyncCompletions(AsyncResource):
    """Completions with a base model or an adapter."""

    async def create(
        self,
        model_id: str,
        *,
        query: str,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        on_retry: RetryHook | None = None,
        **params: Unpack[CompletionParams],
    ) -> Completion:
        """Complete `query` with a base model or adapter (retried on 429/5xx/timeouts).

        Args:
            model_id: base model id or adapter id.
            query: the prompt (non-empty).
            max_generated_token_count: 1–511.
            temperature, top_k, top_p: sampling settings (server defaults when None).
            auto_template: apply the base model's prompt template (server default: true).
            guidance: `{"type": "choice", "value": [...]}` restricts the output to one choice.
            rag: `{"collection_id": ...}` retrieves context first.
            timeout, max_retries, extra_headers, extra_query, extra_body: per-call options.
            on_retry: called with a `RetryEvent` before each retry wait.

        Example::

            out = await client.completions.create(adapter.id, query="Hi", max_generated_token_count=32)
            print(out.generated_output, out.finish_reason)
        """
        path = f"/models/{path_id(model_id, 'model_id')}/complete"
        body = build_complete_body(query, params)
        result = await self._client.request(
            RequestOptions(
                "POST",
                path,
                json=body,
                idempotent=True,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
                on_retry=on_retry,
            ),
            Completion.model_validate,
        )
        return result

    async def batch(
        self,
        model_id: str,
        prompts: Iterable[str | Mapping[str, Any]] | AsyncIterable[str | Mapping[str, Any]],
        *,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        tokenizer: Callable[[str], int] | None = None,
        retry: RetryPolicy | None = None,
        fail_fast: bool = False,
        progress: ProgressCallback | Literal["tqdm"] | None = None,
        **params: Unpack[CompletionParams],
    ) -> BatchResult[Completion]:
        """Complete every prompt; results in input order, one `BatchItem` each (`.value` or `.error`).

        Args:
            prompts: strings, or dicts `{"query": ..., "id"?: ..., **per-item params}`; any (async) iterable.
            max_concurrency: this batch's cap on requests in flight (default: the client's cap, which
                every batch and call on the client shares anyway).
            requests_per_minute, tokens_per_minute: smooth client-side rate limits. Tokens are
                estimated as len(prompt)/4 + max_generated_token_count unless `tokenizer` counts them.
            retry: per-item retry policy (default: the client's, with at least 5 retries). A 429
                pauses the whole batch for its Retry-After and shrinks the concurrency window.
            fail_fast: cancel everything at the first item that fails for good, and raise its error.
            progress: `callback(done, total, ok, failed)` or "tqdm" (extra [batch]).
            **params: completion settings for every prompt (see `create`).

        Example::

            result = await client.completions.batch(adapter.id, ["Hi", "Bye"], max_generated_token_count=32)
            print(result.ok, result.failed, result.retried)
            answers = [item.value.generated_output for item in result if item.ok]
        """
        return await self.stream_batch(
            model_id,
            prompts,
            max_concurrency=max_concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            tokenizer=tokenizer,
            retry=retry,
            fail_fast=fail_fast,
            progress=progress,
            **params,
        ).collect()

    def stream_batch(
        self,
        model_id: str,
        prompts: Iterable[str | Mapping[str, Any]] | AsyncIterable[str | Mapping[str, Any]],
        *,
        max_concurrency: int | None = None,
        window: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        tokenizer: Callable[[str], int] | None = None,
        retry: RetryPolicy | None = None,
        fail_fast: bool = False,
        progress: ProgressCallback | Literal["tqdm"] | None = None,
        **params: Unpack[CompletionParams],
    ) -> BatchStream[Completion]:
        """Like `batch`, but yields items as they complete, in flat memory: the input is read lazily and
        at most `window` items (default 2 × max_concurrency) are in flight or waiting to be consumed.

        Example::

            async with client.completions.stream_batch(adapter.id, read_prompts()) as stream:
                async for item in stream:
                    print(item.index, item.id, item.value or item.error)
        """
        from gradient_async.batch import stream_complete_batch

        return stream_complete_batch(
            self._client,
            model_id,
            prompts,
            max_concurrency=max_concurrency,
            window=window,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            tokenizer=tokenizer,
            retry=retry,
            fail_fast=fail_fast,
            progress=progress,
            **params,
        )
