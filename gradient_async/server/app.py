"""The Gradient-compatible ASGI app: same routes, JSON and errors as https://api.gradient.ai/api.

Routes live under `/api`; `/health` answers liveness and `/openapi.json` the schema.
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

import anyio
from fastapi import APIRouter, FastAPI

from gradient_async._version import __version__
from gradient_async.engine.base import Engine
from gradient_async.server import routes_embeddings, routes_inference, routes_models
from gradient_async.server.errors import install_error_handlers
from gradient_async.server.middleware import CallLogAndFaults
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

    @app.get("/health", tags=["health"], summary="Liveness")
    async def health() -> dict[str, object]:
        reason = state.readiness()
        body: dict[str, object] = {
            "status": "ok",
            "engine": settings.engine,
            "ready": reason is None,
            "baseModels": [b.slug for b in state.base_models],
        }
        if reason is not None:
            body["notReady"] = reason
        return body

    app.add_middleware(CallLogAndFaults, state=state)
    return app
