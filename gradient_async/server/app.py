"""The Gradient-compatible ASGI app: same routes, JSON and errors as https://api.gradient.ai/api.

Routes live under `/api`; `/health` answers liveness, `/ready` readiness and `/openapi.json` the schema.
Limits are checked at the edge (`EdgeLimits`: header and body bytes) and by the routes (tokens,
samples, names) before any work; admission (queue, rates) comes next; see `ServerLimits`.
`create_app` opens the catalogue and the engine at once (so the app also works through
`httpx.ASGITransport`, which runs no lifespan); call `await app.state.gradient.aclose()` when
done, or let uvicorn's shutdown do it.

Example::

    app = create_app(ServerSettings(data_dir=Path("/tmp/g"), credentials={"tok": {"ws"}}))
    async with AsyncGradient(access_token="tok", workspace_id="ws", base_url="http://local/api",
                             transport=httpx.ASGITransport(app)) as client:
        print(await client.models.list(only_base=True))
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from gradient_async._version import __version__
from gradient_async.engine.base import Engine
from gradient_async.server import routes_embeddings, routes_inference, routes_models
from gradient_async.server.bodies import (
    StrictCompleteBody,
    StrictCreateAdapterBody,
    StrictEmbedBody,
    StrictFineTuneBody,
    add_body_schemas,
)
from gradient_async.server.edge import EdgeLimits
from gradient_async.server.errors import install_error_handlers
from gradient_async.server.middleware import CallLogAndFaults
from gradient_async.server.observability import install_observability
from gradient_async.server.responses import HealthOut, ReadyOut
from gradient_async.server.settings import ServerSettings
from gradient_async.server.state import ServerState

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api"


def create_app(settings: ServerSettings, *, engine: Engine | None = None) -> FastAPI:
    """Build the app for `settings` (`engine` overrides the one `settings.engine` names).

    Example::

        app = create_app(ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}))
        state = app.state.gradient   # ServerState: .calls, .settings.faults, .base_models
    """
    state = ServerState.build(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.reopen()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(state.warm_up)  # load models / start vLLM while /health already answers
                yield
                tg.cancel_scope.cancel()
        finally:
            await state.aclose()

    app = FastAPI(
        title="Gradient-compatible local server",
        version=__version__,
        description="The Gradient AI platform API, served locally by gradient_async.",
        lifespan=lifespan,
    )
    app.state.gradient = state
    install_error_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(routes_models.router)
    api.include_router(routes_inference.router)
    api.include_router(routes_embeddings.router)
    app.include_router(api)

    @app.get(
        "/health",
        tags=["health"],
        summary="Liveness: the process answers",
        response_model=HealthOut,
        response_model_exclude_none=True,
    )
    async def health() -> HealthOut:
        reason = state.readiness()
        return HealthOut(
            engine=settings.engine,
            base_models=[b.slug for b in state.base_models],
            ready=reason is None,
            not_ready=reason,
        )

    @app.get(
        "/ready",
        tags=["health"],
        summary="Readiness: engine loaded and accepting work (503 when not)",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut}},
    )
    async def ready() -> Any:
        admission = state.admission
        limits = state.settings.limits
        out = ReadyOut(
            ready=not (state.closed or admission.closing)
            and admission.in_flight < limits.max_queue
            and state.readiness() is None,
            engine=settings.engine,
            queued=admission.in_flight,
            max_queue=limits.max_queue,
            requests=state.requests_in_flight,
            shutting_down=admission.closing,
        )
        if out.ready:
            return out
        return JSONResponse(out.model_dump(by_alias=True), status_code=503)

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            add_body_schemas(schema, (StrictCompleteBody, StrictFineTuneBody, StrictCreateAdapterBody, StrictEmbedBody))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(EdgeLimits, limits=lambda: state.settings.limits)
    app.add_middleware(CallLogAndFaults, state=state)
    install_observability(app, state)  # last: its middleware must be the outermost
    return app
