"""Pydantic models of the wire: camelCase on the wire, snake_case attributes, unknown fields kept."""

from gradient_async.types._base import GradientModel, RequestModel
from gradient_async.types.completions import CompleteBody, Completion, CompletionParams, Guidance, Rag
from gradient_async.types.embeddings import (
    EmbedBody,
    Embedding,
    EmbeddingsModel,
    EmbeddingsModelList,
    EmbeddingsResponse,
    EmbedInput,
)
from gradient_async.types.fine_tunes import (
    FineTuneBody,
    FineTuneResult,
    FineTuningParameters,
    Sample,
    StructuredInput,
)
from gradient_async.types.models import (
    BaseModelInfo,
    Capability,
    CapabilityFilter,
    CreateAdapterBody,
    CreatedAdapter,
    Hyperparameters,
    LoraHyperparameters,
    ModelAdapterInfo,
    ModelAdapterSpec,
    TrainingArguments,
)

__all__ = [
    "BaseModelInfo",
    "Capability",
    "CapabilityFilter",
    "CompleteBody",
    "Completion",
    "CompletionParams",
    "CreateAdapterBody",
    "CreatedAdapter",
    "EmbedBody",
    "EmbedInput",
    "Embedding",
    "EmbeddingsModel",
    "EmbeddingsModelList",
    "EmbeddingsResponse",
    "FineTuneBody",
    "FineTuneResult",
    "FineTuningParameters",
    "GradientModel",
    "Guidance",
    "Hyperparameters",
    "LoraHyperparameters",
    "ModelAdapterInfo",
    "ModelAdapterSpec",
    "Rag",
    "RequestModel",
    "Sample",
    "StructuredInput",
    "TrainingArguments",
]
