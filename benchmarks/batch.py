"""Batch benchmarks: gradient_async's batch vs raw aiohttp + semaphore, the official `gradientai` SDK in
threads, and openai-python's AsyncOpenAI, against `load_server.py` running in a child process.

Scenarios (ratios come from one run, every client against the same server settings):

1. latency 100 ms, 64 in flight, 1,280 prompts: achieved/ideal throughput (target >= 0.95).
2. rate limit 50 req/s (burst 5), latency 100 ms, 500 prompts, 64 in flight: failures left (0),
   wall/ideal (<= 1.05), requests/N (<= 1.3). No client is told the limit.
3. 10 % 503s (every 10th request), latency 20 ms, 1,000 prompts: failures left (0), requests/N (<= 1.12).
4. 10^6 prompts streamed at latency 0 (gradient_async only, in a fresh child process): peak RSS and
   client CPU per prompt. `--quick` runs 10^5.

Example::

    python benchmarks/batch.py --quick            # writes benchmarks/results/batch_quick.json
    python benchmarks/batch.py                    # full run, benchmarks/results/batch.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_server import LoadServerProcess

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "11111111-2222-3333-4444-555555555555_model_adapter"
CONCURRENCY = 64


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the clients: each takes (server url, prompts) and returns (ok, failed) ---------------------------


async def run_gradient_async(url: str, prompts: list[str]) -> tuple[int, int]:
    from gradient_async import AsyncGradient

    async with AsyncGradient(
        base_url=url + "/api", access_token="t", workspace_id="w", max_concurrency=CONCURRENCY
    ) as client:
        result = await client.completions.batch(MODEL, prompts, max_generated_token_count=16)
    return result.ok, result.failed


async def run_raw_aiohttp(url: str, prompts: list[str]) -> tuple[int, int]:
    """What a careful user writes by hand: a semaphore, up to 5 retries, Retry-After honoured."""
    import aiohttp

    sem = asyncio.Semaphore(CONCURRENCY)
    headers = {"Authorization": "Bearer t", "x-gradient-workspace-id": "w"}
    target = f"{url}/api/models/{MODEL}/complete"

    async def one(session: aiohttp.ClientSession, prompt: str) -> bool:
        async with sem:
            for attempt in range(6):
                async with session.post(target, json={"query": prompt, "maxGeneratedTokenCount": 16}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return True
                    if resp.status not in (429, 503) or attempt == 5:
                        return False
                    wait = float(resp.headers.get("Retry-After", 0.5 * 2**attempt))
                await asyncio.sleep(wait)
        return False

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        done = await asyncio.gather(*(one(session, p) for p in prompts))
    ok = sum(done)
    return ok, len(prompts) - ok


async def run_gradientai_threads(url: str, prompts: list[str]) -> tuple[int, int]:
    """The official SDK, `model.complete` in a 64-thread pool (it has no retry on status codes)."""
    from gradientai import Gradient

    gradient = Gradient(host=url + "/api", access_token="t", workspace_id="w")
    gradient._api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = CONCURRENCY
    for attempt in range(5):  # the setup call has no retry of its own either; a 503 here is not the point
        try:
            model = gradient.get_model_adapter(model_adapter_id=MODEL)
            break
        except Exception:
            if attempt == 4:
                raise

    def one(prompt: str) -> bool:
        try:
            model.complete(query=prompt, max_generated_token_count=16)
        except Exception:
            return False
        return True

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        done = await asyncio.gather(*(loop.run_in_executor(pool, one, p) for p in prompts))
    gradient.close()
    ok = sum(done)
    return ok, len(prompts) - ok


async def run_openai(url: str, prompts: list[str]) -> tuple[int, int]:
    """openai-python's AsyncOpenAI (its default 2 retries, Retry-After honoured) with a semaphore."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="t")
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(prompt: str) -> bool:
        async with sem:
            try:
                await client.completions.create(model="load", prompt=prompt, max_tokens=16)
            except openai.APIError:
                return False
            return True

    done = await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    ok = sum(done)
    return ok, len(prompts) - ok


CLIENTS: dict[str, Callable[[str, list[str]], Awaitable[tuple[int, int]]]] = {
    "gradient_async": run_gradient_async,
    "raw_aiohttp": run_raw_aiohttp,
    "gradientai_threads": run_gradientai_threads,
    "openai": run_openai,
}


