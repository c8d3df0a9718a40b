"""A fast fake Gradient API for load tests: raw asyncio HTTP/1.1 with keep-alive, fault knobs, counters.

Routes (every JSON body is tiny and deterministic):

- ``POST /api/models/{id}/complete``  -> ``{"finishReason": "length", "generatedOutput": "echo: <query[:48]>"}``
- ``GET  /api/models[/{id}]``, ``POST /api/models/{id}/fine-tune``, ``GET /api/embeddings``,
  ``POST /api/embeddings/{slug}``: stub answers in the wire shape
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
import email.utils
import json
import math
import random
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["LoadServer", "LoadServerProcess", "ServerStats"]

_COMPLETE = re.compile(rb"^/api/models/([^/?]+)/complete$")
_FINE_TUNE = re.compile(rb"^/api/models/([^/?]+)/fine-tune$")
_MODEL = re.compile(rb"^/api/models/([^/?]+)$")
_EMBED = re.compile(rb"^/api/embeddings/([^/?]+)$")
_STATUS_IN_QUERY = re.compile(r"!status:(\d{3})")
BASE_MODEL_ID = "99148c6d-c2a0-4fbe-a4a7-e7c05bdb8a09_base_ml_model"
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


class _Bucket:
    """Token bucket: `rate` tokens/s, `burst` capacity. `take()` -> 0.0 if admitted, else seconds until a token."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class _Config:
    def __init__(
        self,
        latency_ms: float,
        rate_limit_rps: float | None,
        rate_burst: float | None,
        retry_after_format: str,
        fail_rate: float,
        seed: int,
    ) -> None:
        if retry_after_format not in ("float", "int", "date", "ms"):
            raise ValueError(f"retry_after_format must be float, int, date or ms, got {retry_after_format!r}")
        if not 0.0 <= fail_rate < 1.0:
            raise ValueError(f"fail_rate must be in [0, 1), got {fail_rate!r}")
        self.latency = max(0.0, latency_ms) / 1000.0
        self.bucket = (
            _Bucket(rate_limit_rps, rate_burst if rate_burst is not None else max(1.0, rate_limit_rps / 10))
            if rate_limit_rps
            else None
        )
        self.retry_after_format = retry_after_format
        self.fail_rate = fail_rate
        self.fail_random = seed >= 0
        self.rng = random.Random(seed)
        self.fail_debt = 0.0

    def should_fail(self) -> bool:
        """Seed >= 0: a seeded random draw. Seed < 0: exactly every (1/fail_rate)-th request, evenly spread."""
        if not self.fail_rate:
            return False
        if self.fail_random:
            return self.rng.random() < self.fail_rate
        self.fail_debt += self.fail_rate
        if self.fail_debt >= 1.0:
            self.fail_debt -= 1.0
            return True
        return False


def _retry_after_header(seconds: float, fmt: str) -> bytes:
    if fmt == "ms":
        return f"retry-after-ms: {max(1, math.ceil(seconds * 1000))}\r\n".encode()
    if fmt == "int":
        return f"Retry-After: {max(1, math.ceil(seconds))}\r\n".encode()
    if fmt == "date":
        return f"Retry-After: {email.utils.formatdate(time.time() + max(1.0, seconds), usegmt=True)}\r\n".encode()
    return f"Retry-After: {seconds:.3f}\r\n".encode()


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
        status, payload, extra = srv.answer(method, path, body)
        stats.statuses[status] += 1
        stats.paths[_route_name(path)] += 1
        data = _response(status, payload, extra)
        slot = len(self.queue)
        self.queue.append(None)
        if srv.config.latency > 0:
            asyncio.get_running_loop().call_later(srv.config.latency, self._finish, slot, data)
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
        self.config = _Config(latency_ms, rate_limit_rps, rate_burst, retry_after_format, fail_rate, seed)
        self._knobs = (latency_ms, rate_limit_rps, rate_burst, retry_after_format, fail_rate, seed)
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
        self.config = _Config(*self._knobs)

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

    def answer(self, method: bytes, path: bytes, body: bytes) -> tuple[int, Any, bytes]:
        """(status, JSON payload, extra header bytes) for one request."""
        cfg = self.config
        if cfg.bucket is not None:
            wait = cfg.bucket.take()
            if wait > 0:
                return 429, {"message": "rate limit exceeded"}, _retry_after_header(wait, cfg.retry_after_format)
        if cfg.should_fail():
            return 503, {"message": "temporarily unavailable"}, b""
        if method == b"POST" and _COMPLETE.match(path):
            return self._complete(body)
        if method == b"POST" and path == b"/v1/completions":
            return self._openai(body)
        if method == b"GET" and path == b"/api/models":
            return 200, {"models": [_base_model()]}, b""
        if method == b"GET" and (m := _MODEL.match(path)):
            return 200, _adapter(m.group(1).decode()), b""
        if method == b"POST" and _FINE_TUNE.match(path):
            samples = _loads(body).get("samples") or []
            return 200, {"numberOfTrainableTokens": 8 * len(samples), "sumLoss": 1.5 * len(samples)}, b""
        if method == b"GET" and path == b"/api/embeddings":
            return 200, {"embeddingsModels": [{"slug": "bge-large"}]}, b""
        if method == b"POST" and _EMBED.match(path):
            inputs = _loads(body).get("inputs") or []
            vectors = [{"embedding": [float(len(i.get("input", ""))), 1.0], "index": n} for n, i in enumerate(inputs)]
            return 200, {"embeddings": vectors}, b""
        return 404, {"message": f"no route {method.decode()} {path.decode(errors='replace')}"}, b""

    def _complete(self, body: bytes) -> tuple[int, Any, bytes]:
        query = _loads(body).get("query")
        if not isinstance(query, str) or not query:
            return 400, {"message": "query must be a non-empty string", "type": "bodyParsingError"}, b""
        forced = _STATUS_IN_QUERY.search(query)
        if forced:
            return int(forced.group(1)), {"message": f"forced by query: {forced.group(0)}", "type": "failed"}, b""
        return 200, {"finishReason": "length", "generatedOutput": "echo: " + query[:48]}, b""

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


def _base_model() -> dict[str, Any]:
    return {
        "id": BASE_MODEL_ID,
        "name": "Load Base",
        "slug": "load-base",
        "type": "baseModel",
        "capabilities": ["complete", "fineTune"],
    }


def _adapter(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": "load-adapter",
        "baseModelId": BASE_MODEL_ID,
        "latestUpdateTime": "2024-01-10T12:00:00.000Z",
        "type": "modelAdapter",
    }


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
