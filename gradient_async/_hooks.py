"""Hooks: your callbacks on every call and every HTTP attempt, and the OpenTelemetry spans and metrics that
hang on the same seams.

A client calls, for each HTTP attempt, `on_request` (the request is about to be sent; its headers may still
be changed) and `on_response` (the response, or the error the attempt raised); between attempts `on_retry`
(the error, the attempt that failed, the wait); once per call `on_call_end` (the parsed value or the error,
attempts, duration). Callbacks may be plain functions or coroutine functions; an exception raised by one
propagates to the caller, like httpx's event hooks. `with_options` copies keep the client's hooks, and
batches call them for every item.

With OpenTelemetry (extra `[otel]`) and a tracer provider set by the application, every call is a CLIENT
span (`gen_ai.*` attributes) with one child span per HTTP attempt (`http.*` attributes), and the W3C
`traceparent` header is sent so the server continues the trace. Prompt and completion text are recorded
only with `AsyncGradient(trace_content=True)`; the access token never is. `AsyncGradient(tracing=False)`
turns spans and metrics off.

Example::

    def log_retry(event: RetryEvent) -> None:
        print(f"attempt {event.attempt} failed ({event.error!r}); retrying in {event.wait:.2f}s")

    client = AsyncGradient(hooks=Hooks(on_retry=[log_retry], on_call_end=[record_latency]))
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from gradient_async._errors import InputValidationError
from gradient_async._otel import Instruments, Telemetry, telemetry
from gradient_async._retry import RetryEvent

if TYPE_CHECKING:
    from gradient_async._client import RequestOptions

__all__ = [
    "BatchObserver",
    "CallEvent",
    "CallScope",
    "Hooks",
    "Instrumentation",
    "RequestEvent",
    "ResponseEvent",
    "RetryEvent",
]

E = TypeVar("E")
Hook = Callable[[E], "Awaitable[None] | None"]

GENERATED_TOKENS_HEADER = "x-gradient-generated-tokens"
_CONTENT_LIMIT = 16_384  # characters of prompt/completion kept in a span when trace_content is on


@dataclass(frozen=True)
class RequestEvent:
    """An HTTP attempt about to be sent. `attempt` is 1-based; `request.headers` may still be changed."""

    request: httpx.Request
    attempt: int


@dataclass(frozen=True)
class ResponseEvent:
    """An HTTP attempt finished: `response` (None when no response came) and the `error` it raised, if any
    (a status error for a 4xx/5xx, a timeout or connection error otherwise). `elapsed` is in seconds."""

    request: httpx.Request
    attempt: int
    response: httpx.Response | None
    error: BaseException | None
    elapsed: float


@dataclass(frozen=True)
class CallEvent:
    """A call finished: the parsed `value` (None for calls without a body) or the `error` raised,
    how many HTTP `attempts` it made, and its `duration` in seconds (waits included)."""

    method: str
    path: str
    value: Any
    error: BaseException | None
    attempts: int
    duration: float


def _as_tuple(name: str, hooks: Iterable[Any] | Callable[..., Any]) -> tuple[Any, ...]:
    if callable(hooks):
        return (hooks,)
    try:
        items = tuple(hooks)
    except TypeError:
        raise TypeError(f"Hooks.{name} must be a list of callables, got {type(hooks).__name__}") from None
    for item in items:
        if not callable(item):
            raise TypeError(f"Hooks.{name} must hold callables, got {type(item).__name__}")
    return items


@dataclass(frozen=True)
class Hooks:
    """Callbacks a client calls; each field is a sequence of callables (or a single one).

    Example::

        hooks = Hooks(on_request=[lambda e: print(e.request.method, e.request.url)])
        client = AsyncGradient(hooks=hooks)
    """

    on_request: Sequence[Hook[RequestEvent]] = ()
    on_response: Sequence[Hook[ResponseEvent]] = ()
    on_retry: Sequence[Hook[RetryEvent]] = ()
    on_call_end: Sequence[Hook[CallEvent]] = ()
    _empty: bool = field(default=True, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("on_request", "on_response", "on_retry", "on_call_end"):
            object.__setattr__(self, name, _as_tuple(name, getattr(self, name)))
        empty = not (self.on_request or self.on_response or self.on_retry or self.on_call_end)
        object.__setattr__(self, "_empty", empty)

    @property
    def empty(self) -> bool:
        return self._empty


NO_HOOKS = Hooks()


async def _call(hooks: Sequence[Hook[E]], event: E) -> None:
    for hook in hooks:
        result = hook(event)
        if inspect.isawaitable(result):
            await result


class Instrumentation:
    """What a client (and its `with_options` copies) does around calls: your hooks plus OpenTelemetry.

    `start(options)` returns None when there is nothing to do (no hooks, tracing off or no provider set),
    so an unobserved call pays one function call."""

    def __init__(self, hooks: Hooks | None = None, *, tracing: bool = True, trace_content: bool = False) -> None:
        self.hooks: Hooks = hooks if hooks is not None else NO_HOOKS
        self.tracing = tracing
        self.trace_content = trace_content

    @classmethod
    def of(cls, hooks: object, tracing: object, trace_content: object) -> Instrumentation:
        """Checked constructor for the client's keyword arguments (a clear error names what to fix)."""
        if hooks is not None and not isinstance(hooks, Hooks):
            raise InputValidationError(
                f"hooks must be a gradient_async.Hooks (e.g. Hooks(on_retry=[fn])), got {type(hooks).__name__}"
            )
        for name, flag in (("tracing", tracing), ("trace_content", trace_content)):
            if not isinstance(flag, bool):
                raise InputValidationError(f"{name} must be True or False, got {flag!r}")
        return cls(hooks, tracing=bool(tracing), trace_content=bool(trace_content))

    def start(self, options: RequestOptions, server: httpx.URL | None = None) -> CallScope | None:
        tel = telemetry() if self.tracing else None
        legacy = getattr(options, "on_retry", None)
        if tel is None and self.hooks.empty and legacy is None:
            return None
        return CallScope(self, options, tel, legacy, server)


