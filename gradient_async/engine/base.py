"""The engine protocols: what the local server needs from a text engine.

Two roles: a `Generator` serves completions and embeddings, a `Trainer` owns
adapters and fine-tunes; an `Engine` is both (the vLLM engine serves with vLLM
and trains with peft). A `BatchGenerator` takes whole batches and is wrapped in
`BatchedEngine` (a `DynamicBatcher`) to become an `Engine`.

An engine owns one or more base models and any number of adapters. The server
keeps the catalogue (ids, names, workspaces) in SQLite; the engine only sees
adapter ids and base model slugs, and keeps adapter *state* (weights, history)
under its own data directory.

Example::

    engine: Engine = BatchedEngine(TestEngine(data_dir))
    await engine.create_adapter(AdapterSpec(adapter_id="...", base_model_slug="gradient-test-model"))
    result = await engine.complete(GenerationRequest(model_slug="gradient-test-model",
                                                     adapter_id="...", prompt="Hi"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "AdapterSpec",
    "BaseModelSpec",
    "BatchGenerator",
    "Engine",
    "EngineError",
    "FineTuneOutcome",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "Trainer",
    "TrainingSample",
    "TrainingSegment",
]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class BaseModelSpec:
    """A base model an engine serves: `slug` is stable, `name` is for people."""

    slug: str
    name: str
    capabilities: tuple[str, ...] = ("complete", "fineTune")


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter as the engine sees it. `rank`/`learning_rate` None mean engine defaults."""

    adapter_id: str
    base_model_slug: str
    rank: int | None = None
    learning_rate: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """One completion. `adapter_id` None means the bare base model."""

    model_slug: str
    prompt: str
    adapter_id: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    auto_template: bool = True
    guidance_choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GenerationResult:
    """`generated_tokens`: how many tokens the engine produced, when it knows (server metrics and spans)."""

    text: str
    finish_reason: FinishReason
    generated_tokens: int | None = None


@dataclass(frozen=True)
class TrainingSegment:
    """A piece of a fine-tune sample; untrainable segments add context but no loss."""

    value: str
    trainable: bool = True
    parse_special_tokens: bool = True


@dataclass(frozen=True)
class TrainingSample:
    segments: tuple[TrainingSegment, ...]
    multiplier: float = 1.0


@dataclass(frozen=True)
class FineTuneOutcome:
    """`steps`: optimizer steps the call ran, when the engine reports them (server metrics)."""

    trainable_tokens: int
    sum_loss: float
    steps: int | None = None


@dataclass
class EngineError(Exception):
    """A refusal the server maps to a 4xx body `{"message", "type"}`.

    `type` is one of the contract's error types (`unprocessableContent`,
    `modelDoesNotSupportGuidance`, `nanLoss`, `unknownModelAdapter`, ...).
    """

    message: str
    type: str = "unprocessableContent"
    status_code: int = 422
    payload: dict[str, object] | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@runtime_checkable
class Generator(Protocol):
    """The serving role: base models, completions, embeddings, readiness.

    All methods are safe to call concurrently and never block the event loop.
    `complete` takes one request; an engine that prefers batches implements
    `BatchGenerator` instead and is wrapped in `BatchedEngine` (a `DynamicBatcher`).
    """

    @property
    def base_models(self) -> Sequence[BaseModelSpec]: ...

    async def warm_up(self) -> None:
        """Load models / start processes now instead of on the first request (idempotent)."""
        ...

    def readiness(self) -> str | None:
        """None when requests can be served; otherwise why not, in words (cheap, never blocks)."""
        ...

    async def complete(self, request: GenerationRequest) -> GenerationResult: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Trainer(Protocol):
    """The training role: adapters and their fine-tunes. The engine serializes work on one
    adapter itself; a fine-tune is applied entirely or not at all."""

    async def create_adapter(self, adapter: AdapterSpec) -> None: ...

    async def delete_adapter(self, adapter_id: str) -> None: ...

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome: ...


@runtime_checkable
class Engine(Generator, Trainer, Protocol):
    """What the server drives: both roles (one object may delegate either role to another)."""


@runtime_checkable
class BatchGenerator(Trainer, Protocol):
    """An engine that wants its completions batched: `generate` takes a batch; `BatchedEngine`
    (a `DynamicBatcher` in front) turns it into an `Engine`. All methods are safe to call
    concurrently and never block the event loop (heavy work runs in a worker thread)."""

    @property
    def base_models(self) -> Sequence[BaseModelSpec]: ...

    async def warm_up(self) -> None: ...

    def readiness(self) -> str | None: ...

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch (possibly mixing adapters); results in request order.
        Raise EngineError for a refusal that applies to the whole batch; per-request
        refusals are the batcher's job (it retries the members one by one)."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...
