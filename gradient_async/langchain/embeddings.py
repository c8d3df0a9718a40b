"""`GradientEmbeddings`: LangChain's Gradient embeddings on this SDK, batched and async-first.

Drop-in for `langchain_community.embeddings.GradientEmbeddings` (same fields and environment
variables), without the official SDK and without any request at construction time.

Example::

    from gradient_async.langchain import GradientEmbeddings

    embeddings = GradientEmbeddings(model="bge-large")
    vectors = await embeddings.aembed_documents(texts)      # 256 texts per request, in parallel
    query = embeddings.embed_query("What is LoRA?")
"""

from __future__ import annotations

from typing import Any, Self

import anyio.to_thread
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from gradient_async._client import AsyncGradient
from gradient_async._config import DEFAULT_BASE_URL
from gradient_async.langchain._common import attach_runtime, fill_from_env
from gradient_async.langchain._runtime import ClientRuntime

__all__ = ["GradientEmbeddings"]


class GradientEmbeddings(BaseModel, Embeddings):
    """Gradient embeddings for LangChain vector stores and retrievers.

    Same fields as LangChain's (`model` is the embeddings slug, e.g. "bge-large";
    `gradient_access_token`, `gradient_workspace_id`, `gradient_api_url`,
    `query_prompt_for_retrieval`), plus `batch_size` (texts per request, at most the API's 256),
    `max_concurrency`, `max_retries`, `timeout` and `client=` to share an `AsyncGradient`.

    Example::

        embeddings = GradientEmbeddings(model="bge-large", batch_size=128, max_concurrency=8)
        vectors = embeddings.embed_documents(["first text", "second text"])
    """

    model: str = Field(min_length=1)
    """The embeddings model slug, e.g. "bge-large"."""
    gradient_workspace_id: str | None = None
    """Workspace id; default GRADIENT_WORKSPACE_ID."""
    gradient_access_token: SecretStr | None = None
    """Access token; default GRADIENT_ACCESS_TOKEN. Never shown in repr or logs."""
    gradient_api_url: str = DEFAULT_BASE_URL
    """API root including `/api`; default GRADIENT_API_URL or https://api.gradient.ai/api."""
    query_prompt_for_retrieval: str | None = None
    """Prefix for `embed_query` texts (e.g. an instruction for retrieval models)."""
    batch_size: int = Field(default=256, ge=1, le=256)
    """Texts per request (the API takes 1–256)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once."""
    max_retries: int = Field(default=2, ge=0)
    """Retries per request on 429 / 5xx / timeouts."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds per request; None: the SDK default (120 s)."""
    client: AsyncGradient | None = Field(default=None, exclude=True)
    """An existing AsyncGradient to share; when set, the gradient_* fields must be left unset."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    _runtime: ClientRuntime | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_env(cls, values: Any) -> Any:
        return fill_from_env(values)

    @model_validator(mode="after")
    def _build_runtime(self) -> Self:
        self._runtime = attach_runtime(self)
        return self

    @property
    def runtime(self) -> ClientRuntime:
        """Where this object's clients live (one per event loop, plus the sync bridge)."""
        assert self._runtime is not None
        return self._runtime

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts`, `batch_size` per request, requests in parallel; vectors in input order.

        Example::

            vectors = await embeddings.aembed_documents(["a", "b", "c"])
        """
        if not texts:
            return []
        client = await self.runtime.client()
        if len(texts) <= self.batch_size:
            response = await client.embeddings.create(self.model, inputs=texts)
            return [e.embedding for e in sorted(response.embeddings, key=lambda e: e.index)]
        retry = client.config.retry if "max_retries" in self.model_fields_set else None
        result = await client.embeddings.batch(
            self.model,
            texts,
            chunk_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            retry=retry,
            fail_fast=True,
        )
        return [item.unwrap() for item in result]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Blocking `aembed_documents`, usable from scripts, threads and running loops.

        Example::

            vectors = embeddings.embed_documents(["a", "b", "c"])
        """
        if not texts:
            return []
        return self.runtime.run_sync(lambda: self.aembed_documents(texts))

    def _query_text(self, text: str) -> str:
        return f"{self.query_prompt_for_retrieval} {text}" if self.query_prompt_for_retrieval else text

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one query (prefixed with `query_prompt_for_retrieval` when set).

        Example::

            vector = await embeddings.aembed_query("What is LoRA?")
        """
        return (await self.aembed_documents([self._query_text(text)]))[0]

    def embed_query(self, text: str) -> list[float]:
        """Blocking `aembed_query`.

        Example::

            vector = embeddings.embed_query("What is LoRA?")
        """
        return self.embed_documents([self._query_text(text)])[0]

    async def aclose(self) -> None:
        """Close the connections opened on the running loop and stop the sync bridge.

        Example::

            await embeddings.aclose()
        """
        await self.runtime.aclose()
        await anyio.to_thread.run_sync(self.runtime.close)

    def close(self) -> None:
        """Stop the private loop that serves sync calls and close its connections.

        Example::

            embeddings.close()
        """
        self.runtime.close()
