"""The pytest plugin (`gradient_async.testing`): mock_gradient's scope and credentials, the one fake API,
strict asyncio mode, and what the `[testing]` extra brings."""

from __future__ import annotations

import json
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import respx

from gradient_async import AsyncGradient, BaseModelHandle, NotFoundError
from gradient_async.fake_api import MOCK_BASE_MODEL_ID, FakeGradientAPI
from gradient_async.testing import MOCK_ADAPTER_ID, MOCK_BASE_URL, TEST_TOKEN

ROOT = Path(__file__).resolve().parents[2]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_mock_gradient_answers_like_the_api(
    mock_gradient: respx.MockRouter, fake_gradient: FakeGradientAPI
) -> None:
    async with AsyncGradient() as client:  # the fixture set test credentials and the base URL
        base = (await client.models.list(only_base=True))[-1]
        assert isinstance(base, BaseModelHandle) and base.id == MOCK_BASE_MODEL_ID
        adapter = await base.create_adapter(name="x")
        assert adapter.id in {m.id for m in await client.models.list()}
        assert (await adapter.complete(query="Hi")).generated_output == "echo: Hi"
        assert (await adapter.fine_tune(samples=["x"])).number_of_trainable_tokens == 8
        resp = await client.embeddings.create("bge-large", inputs=["a", "b"])
        assert sorted(e.index for e in resp.embeddings) == [0, 1]
        mock_gradient["complete"].respond(404, json={"message": "gone", "type": "unknownModelAdapter"})
        with pytest.raises(NotFoundError):
            await adapter.complete(query="Hi")
        await adapter.delete()
        assert adapter.id not in {m.id for m in await client.models.list()}
    assert mock_gradient["delete_model"].called
    assert json.loads(mock_gradient["create_adapter"].calls.last.request.content)["model"]["name"] == "x"
    assert fake_gradient.requests[0].headers["authorization"] == f"Bearer {TEST_TOKEN}"


async def test_mock_gradient_lets_other_hosts_through(mock_gradient: respx.MockRouter, other_host: str) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(other_host + "/anything")).json() == {"hello": "world"}
    async with AsyncGradient() as client:
        assert (await client.completions.create(MOCK_ADAPTER_ID, query="Hi")).generated_output == "echo: Hi"
    assert mock_gradient["complete"].call_count == 1


async def test_unknown_gradient_paths_are_answered_by_the_fake_not_the_network(
    mock_gradient: respx.MockRouter,
) -> None:
    async with AsyncGradient() as client:
        with pytest.raises(NotFoundError, match="no model 'a/b'"):
            await client.models.get("a/b")  # percent-encoded on the wire, one id to the fake
    async with httpx.AsyncClient() as http:
        resp = await http.get(MOCK_BASE_URL + "/no/such/route")
    assert resp.status_code == 404 and "no route" in resp.json()["message"]
    assert mock_gradient["gradient"].called


def test_async_tests_using_the_fixtures_run_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    pytester.makepyfile(
        """
        from gradient_async import AsyncGradient

        async def test_plain(mock_gradient):
            async with AsyncGradient() as client:
                models = await client.models.list()
            assert models

        async def test_server(gradient_server):
            assert await gradient_server.client.models.list()
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*2 passed*"])


def test_the_testing_extra_brings_every_fixture_dependency() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split("[")[0].split(">")[0].split("=")[0].strip() for req in extras["testing"]}
    assert {"pytest", "pytest-asyncio", "respx", "fastapi", "uvicorn", "platformdirs"} <= names
    server = {req.split(">")[0].strip() for req in extras["server"]}
    assert server <= names  # everything the server fixtures import
