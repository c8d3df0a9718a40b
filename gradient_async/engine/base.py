"""The engine protocol: what the local server needs from a text engine.

An engine owns one or more base models and any number of adapters. The server
keeps the catalogue (ids, names, workspaces) in SQLite; the engine only sees
adapter ids and base model slugs, and keeps adapter *state* (weights, history)
under its own data directory.

Example::

    engine: Engine = TestEngine(data_dir)
    await engine.create_adapter(AdapterSpec(adapter_id="...", base_model_slug="smollm2-135m"))
    [result] = await engine.generate([GenerationRequest(model_slug="smollm2-135m",
                                                        adapter_id="...", prompt="Hi")])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "AdapterSpec",
    "BaseModelSpec",
    "Engine",
    "EngineError",
    "FineTuneOutcome",
    "GenerationRequest",
    "GenerationResult",
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
class Engine(Protocol):
    """What every engine implements. All methods are safe to call concurrently:
    the engine serializes work on the same adapter itself and never blocks the
    event loop (heavy work runs in a worker thread)."""

    @property
    def base_models(self) -> Sequence[BaseModelSpec]: ...

    async def create_adapter(self, adapter: AdapterSpec) -> None: ...

    async def delete_adapter(self, adapter_id: str) -> None: ...

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch (possibly mixing adapters); results in request order.
        Raise EngineError for a refusal that applies to the whole batch; per-request
        refusals are the batcher's job (it retries the members one by one)."""
        ...

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...
