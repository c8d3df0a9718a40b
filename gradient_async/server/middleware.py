"""A plain ASGI middleware: records every call (method, path, status) and applies the fault knobs
to `/api` requests (latency first, then 429 from the rate limit, then injected 503s).

Example::

    app.add_middleware(CallLogAndFaults, state=state)
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gradient_async.server.errors import error_response
from gradient_async.server.faults import retry_after_headers
from gradient_async.server.state import CallRecord, ServerState

__all__ = ["CallLogAndFaults"]

_MAX_CALLS = 100_000


class CallLogAndFaults:
    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        status = 500
        workspace: str | None = None
        for name, value in scope.get("headers", []):
            if name == b"x-gradient-workspace-id":
                workspace = value[:256].decode("latin-1")  # bounded: the edge refuses longer ones anyway

        async def record_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.state.requests_in_flight += 1
        try:
            if path.startswith("/api/") or path == "/api":
                decision = self.state.injector.decide()
                if decision.delay_s > 0:
                    await anyio.sleep(decision.delay_s)
                if decision.status == 429:
                    assert decision.retry_after_s is not None
                    rps = self.state.settings.faults.rate_limit_rps
                    response = error_response(
                        429,
                        f"rate limit of {rps:g} requests per second exceeded; retry after the Retry-After header",
                        headers=retry_after_headers(decision.retry_after_s),
                    )
                    await response(scope, receive, record_send)
                    return
                if decision.status == 503:
                    response = error_response(503, "injected failure (fail_rate); retry the request", type="failed")
                    await response(scope, receive, record_send)
                    return
            await self.app(scope, receive, record_send)
        finally:
            self.state.requests_in_flight -= 1
            calls = self.state.calls
            if len(calls) >= _MAX_CALLS:
                del calls[: _MAX_CALLS // 2]
            calls.append(CallRecord(scope.get("method", ""), path, status, workspace))
