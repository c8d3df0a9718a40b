"""A fast fake Gradient API for load tests: raw asyncio HTTP/1.1 with keep-alive, fault knobs, counters.

Routes (every JSON body is tiny and deterministic): the Gradient routes are answered by the project's
one fake API, ``gradient_async.fake_api.FakeGradientAPI`` (complete -> ``"echo: <query[:48]>"``; models,
adapters, fine-tune and embeddings in the wire shape, faults on its knobs). This module adds the fast
socket, the latency, the counters and:

- ``POST /v1/completions``: the OpenAI completions shape (for openai-python's ``AsyncOpenAI``)
- ``GET /_stats`` / ``POST /_reset``: counters as JSON (not counted themselves)

Knobs: ``latency_ms`` (added before every answer), ``rate_limit_rps`` (token bucket of ``rate_burst``;
over the limit answers 429 with a Retry-After in ``retry_after_format``: "float" seconds, "int" seconds,
"date" (HTTP-date) or "ms" (retry-after-ms)), ``fail_rate`` (that fraction of answers is a 503: a seeded
random draw, or with ``seed=-1`` exactly every (1/fail_rate)-th request, so runs repeat).
A query containing ``!status:NNN`` is answered with status NNN (per-item errors).

In-process (the server shares your event loop; asyncio only)::

    async with LoadServer(latency_ms=100, rate_limit_rps=50) as srv:
        client = AsyncGradient(base_url=srv.api_url, access_token="t", workspace_id="w")
        ...
        print(srv.stats.requests, srv.stats.max_in_flight, srv.stats.statuses)

In a subprocess (so server CPU is not charged to the client being measured)::

    with LoadServerProcess(latency_ms=0) as srv:
        ...  # srv.url, srv.api_url, srv.stats() -> dict, srv.reset()

As a script::

    python benchmarks/load_server.py --port 8000 --latency-ms 100 --rate-limit-rps 50 --fail-rate 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from gradient_async.fake_api import MOCK_BASE_MODEL_ID, FakeGradientAPI

__all__ = ["LoadServer", "LoadServerProcess", "ServerStats"]

_COMPLETE = re.compile(rb"^/api/models/([^/?]+)/complete$")
BASE_MODEL_ID = MOCK_BASE_MODEL_ID
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity", 429: "Too Many Requests"}


@dataclass
class ServerStats:
    """Counters since start (or the last reset). `max_in_flight`: most requests being answered at once."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    connections: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections": self.connections,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "paths": dict(self.paths),
        }