_OPERATIONS = {
    ("POST", "complete"): "text_completion",
    ("POST", "fine-tune"): "fine_tune",
    ("GET", "models"): "list_models",
    ("POST", "models"): "create_adapter",
    ("GET", "model"): "get_model",
    ("DELETE", "model"): "delete_adapter",
    ("POST", "embeddings"): "embeddings",
    ("GET", "embeddings"): "list_embeddings_models",
}


def operation(method: str, path: str) -> tuple[str, str | None]:
    """The GenAI operation name and the model id a call's method and path name."""
    parts = [p for p in path.split("/") if p]
    model: str | None = None
    if parts and parts[0] == "models":
        if len(parts) == 1:
            kind = "models"
        else:
            model = parts[1]
            kind = parts[2] if len(parts) > 2 else "model"
    elif parts and parts[0] == "embeddings":
        kind = "embeddings"
        model = parts[1] if len(parts) > 1 else None
    else:
        kind = parts[0] if parts else ""
    return _OPERATIONS.get((method, kind), f"{method.lower()} {kind}".strip()), model


_REQUEST_ATTRS = (
    ("maxGeneratedTokenCount", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("topK", "gen_ai.request.top_k"),
    ("topP", "gen_ai.request.top_p"),
)


class CallScope:
    """One call in flight. The client calls `attempt_started` / `attempt_ended` around each HTTP attempt,
    `retry_scheduled` before each wait and `finished` once."""

    def __init__(
        self,
        owner: Instrumentation,
        options: RequestOptions,
        tel: Telemetry | None,
        legacy_on_retry: Callable[[RetryEvent], None] | None,
        server: httpx.URL | None,
    ) -> None:
        self._hooks = owner.hooks
        self._content = owner.trace_content
        self._legacy = legacy_on_retry
        self.options = options
        self.attempts = 0
        self.retries = 0
        self._started = time.perf_counter()
        self._attempt_started = 0.0
        self._tokens_out: int | None = None
        self._tokens_in: int | None = None
        self.operation, self.model = operation(options.method, options.path)
        self._base_attrs: dict[str, Any] = {"gen_ai.operation.name": self.operation, "gen_ai.provider.name": "gradient"}
        if self.model is not None:
            self._base_attrs["gen_ai.request.model"] = self.model
        self._tracer = tel.tracer if tel is not None else None
        self._metrics: Instruments | None = tel.instruments if tel is not None else None
        self._span: Any = None
        self._attempt_span: Any = None
        if self._tracer is not None:
            self._span = self._start_call_span(server)

    # -- spans ---------------------------------------------------------------------------

    def _start_call_span(self, server: httpx.URL | None) -> Any:
        from opentelemetry.trace import SpanKind

        attrs = dict(self._base_attrs)
        body = self.options.json
        if isinstance(body, dict):
            for key, name in _REQUEST_ATTRS:
                value = body.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    attrs[name] = value
            if self._content and isinstance(body.get("query"), str):
                attrs["gen_ai.input.messages"] = _messages("user", body["query"])
        if server is not None:
            attrs["server.address"] = server.host
            if server.port is not None:
                attrs["server.port"] = server.port
        name = f"{self.operation} {self.model}" if self.model else self.operation
        return self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attrs)  # type: ignore[union-attr]

    async def attempt_started(self, request: httpx.Request) -> None:
        """An HTTP attempt is about to be sent (may add `traceparent` to `request.headers`)."""
        self.attempts += 1
        self._attempt_started = time.perf_counter()
        if self._span is not None:
            from opentelemetry import propagate, trace
            from opentelemetry.trace import SpanKind

            attrs: dict[str, Any] = {
                "http.request.method": request.method,
                "url.full": _url_without_secrets(request.url),
                "server.address": request.url.host,
            }
            if request.url.port is not None:
                attrs["server.port"] = request.url.port
            if self.attempts > 1:
                attrs["http.request.resend_count"] = self.attempts - 1
            ctx = trace.set_span_in_context(self._span)
            self._attempt_span = self._tracer.start_span(  # type: ignore[union-attr]
                request.method, context=ctx, kind=SpanKind.CLIENT, attributes=attrs
            )
            propagate.inject(request.headers, context=trace.set_span_in_context(self._attempt_span))
        if self._hooks.on_request:
            await _call(self._hooks.on_request, RequestEvent(request, self.attempts))

    async def attempt_ended(
        self, request: httpx.Request, response: httpx.Response | None, error: BaseException | None
    ) -> None:
        """The attempt got `response` (any status) or raised `error` before one came."""
        elapsed = time.perf_counter() - self._attempt_started
        if response is None:
            response = getattr(error, "response", None)
        status = response.status_code if response is not None else None
        if response is not None and status is not None and status < 400:
            self._note_usage(response)
        if self._attempt_span is not None:
            span = self._attempt_span
            self._attempt_span = None
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.set_attribute("error.type", str(status) if status is not None else type(error).__qualname__)
                span.set_status(_error_status())
            span.end()
        if self._metrics is not None:
            attrs: dict[str, Any] = {"http.request.method": request.method, "gen_ai.operation.name": self.operation}
            if status is not None:
                attrs["http.response.status_code"] = status
            if error is not None:
                attrs["error.type"] = str(status) if status is not None else type(error).__qualname__
            self._metrics.attempt_duration.record(elapsed, attrs)
            if status == 429:
                self._metrics.rate_limited.add(1, self._base_attrs)
        if self._hooks.on_response:
            await _call(self._hooks.on_response, ResponseEvent(request, self.attempts, response, error, elapsed))

    async def retry_scheduled(self, error: BaseException, attempt: int, wait: float) -> None:
        """The policy decided to retry after `attempt` failed with `error`, in `wait` seconds."""
        self.retries += 1
        event = RetryEvent(attempt=attempt, error=error, wait=wait)
        if self._span is not None:
            self._span.add_event(
                "gradient.retry",
                {"gradient.attempt": attempt, "gradient.retry.wait_s": wait, "error.type": _error_type(error)},
            )
        if self._metrics is not None:
            self._metrics.retries.add(1, {**self._base_attrs, "error.type": _error_type(error)})
        if self._legacy is not None:
            self._legacy(event)
        if self._hooks.on_retry:
            await _call(self._hooks.on_retry, event)

    async def failed(self, error: BaseException) -> None:
        """The call raised `error`. A cancelled call still reports (shielded, so hooks run to the end);
        KeyboardInterrupt and the like only close the spans."""
        import anyio

        if isinstance(error, Exception):
            await self.finished(error=error)
            return
        try:
            cancelled = isinstance(error, anyio.get_cancelled_exc_class())
        except Exception:  # no async library running (cannot happen inside a call, but never mask `error`)
            cancelled = False
        if cancelled:
            with anyio.CancelScope(shield=True):
                await self.finished(error=error)
        else:
            saved, self._hooks = self._hooks, NO_HOOKS
            try:
                await self.finished(error=error)
            finally:
                self._hooks = saved

    async def finished(self, value: Any = None, error: BaseException | None = None) -> None:
        """The call ends with `value` (parsed) or `error`."""
        duration = time.perf_counter() - self._started
        if self._attempt_span is not None:  # cancelled mid-attempt
            self._attempt_span.set_attribute("error.type", type(error).__qualname__ if error else "cancelled")
            self._attempt_span.end()
            self._attempt_span = None
        if self._span is not None:
            span = self._span
            span.set_attribute("gradient.retries", self.retries)
            if error is None:
                self._response_attributes(span, value)
            else:
                span.set_attribute("error.type", _error_type(error))
                status = getattr(error, "status_code", None)
                if isinstance(status, int):
                    span.set_attribute("http.response.status_code", status)
                span.set_status(_error_status())
            span.end()
        if self._metrics is not None:
            attrs = dict(self._base_attrs)
            if error is not None:
                attrs["error.type"] = _error_type(error)
            self._metrics.call_duration.record(duration, attrs)
            if self._tokens_out is not None:
                self._metrics.tokens.record(self._tokens_out, {**self._base_attrs, "gen_ai.token.type": "output"})
            tokens_in = _trainable_tokens(value) if error is None else None
            if tokens_in is not None:
                self._metrics.tokens.record(tokens_in, {**self._base_attrs, "gen_ai.token.type": "input"})
        if self._hooks.on_call_end:
            event = CallEvent(self.options.method, self.options.path, value, error, self.attempts, duration)
            await _call(self._hooks.on_call_end, event)

    def _note_usage(self, response: httpx.Response) -> None:
        raw = response.headers.get(GENERATED_TOKENS_HEADER)
        if raw is not None and raw.isdigit():
            self._tokens_out = int(raw)

    def _response_attributes(self, span: Any, value: Any) -> None:
        reason = getattr(value, "finish_reason", None)
        if isinstance(reason, str):
            span.set_attribute("gen_ai.response.finish_reasons", [reason])
        if self._tokens_out is not None:
            span.set_attribute("gen_ai.usage.output_tokens", self._tokens_out)
        tokens_in = _trainable_tokens(value)
        if tokens_in is not None:
            span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
        if self._content:
            output = getattr(value, "generated_output", None)
            if isinstance(output, str):
                span.set_attribute("gen_ai.output.messages", _messages("assistant", output, reason))


