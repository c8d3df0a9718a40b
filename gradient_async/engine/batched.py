"""`BatchedEngine`: an engine that wants batching, behind a `DynamicBatcher`.

The local and test engines decode whole batches (`BatchGenerator.generate`); the
vLLM engine schedules its own batches and is an `Engine` as it is. The registry
wraps the engines that want it, so the server never knows about batching.

Example::

    engine = BatchedEngine(TestEngine(data_dir), max_batch_size=32, max_wait_s=0.002)
    result = await engine.complete(GenerationRequest("gradient-test-model", "Hi"))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    BatchGenerator,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
)
from gradient_async.engine.batching import DynamicBatcher

__all__ = ["BatchedEngine"]


class BatchedEngine:
    """An `Engine` whose completions go through a `DynamicBatcher` over `inner.generate`;
    everything else is `inner`'s own."""

    def __init__(self, inner: BatchGenerator, *, max_batch_size: int = 32, max_wait_s: float = 0.002) -> None:
        self.inner = inner
        self.batcher = DynamicBatcher(inner, max_batch_size=max_batch_size, max_wait_s=max_wait_s)

    def __getattr__(self, name: str) -> Any:
        """Optional hooks of the inner engine (`count_tokens`, `context_tokens`, ...) pass through."""
        if name == "inner":  # not set yet (during unpickling / copy): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return self.inner.base_models

    async def warm_up(self) -> None:
        await self.inner.warm_up()

    def readiness(self) -> str | None:
        return self.inner.readiness()

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        return await self.batcher.generate(request)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed(texts)

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        await self.inner.create_adapter(adapter)

    async def delete_adapter(self, adapter_id: str) -> None:
        await self.inner.delete_adapter(adapter_id)

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        return await self.inner.fine_tune(adapter, samples)

    async def aclose(self) -> None:
        await self.inner.aclose()
