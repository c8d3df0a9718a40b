"""Models and adapters as the API describes them (`GET /models`, `GET /models/{id}`, `POST /models`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from gradient_async.types._base import GradientModel, RequestModel

__all__ = [
    "BaseModelInfo",
    "Capability",
    "CapabilityFilter",
    "CreateAdapterBody",
    "CreatedAdapter",
    "Hyperparameters",
    "LoraHyperparameters",
    "ModelAdapterInfo",
    "ModelAdapterSpec",
    "TrainingArguments",
]


class CapabilityFilter(StrEnum):
    """`capability` filter of `GET /models` (the official SDK's CapabilityFilterOption)."""

    ANY = "any"
    FINE_TUNE = "fineTune"
    COMPLETE = "complete"


Capability = Literal["complete", "fineTune"]


class BaseModelInfo(GradientModel):
    """A base model: `id` (50 chars, ends in `_base_ml_model`), `slug`, `capabilities`."""

    id: str
    name: str | None = None
    slug: str
    type: Literal["baseModel"] = "baseModel"
    capabilities: list[str] = Field(default_factory=list)


class ModelAdapterInfo(GradientModel):
    """A fine-tunable adapter over a base model."""

    id: str
    name: str
    base_model_id: str
    type: Literal["modelAdapter"] = "modelAdapter"
    latest_update_time: datetime | None = None


class LoraHyperparameters(RequestModel):
    rank: Annotated[int, Field(gt=0, le=32)] | None = None


class TrainingArguments(RequestModel):
    learning_rate: Annotated[float, Field(gt=0, lt=1)] | None = None


class Hyperparameters(RequestModel):
    lora_hyperparameters: LoraHyperparameters | None = None
    training_arguments: TrainingArguments | None = None


class ModelAdapterSpec(RequestModel):
    base_model_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]


class CreateAdapterBody(RequestModel):
    """Body of `POST /models`."""

    model: ModelAdapterSpec
    initial_hyperparameters: Hyperparameters | None = None


class CreatedAdapter(GradientModel):
    """Response of `POST /models`."""

    id: Annotated[str, Field(min_length=1)]