def _run_all(knobs: dict[str, Any], n: int, ideal: float) -> dict[str, dict[str, Any]]:
    prompts = [f"prompt number {i}" for i in range(n)]
    rows: dict[str, dict[str, Any]] = {}
    with LoadServerProcess(**knobs) as srv:
        for name, fn in CLIENTS.items():
            asyncio.run(fn(srv.url, prompts[:CONCURRENCY]))  # warm up: imports, first connections
            srv.reset()
            cpu, start = _cpu(), time.perf_counter()
            ok, failed = asyncio.run(fn(srv.url, prompts))
            wall, cpu = time.perf_counter() - start, _cpu() - cpu
            stats = srv.stats()
            rows[name] = {
                "ok": ok,
                "failed": failed,
                "wall_s": round(wall, 3),
                "ideal_s": round(ideal, 3),
                "throughput_ratio": round(ideal / wall, 3),
                "wall_over_ideal": round(wall / ideal, 3),
                "requests_over_n": round(stats["requests"] / n, 3),
                "server_statuses": stats["statuses"],
                "server_max_in_flight": stats["max_in_flight"],
                "client_cpu_ms_per_prompt": round(1000 * cpu / n, 3),
            }
            print(f"  {name:20s} {json.dumps(rows[name])}", flush=True)
    return rows


def _stream_child(n: int) -> None:
    """Scenario 4 body, run in a fresh process so its peak RSS is its own."""
    from gradient_async import AsyncGradient

    async def main(url: str) -> dict[str, Any]:
        def prompts() -> Any:
            for i in range(n):
                yield f"prompt number {i}"

        async with AsyncGradient(
            base_url=url + "/api", access_token="t", workspace_id="w", max_concurrency=CONCURRENCY
        ) as client:
            cpu, start = _cpu(), time.perf_counter()
            ok = failed = 0
            async with client.completions.stream_batch(MODEL, prompts()) as stream:
                async for item in stream:
                    if item.ok:
                        ok += 1
                    else:
                        failed += 1
            wall, cpu = time.perf_counter() - start, _cpu() - cpu
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "n": n,
            "ok": ok,
            "failed": failed,
            "wall_s": round(wall, 2),
            "prompts_per_s": round(n / wall),
            "client_cpu_us_per_prompt": round(1e6 * cpu / n, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
        }

    with LoadServerProcess(latency_ms=0) as srv:
        print(json.dumps(asyncio.run(main(srv.url))), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scenario 4 with 10^5 prompts")
    parser.add_argument("--only", type=int, choices=[1, 2, 3, 4], action="append", help="run only these scenarios")
    parser.add_argument("--stream-n", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stream-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child:
        _stream_child(args.stream_n)
        return
    only = set(args.only or [1, 2, 3, 4])
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "concurrency": CONCURRENCY,
    }
    if 1 in only:
        print("scenario 1: latency 100 ms, 1280 prompts", flush=True)
        out["1_latency"] = _run_all({"latency_ms": 100}, 1280, 1280 / CONCURRENCY * 0.1)
    if 2 in only:
        print("scenario 2: 50 req/s limit (burst 5), latency 100 ms, 500 prompts", flush=True)
        out["2_rate_limit"] = _run_all({"latency_ms": 100, "rate_limit_rps": 50, "rate_burst": 5}, 500, 495 / 50 + 0.1)
    if 3 in only:
        print("scenario 3: 10% 503s, latency 20 ms, 1000 prompts", flush=True)
        ideal = 1000 / 0.9 / CONCURRENCY * 0.02
        out["3_errors"] = _run_all({"latency_ms": 20, "fail_rate": 0.1, "seed": -1}, 1000, ideal)
    if 4 in only:
        n = 100_000 if args.quick else 1_000_000
        print(f"scenario 4: {n} prompts streamed, latency 0", flush=True)
        cmd = [sys.executable, __file__, "--stream-child", "--stream-n", str(n)]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out["4_stream"] = json.loads(child.stdout.strip().splitlines()[-1])
        print("  " + json.dumps(out["4_stream"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("batch_quick.json" if args.quick else "batch.json")
    merged = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    merged.update(out)  # `--only` reruns replace just their scenarios
    path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    name = path.name
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
