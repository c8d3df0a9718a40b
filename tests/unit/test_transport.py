"""The real transports against a real loopback HTTP server, under asyncio (aiohttp) and trio (httpx)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trio

from gradient_async import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncGradient,
    InternalServerError,
    RequestOptions,
    RetryPolicy,
)
from gradient_async._transport import AiohttpTransport, AutoTransport
from gradient_async.fake_api import FakeGradientAPI

from .conftest import ADAPTER_ID, BASE_ID, FakeSleep


@dataclass
class ServerState:
    connections: set[tuple[str, int]] = field(default_factory=set)
    fake: FakeGradientAPI = field(default_factory=FakeGradientAPI)  # answers the Gradient routes
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    trickle_done: bool = False
    slow_started: threading.Event = field(default_factory=threading.Event)


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
            self._send(*self._answer(b""))
        elif self.path == "/api/slow":
            self.state.slow_started.set()
            time.sleep(1.0)
            self._send(200, {})
        elif self.path == "/api/trickle":
            # headers at once, then one byte every 0.1 s: no single read waits long, the whole takes 3 s
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "32")
            self.end_headers()
            try:
                for byte in b'{"pad": "' + b"x" * 21 + b'"}':
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
                self.state.trickle_done = True
            except OSError:
                pass
        elif self.path == "/api/big":
            data = b"[" + b"0," * 600 + b"0]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            try:
                if "chunked" in self.headers.get("x-test", ""):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(data), 100):
                        part = data[i : i + 100]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client hung up on a body it refused
        elif self.path == "/api/gzip":
            data = gzip.compress(json.dumps({"models": []}).encode())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path in ("/api/bomb-gzip", "/api/bomb-deflate"):
            zeros = b"0" * 5_000_000
            data = gzip.compress(zeros) if self.path.endswith("gzip") else zlib.compress(zeros)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", self.path.rsplit("-", 1)[1])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path in ("/api/badgzip", "/api/deep"):
            data = b"not gzip at all" if self.path == "/api/badgzip" else b"[" * 100_000 + b"]" * 100_000
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path == "/api/badgzip":
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/api/garbage":
            self.wfile.write(b"HTTP/1.1 2OO NOT A STATUS\r\n\r\n")
            self.close_connection = True
        elif self.path == "/api/hangup":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self._send(404, {"message": "nope"})

    def do_POST(self) -> None:
        self.state.connections.add(self.client_address)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.state.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self._send(*self._answer(body))

    def _answer(self, body: bytes) -> tuple[int, object]:
        path, _, query = self.path.partition("?")
        status, payload, _ = self.state.fake.answer(self.command, path, dict(urllib.parse.parse_qsl(query)), body)
        return status, payload


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
    assert models[0].id == BASE_ID and out.generated_output == "echo: héllo"
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
    state.fake.fail_next = 2
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with _client(url) as client:
            seen["models"] = await client.models.list(only_base=True)
            seen["out"] = await client.completions.create(ADAPTER_ID, query="q")
            seen["inner"] = client._pool.http._transport.inner  # type: ignore[attr-defined]
            with pytest.raises(InternalServerError):
                state.fake.fail_next = 5
                await client.with_options(max_retries=1).completions.create(ADAPTER_ID, query="q")

    trio.run(main)
    assert seen["models"][0].slug == "mock-base-model"
    assert seen["out"].generated_output == "echo: q"
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


async def test_asyncio_trickling_server_cannot_stretch_the_timeout(server: tuple[str, ServerState]) -> None:
    url, state = server
    async with _client(url, timeout=0.5, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            await client.request(_get("/trickle"), None)
    assert not state.trickle_done  # cut off long before the 3 s body was through


def test_trio_trickling_server_cannot_stretch_the_timeout(server: tuple[str, ServerState]) -> None:
    url, state = server

    async def main() -> None:
        async with _client(url, timeout=0.5, max_retries=0) as client:
            with pytest.raises(APITimeoutError):
                await client.request(_get("/trickle"), None)

    trio.run(main)
    assert not state.trickle_done


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_asyncio_response_size_cap(server: tuple[str, ServerState], framing: str) -> None:
    from gradient_async import APIResponseValidationError, RequestOptions

    url, _ = server
    async with _client(url, max_response_bytes=1000, max_retries=0) as client:
        with pytest.raises(APIResponseValidationError, match="max_response_bytes"):
            await client.request(RequestOptions("GET", "/big", extra_headers={"x-test": framing}), None)
    async with _client(url, max_response_bytes=10_000) as client:
        assert len(await client.request(RequestOptions("GET", "/big"), lambda data: list(data))) == 601


def test_trio_response_size_cap(server: tuple[str, ServerState]) -> None:
    from gradient_async import APIResponseValidationError, RequestOptions

    url, _ = server

    async def main() -> None:
        # content-length framing only: cutting a chunked httpcore stream short leaves its nested
        # async generators to the GC, which trio reports as a ResourceWarning (httpcore's, not ours)
        async with _client(url, max_response_bytes=1000, max_retries=0) as client:
            with pytest.raises(APIResponseValidationError, match="max_response_bytes"):
                await client.request(RequestOptions("GET", "/big"), None)

    trio.run(main)


async def test_asyncio_close_during_flight_sends_nothing_more(server: tuple[str, ServerState]) -> None:
    import anyio

    from gradient_async import ClientClosedError

    url, state = server
    client = _client(url)  # retries on: a cut connection must still not be retried after close
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await client.request(_get("/slow"), None)
        except BaseException as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.to_thread.run_sync(state.slow_started.wait, 5.0)
        await client.aclose()
    assert len(outcome) == 1 and isinstance(outcome[0], ClientClosedError)
    assert [r[1] for r in state.requests] == ["/api/slow"]  # reached the server once, never again
    with pytest.raises(ClientClosedError):
        await client.models.list()
    transport = client._pool.transport
    assert isinstance(transport, AutoTransport)
    with pytest.raises(httpx.ConnectError):  # the transport is never re-created
        await transport.handle_async_request(httpx.Request("GET", url + "/models"))


def test_trio_close_during_flight_sends_nothing_more(server: tuple[str, ServerState]) -> None:
    from gradient_async import ClientClosedError

    url, state = server
    outcome: list[BaseException] = []

    async def main() -> None:
        client = _client(url)

        async def call() -> None:
            try:
                await client.request(_get("/slow"), None)
            except BaseException as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.to_thread.run_sync(state.slow_started.wait, 5.0)
            await client.aclose()
        with pytest.raises(ClientClosedError):
            await client.models.list()

    trio.run(main)
    assert len(outcome) == 1 and isinstance(outcome[0], ClientClosedError)
    assert [r[1] for r in state.requests] == ["/api/slow"]


async def test_unobserved_calls_on_aiohttp_build_no_httpx_request_or_response(
    server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path sends the prepared parts directly: httpx objects only when something needs them."""
    url, state = server
    built: list[str] = []
    request_init, response_init = httpx.Request.__init__, httpx.Response.__init__

    def count_request(self: httpx.Request, *args: Any, **kwargs: Any) -> None:
        built.append("request")
        request_init(self, *args, **kwargs)

    def count_response(self: httpx.Response, *args: Any, **kwargs: Any) -> None:
        built.append("response")
        response_init(self, *args, **kwargs)

    async with _client(url, tracing=False) as client:
        await client.models.list()  # the transport and session are made on first use
        monkeypatch.setattr(httpx.Request, "__init__", count_request)
        monkeypatch.setattr(httpx.Response, "__init__", count_response)
        out = await client.completions.create(BASE_ID, query="hello", max_generated_token_count=4)
        assert out.generated_output and built == []
        raw = await client.with_raw_response(client.completions.create, BASE_ID, query="hello")
        assert raw.status_code == 200 and built == ["request", "response"]  # built for the caller, once
        method, _, headers, body = state.requests[-1]
        built.clear()
        state.fake.fail_next = 1  # a 503, then the retry succeeds
        await client.models.list()
        assert built == ["request", "response"]  # for the 503 error only: the retry stays on the fast path
    assert (method, headers["authorization"], headers["content-type"]) == ("POST", "Bearer tok", "application/json")
    assert json.loads(body)["query"] == "hello"


