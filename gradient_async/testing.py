"""pytest plugin: test code that uses Gradient without the network.

Fixtures (registered through the `pytest11` entry point, or import them into a conftest.py):

- `gradient_server`: the Gradient-compatible server in-process (no socket) with the test engine,
  a ready `AsyncGradient` (`.client`), the fault knobs (`.faults`), the call log (`.calls`),
  the base model ids, and `.make_client(workspace_id=...)` for other workspaces.
- `gradient_server_url`: the same server on a free loopback port (uvicorn in a thread), for
  clients that bring their own HTTP stack (the official `gradientai` SDK, LangChain, aiohttp).
- `mock_gradient`: a respx router with contract-shaped canned answers, for plain unit tests.

This module imports without FastAPI; the server is imported only when a server fixture runs.

Example::

    async def test_my_summarizer(gradient_server):
        base = (await gradient_server.client.models.list(only_base=True))[-1]
        adapter = await base.create_adapter(name="summarizer")
        await adapter.fine_tune(samples=["Text: long story\\nSummary: short"])
        out = await adapter.complete(query="Text: long story\\nSummary:")
        assert out.generated_output == "short"
        assert gradient_server.calls[-1].status == 200
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import httpx
import pytest

from gradient_async._client import AsyncGradient

if TYPE_CHECKING:
    import respx
    from fastapi import FastAPI

    from gradient_async.server.faults import FaultSettings
    from gradient_async.server.state import CallRecord, ServerState

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(fn: _F) -> _F:
    """pytest-asyncio's fixture decorator (works in its strict mode too), else pytest's own."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - e.g. projects on anyio's pytest plugin
        return cast(_F, pytest.fixture(fn))
    return cast(_F, pytest_asyncio.fixture(fn))


__all__ = [
    "MOCK_ADAPTER_ID",
    "MOCK_BASE_MODEL_ID",
    "MOCK_BASE_URL",
    "TEST_TOKEN",
    "TEST_WORKSPACE",
    "GradientServer",
    "GradientServerURL",
    "gradient_server",
    "gradient_server_url",
    "mock_gradient",
    "mock_gradient_router",
    "running_server",
]

TEST_TOKEN: Final = "gsk-test-token"
TEST_WORKSPACE: Final = "test-workspace"
MOCK_BASE_URL: Final = "https://api.gradient.ai/api"
MOCK_BASE_MODEL_ID: Final = "99148c6d-c2a0-4fbe-a4a7-e7c05bdb8a09_base_ml_model"
MOCK_ADAPTER_ID: Final = "11111111-2222-3333-4444-555555555555_model_adapter"
_IN_PROCESS_URL: Final = "http://gradient.local/api"


def _make_app(data_dir: Path, faults: FaultSettings | None = None) -> FastAPI:
    try:
        from gradient_async.server.app import create_app
        from gradient_async.server.settings import ServerSettings
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"the Gradient test server needs the [server] extra (fastapi): {exc}")
    settings = ServerSettings(data_dir=data_dir, credentials={TEST_TOKEN: {TEST_WORKSPACE}}, engine="test")
    if faults is not None:
        settings.faults = faults
    return create_app(settings)


class _ServerViews:
    """What both server fixtures expose about the running app."""

    app: FastAPI

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.gradient
        return state

    @property
    def faults(self) -> FaultSettings:
        return self.state.settings.faults

    @property
    def calls(self) -> list[CallRecord]:
        return self.state.calls

    @property
    def base_model_ids(self) -> list[str]:
        return [b.id for b in self.state.base_models]


@dataclass
class GradientServer(_ServerViews):
    """The in-process server of the `gradient_server` fixture.

    Attributes: `client` (an `AsyncGradient` for `workspace`), `faults` (change them any time),
    `calls` (every request answered: method, path, status, workspace), `base_model_ids`,
    `app` and `state` (the FastAPI app and its `ServerState`), `token`, `workspace`, `base_url`.

    Example::

        gradient_server.faults.fail_rate = 0.5
        other = gradient_server.make_client(workspace_id="team-b")
    """

    app: FastAPI
    client: AsyncGradient
    token: str = TEST_TOKEN
    workspace: str = TEST_WORKSPACE
    base_url: str = _IN_PROCESS_URL
    _clients: list[AsyncGradient] = field(default_factory=list, repr=False)

    def make_client(
        self,
        *,
        workspace_id: str | None = None,
        access_token: str | None = None,
        grant: bool = True,
        **kwargs: Any,
    ) -> AsyncGradient:
        """Another client on this server (closed at teardown). With `grant`, the token is allowed
        into the workspace first; `grant=False` makes a client the server will refuse.

        Example::

            team_b = gradient_server.make_client(workspace_id="team-b")
            intruder = gradient_server.make_client(access_token="wrong", grant=False)
        """
        token = access_token or self.token
        workspace = workspace_id or self.workspace
        if grant:
            self.state.settings.grant(token, workspace)
        client = AsyncGradient(
            access_token=token,
            workspace_id=workspace,
            base_url=self.base_url,
            transport=httpx.ASGITransport(app=self.app),
            **kwargs,
        )
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        await self.client.aclose()
        await self.state.aclose()


@_async_fixture
async def gradient_server(tmp_path: Path) -> AsyncIterator[GradientServer]:
    """The Gradient-compatible server in-process (test engine, data in tmp_path) and a client for it."""
    app = _make_app(tmp_path / "gradient-server")
    client = AsyncGradient(
        access_token=TEST_TOKEN,
        workspace_id=TEST_WORKSPACE,
        base_url=_IN_PROCESS_URL,
        transport=httpx.ASGITransport(app=app),
    )
    server = GradientServer(app=app, client=client)
    try:
        yield server
    finally:
        await server.aclose()


