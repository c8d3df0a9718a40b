"""pytest plugin: test code that uses Gradient without the network.

Fixtures (registered through the `pytest11` entry point, or import them into a conftest.py):

- `gradient_server`: the Gradient-compatible server in-process (no socket) with the test engine,
  a ready `AsyncGradient` (`.client`), the fault knobs (`.faults`), the call log (`.calls`),
  the base model ids, and `.make_client(workspace_id=...)` for other workspaces.
- `gradient_server_url`: the same server on a free loopback port (uvicorn in a thread), for
  clients that bring their own HTTP stack (the official `gradientai` SDK, LangChain, aiohttp).
- `mock_gradient`: a respx router answering the Gradient base URL (https://api.gradient.ai/api)
  from `fake_gradient`; other hosts go through untouched, and GRADIENT_* test credentials are set,
  so a bare `AsyncGradient()` works inside it.
- `fake_gradient`: the scriptable fake Gradient API (`gradient_async.fake_api.FakeGradientAPI`)
  behind `mock_gradient`; `fake_gradient.client()` is a client wired to it without respx.

`pip install "gradient-async[testing]"` brings every fixture's dependencies. Async tests that use
these fixtures run on pytest-asyncio without `asyncio_mode = "auto"` (the plugin marks them).
This module imports without FastAPI; the server is imported only when a server fixture runs,
and fails the test (never skips it) when the `[testing]` extra is missing.

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

import inspect
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
from gradient_async.fake_api import (
    FAKE_BASE_URL,
    FAKE_TOKEN,
    FAKE_WORKSPACE,
    MOCK_ADAPTER_ID,
    MOCK_BASE_MODEL_ID,
    FakeGradientAPI,
)

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
    "FakeGradientAPI",
    "GradientServer",
    "GradientServerURL",
    "fake_gradient",
    "gradient_server",
    "gradient_server_url",
    "mock_gradient",
    "mock_gradient_router",
    "running_server",
]

TEST_TOKEN: Final = FAKE_TOKEN
TEST_WORKSPACE: Final = FAKE_WORKSPACE
MOCK_BASE_URL: Final = FAKE_BASE_URL
_IN_PROCESS_URL: Final = "http://gradient.local/api"
_EXTRA_HINT: Final = 'pip install "gradient-async[testing]"'
_OUR_FIXTURES: Final = frozenset({"gradient_server", "gradient_server_url", "mock_gradient", "fake_gradient"})


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Mark async tests that use these fixtures for pytest-asyncio, so they run in its strict mode too."""
    if not (inspect.iscoroutinefunction(obj) and collector.funcnamefilter(name)):  # type: ignore[attr-defined]
        return
    if collector.config.pluginmanager.get_plugin("asyncio") is None:
        return
    if _OUR_FIXTURES.isdisjoint(inspect.signature(obj).parameters):
        return
    marks = {m.name for m in getattr(obj, "pytestmark", [])}
    if marks.isdisjoint({"asyncio", "anyio", "trio"}):
        pytest.mark.asyncio(obj)


def _make_app(data_dir: Path, faults: FaultSettings | None = None) -> FastAPI:
    try:
        from gradient_async.server.app import create_app
        from gradient_async.server.settings import ServerSettings
    except ImportError as exc:
        pytest.fail(f"the Gradient test server needs the [testing] extra (FastAPI, uvicorn): {_EXTRA_HINT} ({exc})")
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


def mock_gradient_router(
    base_url: str = MOCK_BASE_URL, fake: FakeGradientAPI | None = None, *, pass_through: bool = True
) -> respx.MockRouter:
    """A respx router answering `base_url` from `fake` (a new `FakeGradientAPI` by default).

    Named routes (override any with `router["complete"].respond(...)` or `.mock(side_effect=...)`):
    list_models, get_model, create_adapter, delete_model, complete, fine_tune, list_embeddings, embed,
    and `gradient` for any other path under `base_url`. Requests to other hosts go through to the
    network unless `pass_through=False`. `using="httpx"` intercepts every httpx client, whatever its
    transport (the SDK's aiohttp one included).

    Example::

        with mock_gradient_router() as router:
            router["complete"].respond(json={"finishReason": "stop", "generatedOutput": "42"})
    """
    import respx

    fake = fake if fake is not None else FakeGradientAPI()
    router = respx.mock(base_url=base_url, assert_all_called=False, using="httpx")
    one = r"(?P<model_id>[^/]+)"

    def side_effect(request: httpx.Request, **_: str) -> httpx.Response:  # respx passes path groups too
        return fake.handle(request)

    router.get("/models", name="list_models").mock(side_effect=side_effect)
    router.post(path__regex=rf"/models/{one}/complete$", name="complete").mock(side_effect=side_effect)
    router.post(path__regex=rf"/models/{one}/fine-tune$", name="fine_tune").mock(side_effect=side_effect)
    router.get(path__regex=rf"/models/{one}$", name="get_model").mock(side_effect=side_effect)
    router.post("/models", name="create_adapter").mock(side_effect=side_effect)
    router.delete(path__regex=rf"/models/{one}$", name="delete_model").mock(side_effect=side_effect)
    router.get("/embeddings", name="list_embeddings").mock(side_effect=side_effect)
    router.post(path__regex=r"/embeddings/(?P<slug>[^/]+)$", name="embed").mock(side_effect=side_effect)
    router.route(name="gradient").mock(side_effect=side_effect)
    if pass_through:  # added past the base URL scope: every other host reaches the network
        router.routes.add(respx.Route().pass_through(), name="other_hosts")
    fake.base_path = httpx.URL(base_url).path.rstrip("/")
    return router


@pytest.fixture
def fake_gradient() -> FakeGradientAPI:
    """The scriptable fake Gradient API (`gradient_async.fake_api.FakeGradientAPI`) behind `mock_gradient`.

    Example::

        async def test_retries(fake_gradient):
            fake_gradient.fail_every = 2
            async with fake_gradient.client() as client:
                await client.models.list()
    """
    return FakeGradientAPI()


@pytest.fixture
def mock_gradient(fake_gradient: FakeGradientAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    """Answer https://api.gradient.ai/api from `fake_gradient`; other hosts pass through; test credentials set.

    Example::

        async def test_summary(mock_gradient):
            async with AsyncGradient() as client:          # GRADIENT_* point at the fake
                out = await client.completions.create(MOCK_ADAPTER_ID, query="Hi")
            assert out.generated_output == "echo: Hi"
            assert mock_gradient["complete"].called
    """
    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("GRADIENT_WORKSPACE_ID", TEST_WORKSPACE)
    monkeypatch.setenv("GRADIENT_API_URL", MOCK_BASE_URL)
    with mock_gradient_router(MOCK_BASE_URL, fake_gradient) as router:
        yield router
