"""Client-wide rate control: 500 concurrent single calls through one client against a rate limit.

Scenario (issue 10 §4): 500 `client.completions.create` calls started at once (one task each, one
client, default settings), against `load_server.py` in a child process with a 50 req/s limit
(burst 5) and 100 ms latency; every 429 carries a Retry-After, as float seconds ("float") or rounded
up to whole seconds ("int"). No client is told the limit.

Measured for each client in the same run: items lost, requests per item, wall time over the ideal
((500 - burst) / 50 s + latency), client CPU per item. Peers:

- gradient_async with `rate_control=None` (each call waits out its own 429s: the old behaviour);
- openai-python's `AsyncOpenAI` (its default 2 retries, Retry-After honoured) on the server's
  OpenAI-shaped route, 500 concurrent calls as the issue measured it;
- raw aiohttp + a simple retry loop (up to 5 retries honouring Retry-After, 64 in flight).

Goals for gradient_async (default settings): 0 lost, <= 1.5 requests per item, wall <= 1.15x ideal.

Example::

    python benchmarks/rate_control.py                 # both Retry-After formats, all clients
    python benchmarks/rate_control.py --formats float --clients gradient_async
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_server import LoadServerProcess

RESULTS = Path(__file__).resolve().parent / "results" / "rate_control.json"
MODEL = "11111111-2222-3333-4444-555555555555_model_adapter"
N = 500
RPS = 50.0
BURST = 5
LATENCY_MS = 100
GOALS = {"lost": 0, "requests_per_item": 1.5, "wall_over_ideal": 1.15}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _gradient(url: str, prompts: list[str], **options: Any) -> int:
    from gradient_async import AsyncGradient, GradientError

    async with AsyncGradient(base_url=url + "/api", access_token="t", workspace_id="w", **options) as client:

        async def one(prompt: str) -> bool:
            try:
                await client.completions.create(MODEL, query=prompt, max_generated_token_count=16)
            except GradientError:
                return False
            return True

        done = await asyncio.gather(*(one(p) for p in prompts))
    return sum(done)


async def run_gradient_async(url: str, prompts: list[str]) -> int:
    """Default settings: client-wide rate control on."""
    return await _gradient(url, prompts)


async def run_gradient_async_off(url: str, prompts: list[str]) -> int:
    """`rate_control=None`: each call retries on its own."""
    return await _gradient(url, prompts, rate_control=None)


async def run_openai(url: str, prompts: list[str]) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="t")

    async def one(prompt: str) -> bool:
        try:
            await client.completions.create(model="load", prompt=prompt, max_tokens=16)
        except openai.APIError:
            return False
        return True

    done = await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    return sum(done)


async def run_raw_aiohttp(url: str, prompts: list[str]) -> int:
    """What a careful user writes by hand: 64 in flight, up to 5 retries, Retry-After honoured."""
    import aiohttp

    sem = asyncio.Semaphore(64)
    headers = {"Authorization": "Bearer t", "x-gradient-workspace-id": "w"}
    target = f"{url}/api/models/{MODEL}/complete"

    async def one(session: aiohttp.ClientSession, prompt: str) -> bool:
        for attempt in range(6):
            async with sem, session.post(target, json={"query": prompt, "maxGeneratedTokenCount": 16}) as resp:
                await resp.read()
                if resp.status == 200:
                    return True
                if resp.status not in (429, 503) or attempt == 5:
                    return False
                wait = float(resp.headers.get("Retry-After", 0.5 * 2**attempt))
            await asyncio.sleep(wait)
        return False

    async with aiohttp.ClientSession(headers=headers) as session:
        done = await asyncio.gather(*(one(session, p) for p in prompts))
    return sum(done)


CLIENTS: dict[str, Callable[[str, list[str]], Awaitable[int]]] = {
    "gradient_async": run_gradient_async,
    "gradient_async_rate_control_off": run_gradient_async_off,
    "openai": run_openai,
    "raw_aiohttp": run_raw_aiohttp,
}


def _scenario(fmt: str, clients: list[str]) -> dict[str, dict[str, Any]]:
    prompts = [f"prompt number {i}" for i in range(N)]
    ideal = (N - BURST) / RPS + LATENCY_MS / 1000
    rows: dict[str, dict[str, Any]] = {}
    knobs = {"latency_ms": LATENCY_MS, "rate_limit_rps": RPS, "rate_burst": BURST, "retry_after_format": fmt}
    with LoadServerProcess(**knobs) as srv:
        for name in clients:
            fn = CLIENTS[name]
            asyncio.run(fn(srv.url, prompts[:4]))  # warm up: imports, first connection
            time.sleep(0.5)  # let the server's bucket refill
            srv.reset()
            cpu, start = _cpu(), time.perf_counter()
            ok = asyncio.run(fn(srv.url, prompts))
            wall, cpu = time.perf_counter() - start, _cpu() - cpu
            stats = srv.stats()
            rows[name] = {
                "ok": ok,
                "lost": N - ok,
                "requests": stats["requests"],
                "requests_per_item": round(stats["requests"] / N, 3),
                "wall_s": round(wall, 3),
                "ideal_s": round(ideal, 3),
                "wall_over_ideal": round(wall / ideal, 3),
                "server_statuses": stats["statuses"],
                "server_max_in_flight": stats["max_in_flight"],
                "client_cpu_ms_per_item": round(1000 * cpu / N, 3),
            }
            print(f"  {name:33s} {json.dumps(rows[name])}", flush=True)
    ours = rows.get("gradient_async")
    if ours is not None:
        ours["meets_goals"] = (
            ours["lost"] <= GOALS["lost"]
            and ours["requests_per_item"] <= GOALS["requests_per_item"]
            and ours["wall_over_ideal"] <= GOALS["wall_over_ideal"]
        )
        for name, row in rows.items():
            if name != "gradient_async":
                row["lost_vs_gradient_async"] = f"{row['lost']} vs {ours['lost']}"
                row["requests_per_item_ratio"] = round(row["requests_per_item"] / ours["requests_per_item"], 2)
        print(f"  gradient_async meets the goals {GOALS}: {ours['meets_goals']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="+", choices=["float", "int"], default=["float", "int"])
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    args = parser.parse_args()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "scenario": {"items": N, "rate_limit_rps": RPS, "burst": BURST, "latency_ms": LATENCY_MS, "goals": GOALS},
    }
    for fmt in args.formats:
        print(f"Retry-After {fmt}: {N} concurrent single calls, {RPS:g} req/s limit (burst {BURST})", flush=True)
        out[f"retry_after_{fmt}"] = _scenario(fmt, args.clients)
    RESULTS.parent.mkdir(exist_ok=True)
    merged = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    merged.update(out)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
