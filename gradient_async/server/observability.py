"""The outermost ASGI middleware: request id, Prometheus metrics, one access log line, the server span.

Every response carries `x-request-id` (the caller's, when it sent a sane one, else a fresh id); the SDK
reads it onto results and errors. A completion's response also carries `x-gradient-generated-tokens` when the
engine counts its tokens. Every request is counted by route template and status, timed, and
logged once on the `gradient_async.server.access` logger, with fields `route`, `status`, `duration_ms`,
`workspace`, `model_id`, `request_id` (never the token, a query string or a body). With OpenTelemetry
and a tracer provider, the request is a SERVER span continuing the caller's `traceparent`.

Example::

    install_observability(app, state)   # last: its middleware must be the outermost
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from typing import Any, Final

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gradient_async.server.engine_observer import GENERATED_TOKENS_HEADER, install_engine_observer, request_usage
from gradient_async.server.state import ServerState
from gradient_async.server.tracing import server_tracer

__all__ = ["ACCESS_LOGGER", "REQUEST_ID_HEADER", "ObservabilityMiddleware", "RouteTemplates", "install_observability"]

ACCESS_LOGGER: Final = "gradient_async.server.access"
REQUEST_ID_HEADER: Final = "x-request-id"

_access = logging.getLogger(ACCESS_LOGGER)
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_FIELD = 128
_OURS = (b"x-request-id", GENERATED_TOKENS_HEADER.encode())


def new_request_id() -> str:
    return uuid.uuid4().hex


class RouteTemplates:
    """Maps a request to its route template (`/api/models/{model_id}/complete`), whatever FastAPI version
    nests its routers: built once from the app's OpenAPI paths plus its plain routes (`/metrics`, `/docs`).
    Paths no route knows map to `other` (raw paths must never become metric labels)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._table: list[tuple[re.Pattern[str], str]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], str]]:
        templates: set[str] = set()
        with contextlib.suppress(Exception):  # a broken schema must not break serving
            templates.update(self._app.openapi().get("paths", {}))
        for route in getattr(getattr(self._app, "router", None), "routes", ()):
            path = getattr(route, "path", None)
            if isinstance(path, str) and path:
                templates.add(path)
        table = [(compile_path(t)[0], t) for t in templates]
        table.sort(key=lambda item: ("{" in item[1], item[1]))  # literal templates win over parametrized ones
        return table

    def __call__(self, path: str) -> str:
        if self._table is None:
            self._table = self._build()
        for pattern, template in self._table:
            if pattern.match(path):
                return template
        return "other"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, state: ServerState, routes: RouteTemplates) -> None:
        self.app = app
        self.state = state
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = _headers(scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SANE_ID.fullmatch(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode("ascii")
        status = 500
        usage: dict[str, int] = {}
        usage_token = request_usage.set(usage)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                extra = [(b"x-request-id", raw_id)]
                if "output" in usage:
                    extra.append((GENERATED_TOKENS_HEADER.encode(), str(usage["output"]).encode()))
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() not in _OURS),
                    *extra,
                ]
            await send(message)

        tracer = server_tracer()
        span: Any = None
        token: object = None
        if tracer is not None:
            span, token = _server_span(tracer, scope, headers, request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            if span is not None:
                span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            request_usage.reset(usage_token)
            duration = time.perf_counter() - start
            method = _method(scope)
            route = self.routes(_route_path(scope))
            self.state.metrics.record_request(method, route, status, duration)
            if span is not None:
                _end_span(span, token, method, route, status)
            if _access.isEnabledFor(logging.INFO):
                _access.info(
                    "%s %s %d",
                    method,
                    route,
                    status,
                    extra={
                        "access": {
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(duration * 1000.0, 3),
                            "workspace": self._clean(headers.get("x-gradient-workspace-id")),
                            "model_id": self._clean(scope.get("path_params", {}).get("model_id")),
                            "request_id": request_id,
                        }
                    },
                )

    def _clean(self, value: object) -> str | None:
        """A header or path value fit for a log line: short, and never one of the server's tokens."""
        if not isinstance(value, str) or not value:
            return None
        if value in self.state.settings.credentials:
            return "<redacted>"
        return value[:_MAX_FIELD]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


def _route_path(scope: Scope) -> str:
    """The path the app routes on: without the `root_path` a proxy mounted it under."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "") or "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _method(scope: Scope) -> str:
    """The request method, or `_OTHER` (a client may send any token as a method: labels stay bounded)."""
    method = str(scope.get("method", ""))
    return method if method in _METHODS else "_OTHER"


def _headers(scope: Scope) -> dict[str, str]:
    wanted = (b"x-request-id", b"x-gradient-workspace-id", b"traceparent", b"tracestate")
    return {
        name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ()) if name in wanted
    }


def _server_span(tracer: Any, scope: Scope, headers: dict[str, str], request_id: str) -> tuple[Any, object]:
    """The request's SERVER span, continuing the caller's `traceparent`. When FastAPI's own telemetry
    already made one (FastAPI versions with native OpenTelemetry), that span is annotated and
    (None, None) returned: one request, one server span."""
    from opentelemetry import context, propagate, trace

    native = scope.get("fastapi.telemetry")
    if native is not None and getattr(native, "span", None) is not None:
        current = trace.get_current_span()
        current.set_attribute("gradient.request_id", request_id)
        return None, None
    parent = propagate.extract({k: v for k, v in headers.items() if k in ("traceparent", "tracestate")})
    method = _method(scope)
    span = tracer.start_span(
        method,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": str(scope.get("path", "")),
            "gradient.request_id": request_id,
        },
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    return span, token


def _end_span(span: Any, token: object, method: str, route: str, status: int) -> None:
    from opentelemetry import context, trace

    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()
    context.detach(token)  # type: ignore[arg-type]


def install_observability(app: Any, state: ServerState) -> None:
    """Add `GET /metrics`, the engine observers and `ObservabilityMiddleware` (outermost: call this after
    every other `add_middleware`)."""
    from starlette.requests import Request
    from starlette.responses import Response

    install_engine_observer(state)

    async def metrics(request: Request) -> Response:
        state.metrics.set_adapter_counts(await state.store.adapter_counts())
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(ObservabilityMiddleware, state=state, routes=RouteTemplates(app))
