"""Engine metrics and spans, by wrapping what the server calls (no engine needs to know).

`ObservedEngine` wraps an `Engine`: it times each generation batch (size, seconds, tokens) and each
fine-tune (seconds, steps, trainable tokens). `ObservedBatcher` wraps the batcher's `generate`, so the
time a completion waits for its batch is known (queue depth, queue seconds). With OpenTelemetry and a
provider set, each completion's server span gets two children, `gradient.queue` and `gradient.generate`
(timed from its batch; a batch serves many traces, so each member gets its own copy), and a fine-tune
gets a `gradient.fine_tune` child.

Example::

    install_engine_observer(state)     # create_app does it; state.metrics then moves with the engine
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    Engine,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
)
from gradient_async.server.metrics import ServerMetrics
from gradient_async.server.tracing import server_tracer

__all__ = ["GENERATED_TOKENS_HEADER", "ObservedBatcher", "ObservedEngine", "install_engine_observer", "request_usage"]

GENERATED_TOKENS_HEADER = "x-gradient-generated-tokens"

# Tokens generated for the current HTTP request: the middleware sets a fresh dict per request and sends the
# total back as the `x-gradient-generated-tokens` header (the contract's JSON has no usage field).
request_usage: ContextVar[dict[str, int] | None] = ContextVar("gradient_request_usage", default=None)


@dataclass
class _Waiting:
    enqueued_ns: int
    parent: Any  # the caller's OpenTelemetry context, or None
    started_ns: int = 0


class _Registry:
    """Completions handed to the batcher and not yet in a batch, keyed by request object identity."""

    def __init__(self) -> None:
        self.waiting: dict[int, _Waiting] = {}
        self.queued = 0


class ObservedEngine:
    """An `Engine` that records its batches and fine-tunes into `metrics`, then delegates."""

    def __init__(self, inner: Engine, metrics: ServerMetrics, name: str, registry: _Registry | None = None) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = name
        self._registry = registry or _Registry()

    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return self.inner.base_models

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        await self.inner.create_adapter(adapter)

    async def delete_adapter(self, adapter_id: str) -> None:
        await self.inner.delete_adapter(adapter_id)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:  # engine-specific extras (e.g. a test engine's knobs)
        return getattr(self.inner, name)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter_ns()
        members = [self._registry.waiting.get(id(r)) for r in requests]
        for w in members:
            if w is not None and w.started_ns == 0:
                w.started_ns = started
                self._registry.queued -= 1
                self.metrics.queue_seconds.labels(self.name).observe((started - w.enqueued_ns) / 1e9)
        self.metrics.queue_depth.labels(self.name).set(self._registry.queued)
        self.metrics.batch_size.labels(self.name).observe(len(requests))
        error: BaseException | None = None
        results: list[GenerationResult] = []
        try:
            results = await self.inner.generate(requests)
            return results
        except BaseException as exc:
            error = exc
            raise
        finally:
            ended = time.perf_counter_ns()
            self.metrics.generation_seconds.labels(self.name).observe((ended - started) / 1e9)
            tokens = sum(_tokens(r) for r in results)
            self.metrics.record_tokens(self.name, tokens)
            self._spans(members, requests, results, started, ended, error)

    def _spans(
        self,
        members: list[_Waiting | None],
        requests: Sequence[GenerationRequest],
        results: list[GenerationResult],
        started: int,
        ended: int,
        error: BaseException | None,
    ) -> None:
        if not any(w is not None and w.parent is not None for w in members):
            return
        tracer = server_tracer()
        if tracer is None:
            return
        wall = time.time_ns() - time.perf_counter_ns()  # span times are wall-clock nanoseconds
        for i, w in enumerate(members):
            if w is None or w.parent is None:
                continue
            queue = tracer.start_span("gradient.queue", context=w.parent, start_time=w.enqueued_ns + wall)
            queue.set_attribute("gradient.engine", self.name)
            queue.end(end_time=started + wall)
            gen = tracer.start_span("gradient.generate", context=w.parent, start_time=started + wall)
            gen.set_attribute("gradient.engine", self.name)
            gen.set_attribute("gradient.batch.size", len(requests))
            gen.set_attribute("gen_ai.request.model", requests[i].model_slug)
            if i < len(results):
                gen.set_attribute("gen_ai.response.finish_reasons", [results[i].finish_reason])
                n = _tokens(results[i])
                if n:
                    gen.set_attribute("gen_ai.usage.output_tokens", n)
            if error is not None:
                gen.set_attribute("error.type", type(error).__qualname__)
                gen.set_status(_error_status())
            gen.end(end_time=ended + wall)

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        tracer = server_tracer()
        span: Any = None
        token: object = None
        if tracer is not None:
            from opentelemetry import context, trace

            span = tracer.start_span("gradient.fine_tune")
            span.set_attribute("gradient.engine", self.name)
            span.set_attribute("gradient.fine_tune.samples", len(samples))
            token = context.attach(trace.set_span_in_context(span))
        started = time.perf_counter()
        try:
            outcome = await self.inner.fine_tune(adapter, samples)
            steps = outcome.steps if outcome.steps is not None and outcome.steps > 0 else 1
            self.metrics.fine_tune_steps.labels(self.name).inc(steps)
            self.metrics.fine_tune_tokens.labels(self.name).inc(max(outcome.trainable_tokens, 0))
            if span is not None:
                span.set_attribute("gradient.fine_tune.trainable_tokens", outcome.trainable_tokens)
                span.set_attribute("gradient.fine_tune.steps", steps)
            return outcome
        except BaseException as exc:
            if span is not None:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(_error_status())
            raise
        finally:
            self.metrics.fine_tune_seconds.labels(self.name).observe(time.perf_counter() - started)
            if span is not None:
                from opentelemetry import context

                span.end()
                context.detach(token)  # type: ignore[arg-type]


def _error_status() -> Any:
    from opentelemetry import trace

    return trace.Status(trace.StatusCode.ERROR)


class ObservedBatcher:
    """Wraps a batcher's `generate(request)`: notes when each completion starts waiting, and its trace."""

    def __init__(self, inner: Any, engine: ObservedEngine) -> None:
        self.inner = inner
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        registry = self.engine._registry
        key = id(request)
        registry.waiting[key] = _Waiting(time.perf_counter_ns(), _current_context())
        registry.queued += 1
        self.engine.metrics.queue_depth.labels(self.engine.name).set(registry.queued)
        try:
            result: GenerationResult = await self.inner.generate(request)
            usage = request_usage.get()
            if usage is not None and result.generated_tokens is not None:
                usage["output"] = usage.get("output", 0) + result.generated_tokens
            return result
        finally:
            w = registry.waiting.pop(key)
            if w.started_ns == 0:  # left before any batch took it (cancelled, or the batcher failed)
                registry.queued -= 1
                self.engine.metrics.queue_depth.labels(self.engine.name).set(registry.queued)


def _current_context() -> Any:
    if server_tracer() is None:
        return None
    from opentelemetry import context, trace

    return context.get_current() if trace.get_current_span().get_span_context().is_valid else None


def _tokens(result: GenerationResult) -> int:
    n = result.generated_tokens
    return n if n is not None and n > 0 else 0


def install_engine_observer(state: Any) -> None:
    """Route the server's engine calls through the observers: `state.engine` and the batcher's engine
    become one `ObservedEngine`, `state.batcher` an `ObservedBatcher`. Call once, before serving."""
    if isinstance(state.engine, ObservedEngine):
        return
    name = str(getattr(state.settings, "engine", type(state.engine).__name__))
    observed = ObservedEngine(state.engine, state.metrics, name)
    batcher = state.batcher
    if getattr(batcher, "engine", None) is state.engine:
        batcher.engine = observed
    state.engine = observed
    state.batcher = ObservedBatcher(batcher, observed)