@dataclass
class GradientServerURL(_ServerViews):
    """The server of the `gradient_server_url` fixture, on a loopback port.

    Attributes: `url` (the API base URL, ending in `/api`), `root_url`, `token`, `workspace`,
    `env` (GRADIENT_* variables for clients that read the environment), `faults`, `calls`, `state`.

    Example::

        from gradientai import Gradient
        gradient = Gradient(access_token=srv.token, workspace_id=srv.workspace, host=srv.url)
    """

    root_url: str
    app: FastAPI
    token: str = TEST_TOKEN
    workspace: str = TEST_WORKSPACE

    @property
    def url(self) -> str:
        return self.root_url + "/api"

    @property
    def env(self) -> dict[str, str]:
        return {
            "GRADIENT_API_URL": self.url,
            "GRADIENT_ACCESS_TOKEN": self.token,
            "GRADIENT_WORKSPACE_ID": self.workspace,
        }


@contextmanager
def running_server(app: FastAPI, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of `host` in a background thread; yields the root URL.

    Example::

        with running_server(create_app(settings)) as root:
            httpx.get(root + "/health")
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", ws="none")
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=serve, name=f"gradient-server-{port}", daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # up to ~10 s
            if server.started or errors or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError(f"the test server did not start on {host}:{port}: {errors or 'timeout'}")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def gradient_server_url(tmp_path: Path) -> Iterator[GradientServerURL]:
    """The Gradient-compatible server on a free 127.0.0.1 port (uvicorn in a thread, test engine)."""
    app = _make_app(tmp_path / "gradient-server")
    with running_server(app) as root:
        yield GradientServerURL(root_url=root, app=app)


def _mock_models(*, only_base: bool) -> list[dict[str, object]]:
    base: dict[str, object] = {
        "id": MOCK_BASE_MODEL_ID,
        "name": "Mock Base Model",
        "slug": "mock-base-model",
        "type": "baseModel",
        "capabilities": ["complete", "fineTune"],
    }
    adapter: dict[str, object] = {
        "id": MOCK_ADAPTER_ID,
        "name": "my_model_adapter",
        "baseModelId": MOCK_BASE_MODEL_ID,
        "latestUpdateTime": "2024-01-10T12:00:00.000Z",
        "type": "modelAdapter",
    }
    return [base] if only_base else [base, adapter]


def _model_list(request: httpx.Request) -> httpx.Response:
    only_base = request.url.params.get("onlyBase", "False").lower() == "true"
    return httpx.Response(200, json={"models": _mock_models(only_base=only_base)})


def _get_model(request: httpx.Request, model_id: str, **_: str) -> httpx.Response:
    for model in _mock_models(only_base=False):
        if model["id"] == model_id:
            return httpx.Response(200, json=model)
    return httpx.Response(404, json={"message": f"no model {model_id!r}", "type": "unknownModelAdapter"})


def _complete(request: httpx.Request, **_: str) -> httpx.Response:
    query = json.loads(request.content).get("query", "")
    return httpx.Response(200, json={"finishReason": "stop", "generatedOutput": f"mock answer to: {query}"})


def _embed(request: httpx.Request, **_: str) -> httpx.Response:
    inputs = json.loads(request.content).get("inputs", [])
    return httpx.Response(
        200, json={"embeddings": [{"embedding": [0.1, 0.2, 0.3], "index": i} for i in range(len(inputs))]}
    )


def mock_gradient_router(base_url: str = MOCK_BASE_URL) -> respx.MockRouter:
    """A respx router answering every in-scope route of `base_url` like the API would.

    Named routes (override any with `router["complete"].respond(...)` or `.mock(side_effect=...)`):
    list_models, get_model, create_adapter, delete_model, complete, fine_tune, list_embeddings, embed.
    `using="httpx"` makes it intercept every httpx client, whatever its transport.

    Example::

        with mock_gradient_router() as router:
            router["complete"].respond(json={"finishReason": "stop", "generatedOutput": "42"})
    """
    import respx

    router = respx.mock(base_url=base_url, assert_all_called=False, using="httpx")
    one = r"(?P<model_id>[^/]+)"
    router.get("/models", name="list_models").mock(side_effect=_model_list)
    router.post(path__regex=rf"/models/{one}/complete$", name="complete").mock(side_effect=_complete)
    router.post(path__regex=rf"/models/{one}/fine-tune$", name="fine_tune").respond(
        json={"numberOfTrainableTokens": 8, "sumLoss": 12.5}
    )
    router.get(path__regex=rf"/models/{one}$", name="get_model").mock(side_effect=_get_model)
    router.post("/models", name="create_adapter").respond(json={"id": MOCK_ADAPTER_ID})
    router.delete(path__regex=rf"/models/{one}$", name="delete_model").respond(json={})
    router.get("/embeddings", name="list_embeddings").respond(json={"embeddingsModels": [{"slug": "bge-large"}]})
    router.post(path__regex=r"/embeddings/(?P<slug>[^/]+)$", name="embed").mock(side_effect=_embed)
    return router


@pytest.fixture
def mock_gradient() -> Iterator[respx.MockRouter]:
    """A respx router with contract-shaped answers at https://api.gradient.ai/api (see `mock_gradient_router`)."""
    with mock_gradient_router() as router:
        yield router
