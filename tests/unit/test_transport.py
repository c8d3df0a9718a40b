"""The real transports against a real loopback HTTP server, under asyncio (aiohttp) and trio (httpx)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trio

from gradient_async import APIConnectionError, APITimeoutError, AsyncGradient, InternalServerError, RetryPolicy
from gradient_async._transport import AiohttpTransport, AutoTransport

from .conftest import ADAPTER_ID, BASE_ID, FakeSleep

MODELS = {"models": [{"id": BASE_ID, "name": "B", "slug": "b", "type": "baseModel", "capabilities": ["complete"]}]}


@dataclass
class ServerState:
    connections: set[tuple[str, int]] = field(default_factory=set)
    complete_failures: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.state.connections.add(self.client_address)
        self.state.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
        if self.path.startswith("/api/models"):
            self._send(200, MODELS)
        elif self.path == "/api/slow":
            time.sleep(1.0)
            self._send(200, {})
        elif self.path == "/api/hangup":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self._send(404, {"message": "nope"})

    def do_POST(self) -> None:
        self.state.connections.add(self.client_address)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.state.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.state.complete_failures > 0:
            self.state.complete_failures -= 1
            self._send(503, {"message": "busy"})
            return
        self._send(200, {"finishReason": "stop", "generatedOutput": "over a socket"})


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api", state
    httpd.shutdown()
    httpd.server_close()


def _client(url: str, **kwargs: Any) -> AsyncGradient:
    kwargs.setdefault("retry", RetryPolicy(sleep=FakeSleep()))
    return AsyncGradient(access_token="tok", workspace_id="ws", base_url=url, **kwargs)


async def test_asyncio_uses_aiohttp_and_keeps_connections_alive(server: tuple[str, ServerState]) -> None:
    url, state = server
    async with _client(url) as client:
        for _ in range(5):
            models = await client.models.list(only_base=True)
        out = await client.completions.create(ADAPTER_ID, query="héllo", max_generated_token_count=5)
        transport = client._pool.http._transport
        assert isinstance(transport, AutoTransport) and isinstance(transport.inner, AiohttpTransport)
    assert models[0].id == BASE_ID and out.generated_output == "over a socket"
    assert len(state.connections) == 1  # six requests, one keep-alive connection
    _, _, headers, body = state.requests[-1]
    assert headers["authorization"] == "Bearer tok" and headers["x-gradient-workspace-id"] == "ws"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["query"] == "héllo"


async def test_asyncio_read_timeout_is_typed(server: tuple[str, ServerState]) -> None:
    url, _ = server
    async with _client(url, timeout=0.2, max_retries=0) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.request(_get("/slow"), None)
    assert info.value.sent is True


async def test_asyncio_hangup_is_a_connection_error(server: tuple[str, ServerState]) -> None:
    url, _ = server
    async with _client(url, max_retries=0) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.request(_get("/hangup"), None)
    assert info.value.sent is True


async def test_asyncio_refused_connection_was_never_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _client(f"http://127.0.0.1:{port}/api", max_retries=0) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.models.list()
    assert info.value.sent is False and not isinstance(info.value, APITimeoutError)


def _get(path: str) -> Any:
    from gradient_async import RequestOptions

    return RequestOptions("GET", path)


def test_trio_core_calls_use_httpx_transport(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.complete_failures = 2
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with _client(url) as client:
            seen["models"] = await client.models.list(only_base=True)
            seen["out"] = await client.completions.create(ADAPTER_ID, query="q")
            seen["inner"] = client._pool.http._transport.inner  # type: ignore[attr-defined]
            with pytest.raises(InternalServerError):
                state.complete_failures = 5
                await client.with_options(max_retries=1).completions.create(ADAPTER_ID, query="q")

    trio.run(main)
    assert seen["models"][0].slug == "b"
    assert seen["out"].generated_output == "over a socket"
    assert isinstance(seen["inner"], httpx.AsyncHTTPTransport)


def test_trio_connection_refused_is_typed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        async with _client(f"http://127.0.0.1:{port}/api", max_retries=0) as client:
            with pytest.raises(APIConnectionError):
                await client.models.list()

    trio.run(main)
