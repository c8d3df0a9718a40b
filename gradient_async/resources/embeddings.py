"""`client.embeddings`: `GET /embeddings` and `POST /embeddings/{slug}`."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async._errors import ValidationError
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import validate_input
from gradient_async.types.embeddings import (
    EmbedBody,
    EmbeddingsModel,
    EmbeddingsModelList,
    EmbeddingsResponse,
)

if TYPE_CHECKING:
    from gradient_async.batch import BatchKwargs, BatchOptions, BatchResult

__all__ = ["AsyncEmbeddings"]


class AsyncEmbeddings(AsyncResource):
    """Embeddings models and embedding generation."""

    async def list(
        self,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> builtins.list[EmbeddingsModel]:
        """The embeddings models of the workspace.

        Example::

            slugs = [m.slug for m in await client.embeddings.list()]
        """
        result = await self._client.request(
            RequestOptions(
                "GET",
                "/embeddings",
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            EmbeddingsModelList.model_validate,
        )
        return result.embeddings_models

    async def create(
        self,
        slug: str,
        *,
        inputs: Sequence[str],
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> EmbeddingsResponse:
        """Embed 1–256 texts; `embeddings[i].index` is the position in `inputs`.

        Example::

            resp = await client.embeddings.create("bge-large", inputs=["hello", "world"])
            vectors = [e.embedding for e in sorted(resp.embeddings, key=lambda e: e.index)]
        """
        if isinstance(inputs, str) or not isinstance(inputs, Sequence):
            raise ValidationError("inputs must be a list of strings, e.g. ['hello']")
        path = f"/embeddings/{path_id(slug, 'slug')}"
        body = validate_input(EmbedBody, "embeddings request", {"inputs": [{"input": text} for text in inputs]})
        result = await self._client.request(
            RequestOptions(
                "POST",
                path,
                json=body.to_wire(),
                idempotent=True,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            EmbeddingsResponse.model_validate,
        )
        return result

    async def batch(
        self,
        slug: str,
        texts: Iterable[str] | AsyncIterable[str],
        *,
        chunk_size: int = 256,
        options: BatchOptions | None = None,
        **kwargs: Unpack[BatchKwargs],
    ) -> BatchResult[builtins.list[float]]:
        """Embed any number of texts, `chunk_size` per request, through the completions batch engine
        (same options, limits, retries and 429 handling: see `BatchOptions`). One item per text, in
        input order, value = its vector.

        Example::

            result = await client.embeddings.batch("bge-large", texts, max_concurrency=8)
            vectors = [item.unwrap() for item in result]
        """
        from gradient_async.batch import embed_batch

        return await embed_batch(self._client, slug, texts, chunk_size=chunk_size, options=options, **kwargs)