async def test_hook_header_changes_reach_the_server_on_aiohttp(server: tuple[str, ServerState]) -> None:
    from gradient_async import Hooks, RequestEvent

    url, state = server

    def tag(event: RequestEvent) -> None:
        event.request.headers["x-trace-me"] = f"attempt-{event.attempt}"

    async with _client(url, hooks=Hooks(on_request=[tag])) as client:
        await client.completions.create(BASE_ID, query="hello")
    assert state.requests[-1][2]["x-trace-me"] == "attempt-1"


async def test_errors_on_the_fast_path_carry_the_request(server: tuple[str, ServerState]) -> None:
    url, _ = server
    async with _client(url, tracing=False, max_retries=0) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.request(RequestOptions("GET", "/hangup"), None)
    assert caught.value.request is not None and caught.value.request.url.path == "/api/hangup"
    cause = caught.value.__cause__
    assert isinstance(cause, httpx.TransportError) and cause.request is caught.value.request
    assert "GET http://127.0.0.1" in str(caught.value) and "tok" not in repr(caught.value.request.headers)


async def test_compressed_bodies_are_decoded_on_the_fast_path(server: tuple[str, ServerState]) -> None:
    url, _ = server
    async with _client(url, tracing=False) as client:
        assert await client.request(RequestOptions("GET", "/gzip"), lambda data: data) == {"models": []}
        raw = await client.with_raw_response(client.request, RequestOptions("GET", "/gzip"), lambda data: data)
        assert raw.parsed == {"models": []} and raw.headers["content-encoding"] == "gzip"