def _header_bytes(headers: dict[str, str]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()


def _response(status: int, body: Any, extra_headers: bytes = b"") -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    reason = _REASONS.get(status, "Service Unavailable" if status == 503 else "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"x-request-id: req_load\r\n"
    ).encode()
    return head + extra_headers + b"\r\n" + payload


class _Protocol(asyncio.Protocol):
    def __init__(self, server: LoadServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: list[bytes | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.stats.connections += 1
        self.server.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.transports.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            lines = head.split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            method, _, rest = lines[0].partition(b" ")
            target = rest.rpartition(b" ")[0]
            self._handle(method, target, body)

    def _handle(self, method: bytes, target: bytes, body: bytes) -> None:
        path = target.split(b"?", 1)[0]
        srv = self.server
        if path == b"/_stats":
            self._send_now(_response(200, srv.stats.as_dict()))
            return
        if path == b"/_reset":
            srv.reset()
            self._send_now(_response(200, {"ok": True}))
            return
        stats = srv.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        status, payload, extra = srv.answer(method, target, body)
        stats.statuses[status] += 1
        stats.paths[_route_name(path)] += 1
        data = _response(status, payload, extra)
        slot = len(self.queue)
        self.queue.append(None)
        if srv.latency > 0:
            asyncio.get_running_loop().call_later(srv.latency, self._finish, slot, data)
        else:
            self._finish(slot, data)

    def _finish(self, slot: int, data: bytes) -> None:
        self.server.stats.in_flight -= 1
        self.queue[slot] = data
        # Write every answer that is ready, in request order.
        ready = 0
        while ready < len(self.queue) and self.queue[ready] is not None:
            ready += 1
        if ready:
            out = b"".join(d for d in self.queue[:ready] if d is not None)
            del self.queue[:ready]
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out)

    def _send_now(self, data: bytes) -> None:
        slot = len(self.queue)
        self.queue.append(None)
        self.server.stats.in_flight += 1
        self._finish(slot, data)


def _route_name(path: bytes) -> str:
    if _COMPLETE.match(path):
        return "complete"
    if path == b"/v1/completions":
        return "openai"
    return path.decode(errors="replace")


class LoadServer:
    """The fake API inside the running asyncio loop, on 127.0.0.1 (port 0 picks a free one).

    Args:
        latency_ms: delay before each answer.
        rate_limit_rps: requests per second admitted (None: no limit); over it answers 429 + Retry-After.
        rate_burst: token-bucket capacity (default rate/10, at least 1).
        retry_after_format: "float" (default), "int", "date" or "ms".
        fail_rate: fraction of admitted requests answered 503 (repeatable).
        seed: seed of the random 503 draw; a negative seed fails exactly every (1/fail_rate)-th request.

    Example::

        async with LoadServer(latency_ms=5, fail_rate=0.1) as srv:
            ...  # point a client at srv.api_url
            assert srv.stats.statuses[503] > 0
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        rate_limit_rps: float | None = None,
        rate_burst: float | None = None,
        retry_after_format: str = "float",
        fail_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = max(0.0, latency_ms) / 1000.0
        self._knobs: dict[str, Any] = {
            "rate_limit_rps": rate_limit_rps,
            "rate_burst": rate_burst,
            "retry_after_format": retry_after_format,
            "fail_rate": fail_rate,
            "seed": seed,
        }
        self.fake = self._new_fake()
        self.stats = ServerStats()
        self.transports: set[asyncio.Transport] = set()
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (OpenAI route lives at url + "/v1")."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Gradient base URL: url + "/api"."""
        return self.url + "/api"

    def reset(self) -> None:
        """Zero the counters and restart the rate limiter and the 503 draw."""
        self.stats = ServerStats(in_flight=self.stats.in_flight, connections=self.stats.connections)
        self.fake = self._new_fake()

    def _new_fake(self) -> FakeGradientAPI:
        if self._knobs["retry_after_format"] not in ("float", "int", "date", "ms"):
            raise ValueError(
                f"retry_after_format must be float, int, date or ms, got {self._knobs['retry_after_format']!r}"
            )
        return FakeGradientAPI(record=False, echo_chars=48, retry_after=None, **self._knobs)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.transports):
                transport.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoadServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def answer(self, method: bytes, target: bytes, body: bytes) -> tuple[int, Any, bytes]:
        """(status, JSON payload, extra header bytes) for one request: the shared fake answers Gradient routes."""
        fake = self.fake
        fault = fake.fault()
        if fault is not None:
            status, payload, headers = fault
            return status, payload, _header_bytes(headers)
        path, _, query = target.partition(b"?")
        if method == b"POST" and path == b"/v1/completions":
            return self._openai(body)
        status, payload, headers = fake.route(
            method.decode(), path.decode(errors="replace"), dict(urllib.parse.parse_qsl(query.decode())), body
        )
        return status, payload, _header_bytes(headers)

    def _openai(self, body: bytes) -> tuple[int, Any, bytes]:
        data = _loads(body)
        prompt = data.get("prompt")
        text = "echo: " + (prompt if isinstance(prompt, str) else "")[:48]
        return (
            200,
            {
                "id": "cmpl-load",
                "object": "text_completion",
                "created": 0,
                "model": str(data.get("model", "load")),
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
            b"",
        )


def _loads(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class LoadServerProcess:
    """The same server in a child process (its CPU is not yours). Same knobs as `LoadServer`.

    Example::

        with LoadServerProcess(latency_ms=100) as srv:
            ...  # benchmark against srv.api_url
            print(srv.stats()["requests"])
    """

    def __init__(self, **knobs: Any) -> None:
        self._argv = [sys.executable, __file__, "--port", "0"]
        for name, value in knobs.items():
            if value is not None:
                self._argv += ["--" + name.replace("_", "-"), str(value)]
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        self._proc = subprocess.Popen(self._argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"load server failed to start: {line!r}")
        self.url = line.split()[1]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def stats(self) -> dict[str, Any]:
        """The server's counters (see `ServerStats.as_dict`)."""
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def reset(self) -> None:
        """Zero the counters, restart the rate limiter and the 503 draw."""
        req = urllib.request.Request(self.url + "/_reset", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def __enter__(self) -> LoadServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fake Gradient API for load tests (127.0.0.1 only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rate-limit-rps", type=float, default=None)
    p.add_argument("--rate-burst", type=float, default=None)
    p.add_argument("--retry-after-format", choices=["float", "int", "date", "ms"], default="float")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    srv = LoadServer(
        port=args.port,
        latency_ms=args.latency_ms,
        rate_limit_rps=args.rate_limit_rps,
        rate_burst=args.rate_burst,
        retry_after_format=args.retry_after_format,
        fail_rate=args.fail_rate,
        seed=args.seed,
    )
    async with srv:
        print(f"LISTENING {srv.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
