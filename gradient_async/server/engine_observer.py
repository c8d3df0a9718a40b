"""Engine metrics and spans, by wrapping what the server calls (no engine needs to know).

Two wrappers share one registry of completions waiting for a batch:

- `ObservedBatches` wraps the engine a `DynamicBatcher` feeds (`generate(list)`): batch size, engine seconds
  and tokens per batch, and the queue wait of each member (it ends when its batch starts).
- `ObservedFront` wraps what the routes call (`state.engine`, and `state.batcher` where the server has one):
  a completion starts waiting when it enters; fine-tunes are timed (seconds, steps, trainable tokens). An
  engine that batches on its own (no `DynamicBatcher`, e.g. vLLM) is timed per request instead.

With OpenTelemetry and a provider set, each completion's server span gets two children, `gradient.queue` and
`gradient.generate` (timed from its batch: a batch serves many traces, so each member gets its own copy), and a
fine-tune gets `gradient.fine_tune`.

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
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
)
from gradient_async.engine.batching import DynamicBatcher
from gradient_async.server.metrics import ServerMetrics
from gradient_async.server.tracing import server_tracer

__all__ = ["GENERATED_TOKENS_HEADER", "ObservedBatches", "ObservedFront", "install_engine_observer", "request_usage"]

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


class ObservedBatches:
    """Wraps the batch engine behind a `DynamicBatcher`: records each batch, then delegates."""

    def __init__(self, inner: Any, metrics: ServerMetrics, name: str, registry: _Registry) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = name
        self._registry = registry

    def __getattr__(self, name: str) -> Any:  # every other engine method and attribute
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
            results = list(await self.inner.generate(requests))
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
            result = results[i] if i < len(results) else None
            _generation_attributes(gen, self.name, requests[i], result, len(requests), error)
            gen.end(end_time=ended + wall)


def _error_status() -> Any:
    from opentelemetry import trace

    return trace.Status(trace.StatusCode.ERROR)


class ObservedFront:
    """Wraps what the routes call: a completion (`complete` or a batcher's `generate(request)`) is noted as
    waiting when it enters, with its trace; fine-tunes are timed. Everything else is delegated."""

    def __init__(self, inner: Any, metrics: ServerMetrics, name: str, registry: _Registry) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = name
        self._registry = registry

    def __getattr__(self, name: str) -> Any:  # every other method and attribute (tests may patch them here)
        return getattr(self.inner, name)

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        """One completion through the engine (server layouts where routes call `state.engine.complete`)."""
        return await self._one(self.inner.complete, request)

    async def generate(self, request: Any) -> Any:
        """A batcher's `generate(request)`, or a batch engine's `generate(list)` passed straight through."""
        if isinstance(request, GenerationRequest):
            return await self._one(self.inner.generate, request)
        return await self.inner.generate(request)

    async def _one(self, call: Any, request: GenerationRequest) -> GenerationResult:
        registry = self._registry
        key = id(request)
        enqueued = time.perf_counter_ns()
        registry.waiting[key] = _Waiting(enqueued, _current_context())
        registry.queued += 1
        self.metrics.queue_depth.labels(self.name).set(registry.queued)
        error: BaseException | None = None
        result: GenerationResult | None = None
        try:
            result = await call(request)
            assert result is not None
            usage = request_usage.get()
            if usage is not None and result.generated_tokens is not None:
                usage["output"] = usage.get("output", 0) + result.generated_tokens
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            w = registry.waiting.pop(key)
            if w.started_ns == 0:  # no batch took it: cancelled, or an engine that batches on its own
                registry.queued -= 1
                self.metrics.queue_depth.labels(self.name).set(registry.queued)
                if result is not None or (error is not None and not _cancelled(error)):
                    self._unbatched(w, request, result, error)

    def _unbatched(
        self, w: _Waiting, request: GenerationRequest, result: GenerationResult | None, error: BaseException | None
    ) -> None:
        """An engine without our batcher served it: time it as a whole (queue unknown, batch size unknown)."""
        ended = time.perf_counter_ns()
        self.metrics.generation_seconds.labels(self.name).observe((ended - w.enqueued_ns) / 1e9)
        if result is not None:
            self.metrics.record_tokens(self.name, _tokens(result))
        if w.parent is None:
            return
        tracer = server_tracer()
        if tracer is None:
            return
        wall = time.time_ns() - time.perf_counter_ns()
        span = tracer.start_span("gradient.generate", context=w.parent, start_time=w.enqueued_ns + wall)
        _generation_attributes(span, self.name, request, result, None, error)
        span.end(end_time=ended + wall)

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
            outcome: FineTuneOutcome = await self.inner.fine_tune(adapter, samples)
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


def _cancelled(error: BaseException) -> bool:
    import anyio

    try:
        return isinstance(error, anyio.get_cancelled_exc_class())
    except Exception:
        return False


def _generation_attributes(
    span: Any,
    engine: str,
    request: GenerationRequest,
    result: GenerationResult | None,
    batch_size: int | None,
    error: BaseException | None,
) -> None:
    span.set_attribute("gradient.engine", engine)
    if batch_size is not None:
        span.set_attribute("gradient.batch.size", batch_size)
    span.set_attribute("gen_ai.request.model", request.model_slug)
    if result is not None:
        span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
        n = _tokens(result)
        if n:
            span.set_attribute("gen_ai.usage.output_tokens", n)
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(_error_status())


def _current_context() -> Any:
    if server_tracer() is None:
        return None
    from opentelemetry import context, trace

    return context.get_current() if trace.get_current_span().get_span_context().is_valid else None


def _tokens(result: GenerationResult) -> int:
    n = result.generated_tokens
    return n if n is not None and n > 0 else 0


def install_engine_observer(state: Any) -> None:
    """Route the server's engine calls through the observers (call once, before serving): every
    `DynamicBatcher` found (`state.batcher`, `state.engine.batcher`, or those of a router's engines) feeds an
    `ObservedBatches`; `state.engine` (and `state.batcher`, where the server has one) become `ObservedFront`s."""
    if isinstance(state.engine, ObservedFront):
        return
    name = str(getattr(state.settings, "engine", type(state.engine).__name__))
    registry = _Registry()
    original = state.engine
    front = ObservedFront(original, state.metrics, name, registry)
    for batcher in _batchers(state):
        if not isinstance(batcher.engine, ObservedBatches):
            # A batcher fed by the engine itself goes through the front, so code that patches
            # `state.engine.generate` (tests do) still reaches the batches.
            inner = front if batcher.engine is original else batcher.engine
            batcher.engine = ObservedBatches(inner, state.metrics, name, registry)
    state.engine = front
    if getattr(state, "batcher", None) is not None:
        state.batcher = ObservedFront(state.batcher, state.metrics, name, registry)


def _batchers(state: Any) -> list[Any]:
    engines = [state.engine, *getattr(state.engine, "engines", ())]
    candidates = [getattr(state, "batcher", None), *(getattr(e, "batcher", None) for e in engines)]
    found: list[Any] = []
    for b in candidates:
        if isinstance(b, DynamicBatcher) and all(b is not f for f in found):
            found.append(b)
    return found