def _url_without_secrets(url: httpx.URL) -> str:
    """scheme://host[:port]/path: no user:password, no query (extra_query may carry anything)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def _trainable_tokens(value: Any) -> int | None:
    n = getattr(value, "number_of_trainable_tokens", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _messages(role: str, text: str, finish_reason: str | None = None) -> str:
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text[:_CONTENT_LIMIT]}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return json.dumps([message], ensure_ascii=False)


def _error_type(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return str(status) if isinstance(status, int) else type(error).__qualname__


def _error_status() -> Any:
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR)


class BatchObserver:
    """What a batch reports: one `gradient.batch` span, one `gradient.batch.item` span per item (its own
    trace, linked to the batch span: see benchmarks/tracing_batch.py for why links and not children),
    item outcome and retry counters, and your `on_retry` hooks for the batch's own retries.

    The item's HTTP calls are children of its item span, so their usual call/attempt spans, metrics and
    `on_request` / `on_response` / `on_call_end` hooks all fire as for single calls."""

    def __init__(self, owner: Instrumentation, tel: Telemetry | None, operation_name: str, model: str | None) -> None:
        self._hooks = owner.hooks
        self._tracer = tel.tracer if tel is not None else None
        self._metrics = tel.instruments if tel is not None else None
        self._attrs: dict[str, Any] = {"gen_ai.operation.name": operation_name, "gen_ai.provider.name": "gradient"}
        if model is not None:
            self._attrs["gen_ai.request.model"] = model
        self._span: Any = None
        self._links: list[Any] = []

    @classmethod
    def create(cls, owner: Instrumentation, operation_name: str, model: str | None) -> BatchObserver | None:
        """None when nothing would observe the batch (no hooks, no provider, or tracing off)."""
        tel = telemetry() if owner.tracing else None
        if tel is None and owner.hooks.empty:
            return None
        return cls(owner, tel, operation_name, model)

    def started(self, total: int | None) -> None:
        if self._tracer is not None:
            from opentelemetry.trace import Link

            attrs = dict(self._attrs)
            if total is not None:
                attrs["gradient.batch.size"] = total
            self._span = self._tracer.start_span("gradient.batch", attributes=attrs)
            self._links = [Link(self._span.get_span_context())]

    def item(self, index: int) -> _ItemSpan:
        """Enter around one item's work, in the item's own task: its calls become the item span's children."""
        return _ItemSpan(self, index)

    async def retry_scheduled(self, error: BaseException, attempt: int, wait: float) -> None:
        if self._metrics is not None:
            self._metrics.batch_retried.add(1, {**self._attrs, "error.type": _error_type(error)})
        if self._tracer is not None:
            from opentelemetry import trace

            trace.get_current_span().add_event(
                "gradient.retry",
                {"gradient.attempt": attempt, "gradient.retry.wait_s": wait, "error.type": _error_type(error)},
            )
        if self._hooks.on_retry:
            await _call(self._hooks.on_retry, RetryEvent(attempt=attempt, error=error, wait=wait))

    def item_finished(self, error: BaseException | None, attempts: int) -> None:
        if self._metrics is not None:
            outcome = "ok" if error is None else "failed"
            self._metrics.batch_items.add(1, {**self._attrs, "gradient.batch.outcome": outcome})
        if self._tracer is not None:
            from opentelemetry import trace

            span = trace.get_current_span()
            span.set_attribute("gradient.attempts", attempts)
            if error is not None:
                span.set_attribute("error.type", _error_type(error))
                span.set_status(_error_status())

    def finished(self, ok: int, failed: int, retried: int, error: BaseException | None = None) -> None:
        if self._span is not None:
            self._span.set_attributes(
                {"gradient.batch.ok": ok, "gradient.batch.failed": failed, "gradient.batch.retried": retried}
            )
            if error is not None:
                self._span.set_attribute("error.type", _error_type(error))
                self._span.set_status(_error_status())
            self._span.end()
            self._span = None


class _ItemSpan:
    def __init__(self, batch: BatchObserver, index: int) -> None:
        self._batch = batch
        self._index = index
        self._span: Any = None
        self._token: object = None

    def __enter__(self) -> _ItemSpan:
        tracer = self._batch._tracer
        if tracer is not None:
            from opentelemetry import context, trace

            self._span = tracer.start_span(
                "gradient.batch.item",
                context=context.Context(),  # a root: one small trace per item, linked to the batch span
                links=self._batch._links,
                attributes={**self._batch._attrs, "gradient.batch.index": self._index},
            )
            self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._span is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]
            self._span.end()
