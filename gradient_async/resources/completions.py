"""`client.completions`: `POST /models/{id}/complete`."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async._retry import RetryHook
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody, Completion, CompletionParams

if TYPE_CHECKING:
    from gradient_async.batch import BatchOptions, BatchResult, BatchStream, CompletionBatchKwargs

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
            on_retry: deprecated (warns): use `AsyncGradient(hooks=Hooks(on_retry=[...]))`.

        Example::

            out = await client.completions.create(adapter.id, query="Hi", max_generated_token_count=32)
            print(out.generated_output, out.finish_reason)
        """
        path = f"/models/{path_id(model_id, 'model_id')}/complete"
        body = build_complete_body(query, params)
        if on_retry is not None:
            warnings.warn(
                "completions.create(on_retry=...) is deprecated; pass AsyncGradient(hooks=Hooks(on_retry=[...])) "
                "or client.with_options(hooks=...) instead",
                DeprecationWarning,
                stacklevel=2,
            )
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
        options: BatchOptions | None = None,
        **kwargs: Unpack[CompletionBatchKwargs],
    ) -> BatchResult[Completion]:
        """Complete every prompt; results in input order, one `BatchItem` each (`.value` or `.error`).

        Args:
            prompts: strings, or dicts `{"query": ..., "id"?: ..., **per-item params}`; any (async) iterable.
            options: a `BatchOptions` (concurrency, window, rate limits, retry, fail_fast, progress);
                the same names are accepted as keywords and override it.
            **kwargs: batch options (see `BatchOptions`) and completion settings for every prompt
                (see `create`), checked before anything is sent.

        Example::

            result = await client.completions.batch(adapter.id, ["Hi", "Bye"], max_generated_token_count=32)
            print(result.ok, result.failed, result.retried)
            answers = [item.value.generated_output for item in result if item.ok]
        """
        return await self.stream_batch(model_id, prompts, options=options, **kwargs).collect()

    def stream_batch(
        self,
        model_id: str,
        prompts: Iterable[str | Mapping[str, Any]] | AsyncIterable[str | Mapping[str, Any]],
        *,
        options: BatchOptions | None = None,
        **kwargs: Unpack[CompletionBatchKwargs],
    ) -> BatchStream[Completion]:
        """Like `batch`, but yields items as they complete, in flat memory: the input is read lazily and
        at most `window` items (default 2 × max_concurrency) are in flight or waiting to be consumed.

        Example::

            async with client.completions.stream_batch(adapter.id, read_prompts()) as stream:
                async for item in stream:
                    print(item.index, item.id, item.value or item.error)
        """
        from gradient_async.batch import stream_complete_batch

        return stream_complete_batch(self._client, model_id, prompts, options=options, **kwargs)
