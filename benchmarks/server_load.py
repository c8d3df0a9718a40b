"""The Gradient-compatible server under load: `gradient-async serve` in a child process, driven by many
concurrent clients with a mix of completions, fine-tunes, adapter create/delete, listings and hostile
requests (oversized and chunked bodies, NaN/infinite/boolean numbers, too many samples, huge headers,
broken JSON), while a prober asks `/health` every 100 ms.

Reported: requests/s, p50/p99 latency per route, `/health` p50/p99 idle and under load (the in-run
comparison), status counts, 5xx count (goal 0), fine-tunes lost or applied twice (goal 0: each client
fine-tunes its own adapter on one sample and counts the 200s; afterwards the test engine's adapter file
says how often that sample was trained), and the server's peak RSS.

Usage::

    python benchmarks/server_load.py                       # test engine 60 s + local engine 30 s
    python benchmarks/server_load.py --engine test --duration 10 --clients 8

JSON goes to benchmarks/results/server_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

TOKEN = "bench-token"
WORKSPACE = "bench-ws"
RESULTS = Path(__file__).parent / "results" / "server_load.json"

# Operation weights: the hostile share is about 15 %.
OPS = {
    "complete": 45,
    "fine-tune": 15,
    "create+delete": 8,
    "list": 10,
    "embed": 5,
    "hostile": 17,
}
HOSTILE = ("big-chunked", "big-declared", "nan-multiplier", "bool-int", "many-samples", "huge-headers", "bad-json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 2)


class ServerProcess:
    """`gradient-async serve` in a child process, with its peak RSS sampled every 50 ms."""

    def __init__(self, engine: str, data_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {**os.environ, "GRADIENT_SERVER_TOKEN": TOKEN}
        cmd = [sys.executable, "-c", "import sys; from gradient_async.cli import main; sys.exit(main())", "serve"]
        cmd += ["--engine", engine, "--data-dir", str(data_dir), "--port", str(self.port)]
        cmd += ["--workspace", WORKSPACE, "--log-level", "warning", "--shutdown-timeout", "10"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        try:
            process = psutil.Process(self.proc.pid)
            while not self._stop.is_set():
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                time.sleep(0.05)
        except psutil.Error:
            return

    async def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.proc.communicate()[1][-2000:]}")
                try:
                    async with session.get(self.url + "/ready") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not ready in time")
                await asyncio.sleep(0.1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._stop.set()
        return code


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, route: str, status: int | str, seconds: float) -> None:
        self.latency[route].append(seconds)
        self.statuses[route][str(status)] += 1


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield b'{"query": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


class Client:
    """One simulated user: its own adapter (fine-tuned on one sample), and random operations."""

    def __init__(self, n: int, url: str, base_id: str, rec: Recorder, seed: int, hostile: bool) -> None:
        self.n = n
        self.api = url + "/api"
        self.base_id = base_id
        self.rec = rec
        self.rng = random.Random(seed + n)
        self.hostile = hostile
        self.headers = {"Authorization": f"Bearer {TOKEN}", "x-gradient-workspace-id": WORKSPACE}
        self.sample = f"Client {n} fact: the number of client {n} is {n * 7 + 3}."
        self.adapter = ""
        self.fine_tunes_ok = 0
        self.fine_tunes_unknown = 0

    async def call(
        self, session: aiohttp.ClientSession, route: str, method: str, path: str, **kw: Any
    ) -> tuple[int | str, Any]:
        started = time.perf_counter()
        headers = {**self.headers, **kw.pop("headers", {})}
        try:
            async with session.request(method, self.api + path, headers=headers, **kw) as r:
                body = await r.read()
                status: int | str = r.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            status, body = f"exc:{type(exc).__name__}", b""
        self.rec.add(route, status, time.perf_counter() - started)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    async def run(self, session: aiohttp.ClientSession, until: float) -> None:
        status, body = await self.call(
            session, "create", "POST", "/models", json={"model": {"baseModelId": self.base_id, "name": f"c{self.n}"}}
        )
        if status != 200:
            raise RuntimeError(f"client {self.n} could not create its adapter: {status} {body}")
        self.adapter = body["id"]
        ops = [op for op in OPS if self.hostile or op != "hostile"]
        weights = [OPS[op] for op in ops]
        while time.monotonic() < until:
            op = self.rng.choices(ops, weights)[0]
            await getattr(self, "op_" + op.replace("+", "_").replace("-", "_"))(session)

    async def op_complete(self, session: aiohttp.ClientSession) -> None:
        target = self.adapter if self.rng.random() < 0.7 else self.base_id
        query = f"Client {self.n} fact: the number of client {self.n} is" if self.rng.random() < 0.5 else "Hello"
        await self.call(
            session,
            "complete",
            "POST",
            f"/models/{target}/complete",
            json={"query": query, "maxGeneratedTokenCount": 16},
        )

    async def op_fine_tune(self, session: aiohttp.ClientSession) -> None:
        status, _ = await self.call(
            session,
            "fine-tune",
            "POST",
            f"/models/{self.adapter}/fine-tune",
            json={"samples": [{"inputs": self.sample, "fineTuningParameters": {"multiplier": 1.0}}]},
        )
        if status == 200:
            self.fine_tunes_ok += 1
        elif isinstance(status, str) or status >= 500:
            self.fine_tunes_unknown += 1  # may or may not have been applied

    async def op_create_delete(self, session: aiohttp.ClientSession) -> None:
        status, body = await self.call(
            session, "create", "POST", "/models", json={"model": {"baseModelId": self.base_id, "name": "temp"}}
        )
        if status == 200:
            await self.call(session, "delete", "DELETE", f"/models/{body['id']}")

    async def op_list(self, session: aiohttp.ClientSession) -> None:
        await self.call(session, "list", "GET", "/models", params={"onlyBase": "False", "capability": "any"})

    async def op_embed(self, session: aiohttp.ClientSession) -> None:
        inputs = [{"input": f"text {i}"} for i in range(8)]
        await self.call(session, "embed", "POST", "/embeddings/bge-large", json={"inputs": inputs})

    async def op_hostile(self, session: aiohttp.ClientSession) -> None:
        kind = self.rng.choice(HOSTILE)
        path = f"/models/{self.adapter}/fine-tune"
        complete = f"/models/{self.base_id}/complete"
        route = "hostile:" + kind
        if kind == "big-chunked":
            await self.call(session, route, "POST", complete, data=_chunks(6 * 1024 * 1024))
        elif kind == "big-declared":
            await self.call(session, route, "POST", complete, data=b"x" * (5 * 1024 * 1024))
        elif kind == "nan-multiplier":
            text = '{"samples": [{"inputs": "x", "fineTuningParameters": {"multiplier": Infinity}}]}'
            await self.call(session, route, "POST", path, data=text, headers={"content-type": "application/json"})
        elif kind == "bool-int":
            await self.call(session, route, "POST", complete, json={"query": "x", "maxGeneratedTokenCount": True})
        elif kind == "many-samples":
            await self.call(session, route, "POST", path, json={"samples": [{"inputs": "a"}] * 50_000})
        elif kind == "huge-headers":
            await self.call(session, route, "GET", "/models", headers={"x-padding": "p" * 30_000})
        else:
            await self.call(session, route, "POST", complete, data=b'{"query": ', headers={"content-type": "x"})


async def probe_health(url: str, until: float, out: list[float]) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                async with session.get(url + "/health") as r:
                    await r.read()
                    if r.status == 200:
                        out.append(time.perf_counter() - started)
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


def trained_count(data_dir: Path, adapter_id: str, sample: str) -> int | None:
    """How often the test engine trained `sample` on `adapter_id` (its adapter file), None if unknown."""
    path = data_dir / "engine" / "test" / (re.sub(r"[^A-Za-z0-9_.-]", "_", adapter_id) + ".json")
    if not path.exists():
        return None
    history = json.loads(path.read_text(encoding="utf-8"))["history"]
    return sum(int(item["count"]) for item in history if item["text"] == sample)


async def run(engine: str, duration: float, clients: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gradient-load-") as tmp:
        data_dir = Path(tmp)
        server = ServerProcess(engine, data_dir)
        try:
            await server.wait_ready()
            idle: list[float] = []
            await probe_health(server.url, time.monotonic() + 3, idle)
            rec = Recorder()
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                async with session.get(
                    server.url + "/api/models",
                    params={"onlyBase": "True", "capability": "any"},
                    headers={"Authorization": f"Bearer {TOKEN}", "x-gradient-workspace-id": WORKSPACE},
                ) as r:
                    base_id = (await r.json())["models"][-1]["id"]
                users = [Client(i, server.url, base_id, rec, seed, hostile=True) for i in range(clients)]
                health: list[float] = []
                started = time.monotonic()
                until = started + duration
                await asyncio.gather(probe_health(server.url, until, health), *(u.run(session, until) for u in users))
                wall = time.monotonic() - started
        finally:
            exit_code = server.stop()
        lost = doubled = 0
        checked = engine == "test"
        unknown = sum(u.fine_tunes_unknown for u in users)
        if checked:
            for u in users:
                count = trained_count(data_dir, u.adapter, u.sample) or 0
                lost += max(0, u.fine_tunes_ok - count)
                doubled += max(0, count - u.fine_tunes_ok - u.fine_tunes_unknown)
    total = sum(len(v) for v in rec.latency.values())
    five_xx = sum(n for counts in rec.statuses.values() for s, n in counts.items() if s.isdigit() and int(s) >= 500)
    routes = {
        route: {
            "requests": len(values),
            "p50_ms": _pct(values, 0.5),
            "p99_ms": _pct(values, 0.99),
            "statuses": dict(sorted(rec.statuses[route].items())),
        }
        for route, values in sorted(rec.latency.items())
    }
    return {
        "engine": engine,
        "clients": clients,
        "duration_s": round(wall, 1),
        "requests": total,
        "requests_per_s": round(total / wall, 1),
        "five_xx": five_xx,
        "fine_tunes_ok": sum(u.fine_tunes_ok for u in users),
        "fine_tunes_lost": lost if checked else None,
        "fine_tunes_doubled": doubled if checked else None,
        "fine_tunes_ambiguous": unknown,
        "health_idle_p50_ms": _pct(idle, 0.5),
        "health_idle_p99_ms": _pct(idle, 0.99),
        "health_load_p50_ms": _pct(health, 0.5),
        "health_load_p99_ms": _pct(health, 0.99),
        "health_load_max_ms": round(max(health) * 1000, 2) if health else None,
        "health_probes": len(health),
        "server_peak_rss_mb": round(server.peak_rss / 2**20, 1),
        "server_exit_code_after_sigterm": exit_code,
        "loadavg_1min_after": os.getloadavg()[0],
        "routes": routes,
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"\n== {result['engine']} engine: {result['clients']} clients, {result['duration_s']} s: "
        f"{result['requests']} requests, {result['requests_per_s']} req/s, 5xx {result['five_xx']}, "
        f"fine-tunes ok {result['fine_tunes_ok']} lost {result['fine_tunes_lost']} "
        f"doubled {result['fine_tunes_doubled']}, peak RSS {result['server_peak_rss_mb']} MB"
    )
    ratio = (
        result["health_load_p99_ms"] / result["health_idle_p99_ms"]
        if result["health_load_p99_ms"] and result["health_idle_p99_ms"]
        else None
    )
    print(
        f"   /health p50/p99: idle {result['health_idle_p50_ms']}/{result['health_idle_p99_ms']} ms, under load "
        f"{result['health_load_p50_ms']}/{result['health_load_p99_ms']} ms (p99 {ratio and round(ratio, 2)}x idle), "
        f"max {result['health_load_max_ms']} ms"
    )
    for route, info in result["routes"].items():
        timing = f"p50 {info['p50_ms']} ms p99 {info['p99_ms']} ms"
        print(f"   {route:28s} n={info['requests']:6d} {timing} {info['statuses']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("test", "local", "both"), default="both")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load, test engine (default 60)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients, test engine (default 32)")
    parser.add_argument("--local-duration", type=float, default=30.0, help="seconds of load, local engine")
    parser.add_argument("--local-clients", type=int, default=4, help="concurrent clients, local engine")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-save", action="store_true", help="print only; keep the saved JSON")
    args = parser.parse_args()
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": os.getloadavg()}
    results: dict[str, Any] = {"machine": machine}
    if args.engine in ("test", "both"):
        results["test"] = asyncio.run(run("test", args.duration, args.clients, args.seed))
        _print(results["test"])
    if args.engine in ("local", "both"):
        results["local"] = asyncio.run(run("local", args.local_duration, args.local_clients, args.seed))
        _print(results["local"])
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nsaved {RESULTS}")


if __name__ == "__main__":
    main()
