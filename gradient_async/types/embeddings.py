"""Embeddings: `GET /embeddings` and `POST /embeddings/{slug}`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gradient_async.types._base import GradientModel, RequestModel

__all__ = [
    "EmbedBody",
    "EmbedInput",
    "Embedding",
    "EmbeddingsModel",
    "EmbeddingsModelList",
    "EmbeddingsResponse",
]


class EmbeddingsModel(GradientModel):
    slug: str


class EmbeddingsModelList(GradientModel):
    embeddings_models: list[EmbeddingsModel]


class EmbedInput(RequestModel):
    input: Annotated[str, Field(min_length=1)]


class EmbedBody(RequestModel):
    """Body of `POST /embeddings/{slug}`: 1–256 non-empty inputs."""

    inputs: Annotated[list[EmbedInput], Field(min_length=1, max_length=256)]


class Embedding(GradientModel):
    embedding: list[float]
    index: Annotated[int, Field(ge=0)]


class EmbeddingsResponse(GradientModel):
    embeddings: list[Embedding]
