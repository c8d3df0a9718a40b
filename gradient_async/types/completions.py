"""Completions: `POST /models/{id}/complete`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypedDict

from pydantic import Field

from gradient_async.types._base import GradientModel, RequestModel

__all__ = ["CompleteBody", "Completion", "CompletionParams", "Guidance", "Rag"]


class Guidance(RequestModel):
    """Restrict the output to one of `value` (1–10 choices of 1–32 characters)."""

    type: Literal["choice"] = "choice"
    value: Annotated[list[Annotated[str, Field(min_length=1, max_length=32)]], Field(min_length=1, max_length=10)]


class Rag(RequestModel):
    """Retrieve context from a RAG collection before completing."""

    collection_id: Annotated[str, Field(min_length=1)]


class CompleteBody(RequestModel):
    """Body of `POST /models/{id}/complete`, checked against the contract's limits."""

    query: Annotated[str, Field(min_length=1)]
    max_generated_token_count: Annotated[int, Field(gt=0, lt=512)] | None = None
    temperature: Annotated[float, Field(ge=0)] | None = None
    top_k: Annotated[int, Field(gt=0)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    auto_template: bool | None = None
    guidance: Guidance | None = None
    rag: Rag | None = None


class Completion(GradientModel):
    """A completion: `generated_output` and why generation stopped (`finish_reason`)."""

    finish_reason: str
    generated_output: str


class CompletionParams(TypedDict, total=False):
    """Optional completion settings, shared by `client.completions.create`, model handles and batches."""

    max_generated_token_count: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    auto_template: bool | None
    guidance: Guidance | Mapping[str, Any] | None
    rag: Rag | Mapping[str, Any] | None
