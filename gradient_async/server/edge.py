"""Limits at the edge: an ASGI middleware that refuses oversized requests before any work.

- Header bytes over `max_header_bytes`: 431. A workspace header over `max_workspace_chars`: 400.
- A body over `max_body_bytes`: 413, at once when `Content-Length` says so (the body is never read),
  else the moment the bytes counted as `receive()` yields them pass the limit (chunked bodies). The
  app then sees a disconnect, so nothing downstream ever holds more than the limit plus one chunk.
- A body still incomplete `body_timeout_s` after the request started: 408 (slow-body attacks).
- A malformed `Content-Length`: 400.

Errors use the contract's body `{"message", "type"?, "payload": {"limit", "maximum", "actual"?}}`
and close the connection (the rest of the body is never read).

Example::

    app.add_middleware(EdgeLimits, limits=lambda: settings.limits)
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gradient_async.server.errors import error_response
from gradient_async.server.limits import LimitError, ServerLimits
from gradient_async.server.metrics import record_rejection

__all__ = ["EdgeLimits"]


def _check_headers(scope: Scope, limits: ServerLimits) -> int | None:
    """The declared body length; raises LimitError for headers over the limits."""
    total = 0
    length: int | None = None
    for name, value in scope.get("headers", []):
        total += len(name) + len(value) + 4  # "name: value\r\n"
        if name == b"x-gradient-workspace-id" and len(value) > limits.max_workspace_chars:
            raise LimitError(
                400,
                f"the x-gradient-workspace-id header is {len(value)} bytes; the limit is "
                f"{limits.max_workspace_chars} (max_workspace_chars)",
                limit="max_workspace_chars",
                maximum=limits.max_workspace_chars,
                actual=len(value),
            )
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 19:
                raise LimitError(
                    400, "malformed Content-Length header", limit="max_body_bytes", maximum=limits.max_body_bytes
                )
            length = int(text)
    if total > limits.max_header_bytes:
        raise LimitError(
            431,
            f"request headers are {total} bytes; the limit is {limits.max_header_bytes} (max_header_bytes)",
            limit="max_header_bytes",
            maximum=limits.max_header_bytes,
            actual=total,
        )
    return length


def _too_large(limits: ServerLimits, actual: int | None) -> LimitError:
    said = f"{actual} bytes" if actual is not None else "more bytes than allowed"
    return LimitError(
        413,
        f"request body is {said}; the limit is {limits.max_body_bytes} bytes (max_body_bytes)",
        limit="max_body_bytes",
        maximum=limits.max_body_bytes,
        actual=actual,
        type="bodyParsingError",
    )


async def _refuse(exc: LimitError, scope: Scope, receive: Receive, send: Send) -> None:
    record_rejection(scope, status=exc.status_code, reason=exc.limit)
    response = error_response(
        exc.status_code,
        exc.message,
        type=exc.type,
        payload=exc.payload(),
        headers={"Connection": "close"},
    )
    await response(scope, receive, send)


class EdgeLimits:
    """The ASGI middleware; `limits` is read per request, so changed settings apply at once."""

    def __init__(self, app: ASGIApp, *, limits: Callable[[], ServerLimits]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits()
        try:
            length = _check_headers(scope, limits)
            if length is not None and length > limits.max_body_bytes:
                raise _too_large(limits, length)
        except LimitError as exc:
            await _refuse(exc, scope, receive, send)
            return

        seen = 0
        started = False
        refused = False
        body_done = False
        deadline = anyio.current_time() + limits.body_timeout_s

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def counting_receive() -> Message:
            nonlocal seen, refused, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body: disconnect listeners wait as long as they like
            message: Message | None = None
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
            if message is None:
                refused = True
                if not started:
                    late = LimitError(
                        408,
                        f"the request body did not arrive within {limits.body_timeout_s:g} s (body_timeout_s)",
                        limit="body_timeout_s",
                        maximum=limits.body_timeout_s,
                    )
                    await _refuse(late, scope, receive, tracked_send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limits.max_body_bytes:
                    refused = True
                    if not started:
                        await _refuse(_too_large(limits, None), scope, receive, tracked_send)
                    return {"type": "http.disconnect"}
            return message

        async def app_send(message: Message) -> None:
            if not refused:  # after our 413, whatever the app says is dropped
                await tracked_send(message)

        await self.app(scope, counting_receive, app_send)
