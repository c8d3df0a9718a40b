"""Response models of every route: the wire shapes, declared, with finite numbers only.

Routes return these (FastAPI serializes them by alias), so no answer is a hand-built dict and no
number field can carry null: a NaN or infinite value fails validation here instead of being sent.

Example::

    @router.post("/models/{model_id}/complete", response_model=CompletionOut)
    async def complete(...) -> CompletionOut:
        return CompletionOut(finish_reason="stop", generated_output="Hi")
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from gradient_async.server.store import AdapterRecord, BaseModelRecord

__all__ = [
    "AdapterOut",
    "BaseModelOut",
    "CompletionOut",
    "CreatedAdapterOut",
    "DeletedOut",
    "EmbeddingOut",
    "EmbeddingsModelOut",
    "EmbeddingsModelsOut",
    "EmbeddingsOut",
    "FineTuneOut",
    "HealthOut",
    "ModelListOut",
    "ReadyOut",
]


class _Out(pydantic.BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, allow_inf_nan=False, extra="forbid")


class BaseModelOut(_Out):
    id: str
    name: str
    slug: str
    type: Literal["baseModel"] = "baseModel"
    capabilities: list[str]

    @classmethod
    def of(cls, record: BaseModelRecord) -> BaseModelOut:
        return cls(id=record.id, name=record.name, slug=record.slug, capabilities=list(record.capabilities))


class AdapterOut(_Out):
    id: str
    name: str
    base_model_id: str
    latest_update_time: str
    type: Literal["modelAdapter"] = "modelAdapter"

    @classmethod
    def of(cls, record: AdapterRecord) -> AdapterOut:
        return cls(
            id=record.id, name=record.name, base_model_id=record.base_model_id, latest_update_time=record.updated_at
        )


class ModelListOut(_Out):
    models: list[BaseModelOut | AdapterOut]


class CreatedAdapterOut(_Out):
    id: str


class DeletedOut(_Out):
    """`DELETE /models/{id}` answers an empty object."""


class CompletionOut(_Out):
    finish_reason: str
    generated_output: str


class FineTuneOut(_Out):
    number_of_trainable_tokens: Annotated[int, Field(ge=0)]
    sum_loss: float


class EmbeddingsModelOut(_Out):
    slug: str


class EmbeddingsModelsOut(_Out):
    embeddings_models: list[EmbeddingsModelOut]


class EmbeddingOut(_Out):
    embedding: list[float]
    index: Annotated[int, Field(ge=0)]


class EmbeddingsOut(_Out):
    embeddings: list[EmbeddingOut]


class HealthOut(_Out):
    """`GET /health`: the process is alive (answered without touching the engine)."""

    status: Literal["ok"] = "ok"
    engine: str
    base_models: list[str]
    ready: bool = True
    not_ready: str | None = None  # why the engine cannot serve yet (loading, child process dead, ...)


class ReadyOut(_Out):
    """`GET /ready`: the engine is loaded and the server accepts work (503 while it does not)."""

    ready: bool
    engine: str
    queued: int
    max_queue: int
    requests: int
    shutting_down: bool
