"""Model handles: the objects `client.models.list()` returns, with the official SDK's methods.

Example::

    base = (await client.models.list(only_base=True))[-1]
    adapter = await base.create_adapter(name="my_model_adapter")
    print((await adapter.complete(query="Hi")).generated_output)
    result = await adapter.fine_tune(samples=[{"inputs": "Hi there!"}])
    await adapter.delete()
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Unpack

from pydantic import PrivateAttr

from gradient_async._errors import ClientClosedError
from gradient_async.types.completions import Completion, CompletionParams
from gradient_async.types.fine_tunes import FineTuneResult, Sample
from gradient_async.types.models import BaseModelInfo, ModelAdapterInfo

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient

__all__ = ["BaseModelHandle", "Model", "ModelAdapter"]


def _attached(client: AsyncGradient | None) -> AsyncGradient:
    if client is None:
        raise ClientClosedError("this object is not attached to a client; get it from client.models")
    return client


class BaseModelHandle(BaseModelInfo):
    """A base model you can complete with and create adapters from (`BaseModel` before 0.3: that name
    shadowed pydantic's and is kept as a deprecated alias)."""

    _client: Any = PrivateAttr(default=None)

    def bind(self, client: AsyncGradient) -> BaseModelHandle:
        """Attach to `client` (done for you by every client method that returns one)."""
        self._client = client
        return self

    @property
    def client(self) -> AsyncGradient:
        """The client this handle calls through."""
        return _attached(self._client)

    async def complete(self, *, query: str, **params: Unpack[CompletionParams]) -> Completion:
        """Complete `query` with the bare base model.

        Example::

            out = await base.complete(query="Say hi", max_generated_token_count=20)
        """
        return await self.client.completions.create(self.id, query=query, **params)

    async def create_adapter(
        self, *, name: str, rank: int | None = None, learning_rate: float | None = None
    ) -> ModelAdapter:
        """Create a new adapter over this base model (not idempotent: each call makes one).

        Example::

            adapter = await base.create_adapter(name="my_model_adapter", rank=8)
        """
        return await self.client.adapters.create(
            base_model_id=self.id, name=name, rank=rank, learning_rate=learning_rate
        )


class ModelAdapter(ModelAdapterInfo):
    """A fine-tunable adapter: complete, fine-tune, delete."""

    _client: Any = PrivateAttr(default=None)

    def bind(self, client: AsyncGradient) -> ModelAdapter:
        """Attach to `client` (done for you by every client method that returns one)."""
        self._client = client
        return self

    @property
    def client(self) -> AsyncGradient:
        """The client this handle calls through."""
        return _attached(self._client)

    async def complete(self, *, query: str, **params: Unpack[CompletionParams]) -> Completion:
        """Complete `query` with this adapter.

        Example::

            out = await adapter.complete(query="Question: ...\\n\\nAnswer: ")
        """
        return await self.client.completions.create(self.id, query=query, **params)

    async def fine_tune(
        self,
        *,
        samples: Sequence[str | Sample | dict[str, Any]],
        multiplier: float | None = None,
        idempotent: bool = False,
    ) -> FineTuneResult:
        """Train this adapter on `samples`; returns trainable tokens and summed loss.

        Example::

            r = await adapter.fine_tune(samples=[{"inputs": "Q: 2+2?\\nA: 4"}])
            print(r.number_of_trainable_tokens, r.sum_loss)
        """
        return await self.client.fine_tunes.create(
            self.id, samples=samples, multiplier=multiplier, idempotent=idempotent
        )

    async def delete(self) -> None:
        """Delete this adapter and its weights.

        Example::

            await adapter.delete()
        """
        await self.client.adapters.delete(self.id)


Model = BaseModelHandle | ModelAdapter


def __getattr__(name: str) -> Any:
    if name == "BaseModel":
        warnings.warn(
            "gradient_async.objects.BaseModel is deprecated: use BaseModelHandle (the old name shadowed pydantic's)",
            DeprecationWarning,
            stacklevel=2,
        )
        return BaseModelHandle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
