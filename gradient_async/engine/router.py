"""`ModelRouter`: several engines, one per base model, behind one `Engine`.

Used when `--model` is given more than once: each model gets its own engine and
requests go to the engine serving their base model slug.

Example::

    engine = ModelRouter([engine_a, engine_b])
    await engine.complete(GenerationRequest(model_slug="model-b", prompt="Hi"))   # engine_b
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    Engine,
    EngineError,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
)

__all__ = ["ModelRouter"]


class ModelRouter:
    """Routes by base model slug. Embeddings come from the first engine; deleting an adapter
    asks every engine (each ignores adapters it does not know)."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("ModelRouter needs at least one engine")
        self.engines = list(engines)
        self._by_slug: dict[str, Engine] = {}
        for engine in self.engines:
            for spec in engine.base_models:
                if spec.slug in self._by_slug:
                    raise ValueError(f"two engines serve the base model slug {spec.slug!r}")
                self._by_slug[spec.slug] = engine

    def _engine(self, slug: str) -> Engine:
        engine = self._by_slug.get(slug)
        if engine is None:
            raise EngineError(f"unknown base model {slug!r}", type="unknownBaseModel", status_code=404)
        return engine

    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return [spec for engine in self.engines for spec in engine.base_models]

    async def warm_up(self) -> None:
        for engine in self.engines:
            await engine.warm_up()

    def readiness(self) -> str | None:
        reasons = [r for r in (e.readiness() for e in self.engines) if r is not None]
        return "; ".join(reasons) or None

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        return await self._engine(request.model_slug).complete(request)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.engines[0].embed(texts)

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        await self._engine(adapter.base_model_slug).create_adapter(adapter)

    async def delete_adapter(self, adapter_id: str) -> None:
        for engine in self.engines:
            await engine.delete_adapter(adapter_id)

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        return await self._engine(adapter.base_model_slug).fine_tune(adapter, samples)

    async def aclose(self) -> None:
        errors: list[BaseException] = []
        for engine in self.engines:
            try:
                with anyio.CancelScope(shield=True):
                    await engine.aclose()
            except Exception as exc:  # close the others anyway; report the first
                errors.append(exc)
        if errors:
            raise errors[0]
