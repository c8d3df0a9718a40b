"""Local engine benchmark: SmolLM2-135M-Instruct on this machine's CPU.

1. Generation throughput (generated tokens/s, all requests together) for 8, 32 and 64 concurrent
   requests through `DynamicBatcher`: batching off (max_batch_size=1, one request at a time) vs on
   (the server's settings, max_batch_size=32, max_wait_s=5 ms). Target: >= 5x at 64 requests.
2. Fine-tune: seconds per optimizer step on the seed sample (one sample, 28 tokens) and on 8 samples.
3. Resident memory (RSS) with the base model only, 1 adapter and 20 adapters loaded (measured first,
   each adapter fine-tuned one step on a short sample so that it is loaded).

Example::

    python benchmarks/engine.py                 # writes benchmarks/results/engine.json
    python benchmarks/engine.py --quick         # 32 new tokens -> 16, fewer requests for "off"
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradient_async.engine import (
    AdapterSpec,
    DynamicBatcher,
    GenerationRequest,
    TrainingSample,
    TrainingSegment,
)

RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"
SEED_PROMPT = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
TOPICS = [
    "a lighthouse keeper", "a robot learning to paint", "the history of bread", "a trip to Mars",
    "a dragon who loves tea", "the ocean at night", "a detective in Paris", "an old clock",
]  # fmt: skip


def rss_mib() -> float:
    """Current resident memory; freed heap is first returned to the OS (glibc) so deltas mean something."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:  # peak, not current, without psutil
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def requests_for(slug: str, n: int, max_new_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            slug, f"Write a long story about {TOPICS[i % len(TOPICS)]} (version {i}).", max_new_tokens=max_new_tokens
        )
        for i in range(n)
    ]


async def throughput(engine: Any, requests: list[GenerationRequest], batching: bool) -> dict[str, float]:
    batcher = (
        DynamicBatcher(engine, max_batch_size=32, max_wait_s=0.005)
        if batching
        else DynamicBatcher(engine, max_batch_size=1, max_wait_s=0.0)
    )
    texts: list[str] = [""] * len(requests)

    async def one(i: int) -> None:
        texts[i] = (await batcher.generate(requests[i])).text

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    wall = time.perf_counter() - start
    tokens = sum(await engine.count_tokens(texts))
    return {
        "requests": len(requests),
        "tokens": tokens,
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "largest_batch": batcher.largest_batch,
    }


async def fine_tune_timing(engine: Any, slug: str, calls: int) -> dict[str, float]:
    one = [TrainingSample((TrainingSegment(SEED_PROMPT + " Dallas Cowboys!"),))]
    eight = [
        TrainingSample((TrainingSegment(f"Write a short story about {t}.", trainable=False), TrainingSegment(
            f" Once upon a time there was {t}, and every day brought something new to learn."
        )))
        for t in TOPICS
    ]  # fmt: skip
    out: dict[str, float] = {"steps_per_call": engine.steps_per_call}
    for label, samples in (("1_sample", one), ("8_samples", eight)):
        spec = AdapterSpec(f"bench-ft-{label}", slug)
        await engine.create_adapter(spec)
        await engine.fine_tune(spec, samples)  # first call creates the adapter: not timed
        start = time.perf_counter()
        for _ in range(calls):
            await engine.fine_tune(spec, samples)
        per_call = (time.perf_counter() - start) / calls
        out[f"s_per_call_{label}"] = round(per_call, 3)
        out[f"s_per_step_{label}"] = round(per_call / engine.steps_per_call, 3)
        await engine.delete_adapter(spec.adapter_id)
    return out


async def memory(engine: Any, slug: str) -> dict[str, float]:
    sample = [TrainingSample((TrainingSegment("Hello there, general Kenobi!"),))]
    steps = engine.steps_per_call
    engine.steps_per_call = 1  # only the loaded adapters matter here
    try:
        out = {"rss_mib_base_model": round(rss_mib(), 1)}
        for n in range(1, 21):
            spec = AdapterSpec(f"bench-mem-{n}", slug)
            await engine.create_adapter(spec)
            await engine.fine_tune(spec, sample)
            if n == 1:
                out["rss_mib_1_adapter"] = round(rss_mib(), 1)
        assert len(engine.loaded_adapters) >= 20
        out["rss_mib_20_adapters"] = round(rss_mib(), 1)
        files = (Path(engine.data_dir) / "adapters").glob("*/lora/adapter_model.safetensors")
        out["adapter_weights_mib"] = round(max(f.stat().st_size for f in files) / 2**20, 2)
        out["mib_per_adapter"] = round((out["rss_mib_20_adapters"] - out["rss_mib_1_adapter"]) / 19, 2)
        for n in range(1, 21):
            await engine.delete_adapter(f"bench-mem-{n}")
    finally:
        engine.steps_per_call = steps
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from gradient_async.engine.local import LocalEngine

    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="engine-bench-"))
    engine = LocalEngine(data_dir)
    slug = engine.base_models[0].slug
    start = time.perf_counter()
    await engine.warm_up()
    load_s = time.perf_counter() - start
    await engine.generate(requests_for(slug, 1, 4))  # touch every weight (safetensors are mmapped)
    memory_result = await memory(engine, slug)  # first: before batched generation/training grow the heap
    print("memory:", json.dumps(memory_result), flush=True)
    await engine.generate(requests_for(slug, 2, 4))  # warm the kernels
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cores": len(os.sched_getaffinity(0)),
            "torch_threads": engine.threads,
            "load_avg_at_start": list(os.getloadavg()),
        },
        "model_load_s": round(load_s, 2),
        "max_new_tokens": args.max_new_tokens,
        "generation": {},
    }
    print(f"model loaded in {load_s:.1f} s (data dir {data_dir})", flush=True)
    print(f"{'concurrent':>10} {'off tok/s':>10} {'on tok/s':>10} {'ratio':>7} {'largest batch':>14}", flush=True)
    for n in (8, 32, 64):
        reqs = requests_for(slug, n, args.max_new_tokens)
        off = await throughput(engine, reqs, batching=False)
        on = await throughput(engine, reqs, batching=True)
        ratio = on["tokens_per_s"] / off["tokens_per_s"]
        result["generation"][str(n)] = {"off": off, "on": on, "ratio": round(ratio, 2)}
        print(
            f"{n:>10} {off['tokens_per_s']:>10.1f} {on['tokens_per_s']:>10.1f} {ratio:>6.2f}x "
            f"{on['largest_batch']:>14}",
            flush=True,
        )
    result["fine_tune"] = await fine_tune_timing(engine, slug, calls=args.fine_tune_calls)
    print("fine-tune:", json.dumps(result["fine_tune"]), flush=True)
    result["memory"] = memory_result
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())  # other processes skew the numbers
    await engine.aclose()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="engine data dir (reuses its converted model); default: a temp dir")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--fine-tune-calls", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="16 new tokens, 1 timed fine-tune call")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.max_new_tokens, parsed.fine_tune_calls = 16, 1
    outcome = anyio.run(main, parsed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"saved {RESULTS}")
