"""`client.completions`: `POST /models/{id}/complete`."""

from __future__ import annotations

from typing import Any, Unpack

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async._retry import RetryHook
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody, Completion, CompletionParams

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
                on_retry=on_retry,
            ),
            Completion.model_validate,
        )
        assert result is not None
        return result