async def test_a_hook_may_reroute_the_request_on_the_fast_path(server: tuple[str, ServerState]) -> None:
    from gradient_async import Hooks, RequestEvent

    url, state = server

    def reroute(event: RequestEvent) -> None:
        event.request.url = event.request.url.copy_with(params={"capability": "complete"})

    async with _client(url, hooks=Hooks(on_request=[reroute])) as client:
        await client.models.list()
    assert state.requests[-1][1] == "/api/models?capability=complete"


@pytest.mark.parametrize("path", ["/badgzip", "/deep"])
async def test_undecodable_or_too_deep_bodies_are_typed_errors(server: tuple[str, ServerState], path: str) -> None:
    """Never an httpx.DecodingError or RecursionError from deep inside: a typed error naming the call."""
    url, _ = server
    async with _client(url, tracing=False, max_retries=0) as client:
        with pytest.raises(APIResponseValidationError, match=f"GET http://127.0.0.1:[0-9]+/api{path}") as caught:
            await client.request(RequestOptions("GET", path), lambda data: data)
    assert caught.value.status_code == 200 and caught.value.request is not None


async def test_a_malformed_answer_is_a_protocol_error_that_never_shows_the_token(
    server: tuple[str, ServerState],
) -> None:
    url, _ = server
    async with _client(url, tracing=False, max_retries=0) as client:
        with pytest.raises(APIConnectionError, match="invalid HTTP response") as caught:
            await client.request(RequestOptions("GET", "/garbage"), None)
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:  # every cause and context, printed or not
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert "400, message" not in str(caught.value)
    assert all("tok" not in repr(e) and "tok" not in str(e) for e in chain), [repr(e) for e in chain]


async def test_a_timeout_names_the_limit_that_fired(server: tuple[str, ServerState]) -> None:
    url, _ = server
    async with _client(url, tracing=False, max_retries=0, timeout=0.5) as client:
        with pytest.raises(APITimeoutError, match=r"no complete response within 0\.5 s"):
            await client.request(RequestOptions("GET", "/trickle"), None)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_decompression_bomb_is_capped_by_its_decoded_size(server: tuple[str, ServerState], coding: str) -> None:
    """max_response_bytes bounds the decoded body: 5 MB of zeros in a few KB of gzip is refused at 1 MB."""
    url, _ = server
    async with _client(url, tracing=False, max_retries=0, max_response_bytes=1_000_000) as client:
        with pytest.raises(APIResponseValidationError, match="larger than max_response_bytes"):
            await client.request(RequestOptions("GET", f"/bomb-{coding}"), lambda data: data)


def test_a_decompression_bomb_is_capped_on_httpx_transports_too() -> None:
    bomb = gzip.compress(b"0" * 5_000_000)

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(bomb))

    async def main() -> None:
        client = AsyncGradient(
            access_token="t",
            workspace_id="w",
            base_url="http://x/api",
            transport=httpx.MockTransport(handler),
            max_retries=0,
            max_response_bytes=1_000_000,
        )
        async with client:
            with pytest.raises(APIResponseValidationError, match="larger than max_response_bytes"):
                await client.models.list()

    trio.run(main)


async def test_a_hook_changing_one_calls_timeout_leaves_the_clients_alone(server: tuple[str, ServerState]) -> None:
    from gradient_async import Hooks, RequestEvent

    url, _ = server
    hurried: list[bool] = []

    def hurry_first(event: RequestEvent) -> None:
        if not hurried:
            hurried.append(True)
            event.request.extensions["timeout"]["read"] = 0.05  # this call only

    async with _client(url, max_retries=0, hooks=Hooks(on_request=[hurry_first])) as client:
        with pytest.raises(APITimeoutError):
            await client.request(RequestOptions("GET", "/slow"), None)
        await client.request(RequestOptions("GET", "/slow"), None)  # the client's own timeout again
