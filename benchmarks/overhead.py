"""Client overhead: CPU per request and throughput, gradient_async vs raw clients, in one run.

3,000 completions at 32 in flight against the fast load server (in a child process, so its CPU
is not charged to the client). Each client runs `--rounds` times, interleaved, and the median is
kept. Prints a table with ratios to raw aiohttp, the batch engine's CPU per item against a single
call's (the same completions sent as one `completions.batch`), the tracing cost (the default client,
OpenTelemetry API installed but no provider set, and the client with an SDK provider exporting to nowhere,
both against `tracing=False`; plus the per-call check timed alone), and saves JSON to
benchmarks/results/overhead.json.

Run::

    .venv/bin/python benchmarks/overhead.py            # or: make bench
    .venv/bin/python benchmarks/overhead.py --requests 1000 --rounds 1 --no-peers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_server import BASE_MODEL_ID, LoadServerProcess

from gradient_async import AsyncGradient

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"
QUERY = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
BODY = {"query": QUERY, "maxGeneratedTokenCount": 16}
HEADERS = {"Authorization": "Bearer bench-token", "x-gradient-workspace-id": "bench-ws"}

Runner = Callable[[str, int, int], Awaitable[None]]


def _cpu() -> float:
    return time.process_time()


async def _fan_out(n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def guarded() -> None:
        async with sem:
            await one()

    await asyncio.gather(*(guarded() for _ in range(n)))


async def run_aiohttp(api_url: str, n: int, concurrency: int) -> None:
    url = f"{api_url}/models/{BASE_MODEL_ID}/complete"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one() -> None:
            async with session.post(url, json=BODY, headers=HEADERS) as resp:
                resp.raise_for_status()
                await resp.json()

        await _fan_out(n, concurrency, one)


async def run_httpx(api_url: str, n: int, concurrency: int) -> None:
    url = f"{api_url}/models/{BASE_MODEL_ID}/complete"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, headers=HEADERS) as client:

        async def one() -> None:
            resp = await client.post(url, json=BODY)
            resp.raise_for_status()
            resp.json()

        await _fan_out(n, concurrency, one)


async def run_gradient_async(api_url: str, n: int, concurrency: int, *, tracing: bool = True) -> None:
    async with AsyncGradient(
        access_token="bench-token",
        workspace_id="bench-ws",
        base_url=api_url,
        max_concurrency=concurrency,
        tracing=tracing,
    ) as client:

        async def one() -> None:
            await client.completions.create(BASE_MODEL_ID, query=QUERY, max_generated_token_count=16)

        await _fan_out(n, concurrency, one)


async def run_gradient_async_batch(api_url: str, n: int, concurrency: int) -> None:
    """The same n completions as one batch (`client.completions.batch`): CPU per item vs a single call."""
    async with AsyncGradient(
        access_token="bench-token", workspace_id="bench-ws", base_url=api_url, max_concurrency=concurrency
    ) as client:
        result = await client.completions.batch(BASE_MODEL_ID, [QUERY] * n, max_generated_token_count=16)
        if result.failed:
            raise RuntimeError(f"{result.failed} batch items failed")


async def run_gradient_async_untraced(api_url: str, n: int, concurrency: int) -> None:
    """`tracing=False`: the client never looks for OpenTelemetry (the baseline of the tracing cost)."""
    await run_gradient_async(api_url, n, concurrency, tracing=False)


async def run_gradient_async_sdk(api_url: str, n: int, concurrency: int) -> None:
    """With the OpenTelemetry SDK as the global tracer and meter provider, exporting to nowhere."""
    with _sdk_providers():
        await run_gradient_async(api_url, n, concurrency)


@contextlib.contextmanager
def _sdk_providers() -> Iterator[None]:
    """Install SDK providers (BatchSpanProcessor + an exporter that drops spans; a metric reader that is
    never collected) as the globals for the block, then restore the unset state. The API allows one
    global provider per process, so this resets its private globals the way its own tests do."""
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.util._once import Once

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def reset() -> None:
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()
        metrics_internal._METER_PROVIDER = None

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    reset()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield
    finally:
        reset()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def instrumentation_start_ns(rounds: int = 200_000) -> float:
    """Nanoseconds one unobserved call spends deciding there is nothing to observe (no provider, no hooks)."""
    from gradient_async import RequestOptions
    from gradient_async._hooks import Instrumentation

    inst = Instrumentation()
    options = RequestOptions("POST", f"/models/{BASE_MODEL_ID}/complete")
    assert inst.start(options) is None, "a provider or hooks are set: this measures the unobserved path"
    cpu = time.process_time_ns()
    for _ in range(rounds):
        inst.start(options)
    return (time.process_time_ns() - cpu) / rounds


async def run_official_sdk(api_url: str, n: int, concurrency: int) -> None:
    """The official `gradientai` SDK: synchronous, so run in `concurrency` threads."""
    from gradientai import Gradient

    gradient = Gradient(access_token="bench-token", workspace_id="bench-ws", host=api_url)
    model = next(m for m in gradient.list_models(only_base=True) if m.id == BASE_MODEL_ID)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:

        def one_sync() -> None:
            model.complete(query=QUERY, max_generated_token_count=16)

        await asyncio.gather(*(loop.run_in_executor(pool, one_sync) for _ in range(n)))
    gradient.close()


async def run_openai(api_url: str, n: int, concurrency: int) -> None:
    """openai-python's AsyncOpenAI against the server's OpenAI-style /v1/completions route."""
    from openai import AsyncOpenAI

    base = api_url.removesuffix("/api") + "/v1"
    async with AsyncOpenAI(api_key="bench-token", base_url=base, max_retries=2) as client:

        async def one() -> None:
            await client.completions.create(model=BASE_MODEL_ID, prompt=QUERY, max_tokens=16)

        await _fan_out(n, concurrency, one)


async def measure(runner: Runner, api_url: str, n: int, concurrency: int) -> dict[str, float]:
    await runner(api_url, min(200, n), concurrency)  # warm up imports, pools, caches
    cpu0, wall0 = _cpu(), time.perf_counter()
    await runner(api_url, n, concurrency)
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    return {"cpu_us_per_request": cpu / n * 1e6, "requests_per_s": n / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="skip the official SDK and openai-python")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    runners: dict[str, Runner] = {
        "raw aiohttp": run_aiohttp,
        "raw httpx": run_httpx,
        "gradient_async": run_gradient_async,
        "gradient_async batch": run_gradient_async_batch,
        "gradient_async tracing=False": run_gradient_async_untraced,
        "gradient_async + OTel SDK": run_gradient_async_sdk,
    }
    if not args.no_peers:
        runners["official gradientai (threads)"] = run_official_sdk
        runners["openai-python AsyncOpenAI"] = run_openai

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    with LoadServerProcess(latency_ms=0) as server:
        for _ in range(args.rounds):
            for name, runner in runners.items():
                try:
                    samples[name].append(asyncio.run(measure(runner, server.api_url, args.requests, args.concurrency)))
                except ImportError as exc:
                    print(f"skipping {name}: {exc}", file=sys.stderr)
        server_stats = server.stats()

    results: dict[str, dict[str, float]] = {}
    for name, runs in samples.items():
        if runs:
            results[name] = {
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
                "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
            }
    base_cpu = results["raw aiohttp"]["cpu_us_per_request"]
    base_rps = results["raw aiohttp"]["requests_per_s"]
    print(f"{args.requests} completions at {args.concurrency} in flight, median of {args.rounds} rounds")
    print(f"{'client':32} {'CPU us/req':>11} {'x aiohttp':>10} {'req/s':>9} {'x aiohttp':>10}")
    for name, r in results.items():
        r["cpu_ratio_vs_aiohttp"] = r["cpu_us_per_request"] / base_cpu
        r["throughput_ratio_vs_aiohttp"] = r["requests_per_s"] / base_rps
        print(
            f"{name:32} {r['cpu_us_per_request']:11.0f} {r['cpu_ratio_vs_aiohttp']:10.2f} "
            f"{r['requests_per_s']:9.0f} {r['throughput_ratio_vs_aiohttp']:10.2f}"
        )
    target = results["gradient_async"]["cpu_ratio_vs_aiohttp"]
    print(f"gradient_async CPU/request = {target:.2f}x raw aiohttp (goal <= 2x)")
    batch_ratio = (
        results["gradient_async batch"]["cpu_us_per_request"] / results["gradient_async"]["cpu_us_per_request"]
    )
    results["gradient_async batch"]["cpu_ratio_vs_single_call"] = batch_ratio
    print(f"gradient_async batch CPU/item = {batch_ratio:.2f}x a single call's (goal <= 1.15x)")
    untraced = results["gradient_async tracing=False"]["cpu_us_per_request"]
    tracing = {
        "no_provider_vs_tracing_false": results["gradient_async"]["cpu_us_per_request"] / untraced - 1.0,
        "sdk_provider_vs_tracing_false": results["gradient_async + OTel SDK"]["cpu_us_per_request"] / untraced - 1.0,
        "unobserved_check_ns": instrumentation_start_ns(),
    }
    tracing["unobserved_check_share"] = tracing["unobserved_check_ns"] / 1000.0 / untraced
    print(
        f"tracing cost per request: no provider {tracing['no_provider_vs_tracing_false']:+.1%} "
        f"(the check alone: {tracing['unobserved_check_ns']:.0f} ns = {tracing['unobserved_check_share']:.2%}; "
        f"goal < 3%), SDK provider + no-op exporter {tracing['sdk_provider_vs_tracing_false']:+.1%}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "overhead",
                "requests": args.requests,
                "concurrency": args.concurrency,
                "rounds": args.rounds,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
                "tracing_cost": tracing,
                "server_requests": server_stats.get("requests"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
