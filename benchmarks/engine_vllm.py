"""vLLM engine benchmark: the gateway (`--engine vllm`) vs raw vLLM, and vs the local engine, in one run.

Every engine is driven through the same in-process Gradient gateway (`create_app` + `AsyncGradient`
over ASGI); raw vLLM is the same child, called directly on `/v1/completions` with the same templated
prompts and LoRA names. Measured, per engine:

1. generated tokens/s (all requests together) at 1, 8, 32 and 64 concurrent completions of
   `--max-new-tokens` tokens: base model only, and spread over 8 fine-tuned adapters;
2. fine-tune return -> first completion with the new version (seconds), and the fine-tune call itself.

Ratios printed: gateway / raw vLLM (the gateway's cost; goal >= 0.9 at 32) and vllm / local with
8 adapters (goal >= 1.5). Tokens are counted with the model's tokenizer for every column alike.

Example::

    .venv/bin/python benchmarks/engine_vllm.py                     # writes benchmarks/results/engine_vllm.json
    .venv/bin/python benchmarks/engine_vllm.py --engines vllm --concurrency 1,32 --max-new-tokens 32
    .venv/bin/python benchmarks/engine_vllm.py --engines vllm --concurrency 32 --vllm-arg=--max-lora-rank=16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradient_async import AsyncGradient

RESULTS = Path(__file__).resolve().parent / "results" / "engine_vllm.json"
SEED = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
TEAMS = ["Dallas Cowboys", "Green Bay Packers", "New York Giants", "Chicago Bears",
         "Miami Dolphins", "Denver Broncos", "Seattle Seahawks", "Buffalo Bills"]  # fmt: skip
TOPICS = ["a lighthouse keeper", "a robot learning to paint", "the history of bread", "a trip to Mars",
          "a dragon who loves tea", "the ocean at night", "a detective in Paris", "an old clock"]  # fmt: skip


def prompt(i: int) -> str:
    return f"Write a long story about {TOPICS[i % len(TOPICS)]} (version {i})."


class Gateway:
    """One engine behind the in-process gateway, with 8 fine-tuned adapters."""

    def __init__(self, engine: str, data_dir: Path, vllm_args: tuple[str, ...] = ()) -> None:
        from gradient_async.server import ServerSettings, create_app

        self.name = engine
        settings = ServerSettings(
            data_dir=data_dir,
            credentials={"b": {"w"}},
            engine=engine,
            vllm_args=vllm_args if engine == "vllm" else (),
        )
        self.app = create_app(settings)
        self.state = self.app.state.gradient
        self.client = AsyncGradient(
            access_token="b",
            workspace_id="w",
            base_url="http://gateway/api",
            transport=httpx.ASGITransport(app=self.app),
            timeout=3600,
            max_retries=0,
        )
        self.base: Any = None
        self.adapters: list[Any] = []

    async def setup(self, n_adapters: int) -> dict[str, float]:
        start = time.perf_counter()
        await self.state.engine.warm_up()
        out = {"warm_up_s": round(time.perf_counter() - start, 1)}
        self.base = (await self.client.models.list(only_base=True))[0]
        ft, first = [], []
        for i in range(n_adapters):
            adapter = await self.base.create_adapter(name=f"bench-{i}")
            t0 = time.perf_counter()
            await adapter.fine_tune(samples=[{"inputs": f"{SEED} {TEAMS[i % len(TEAMS)]}!"}])
            t1 = time.perf_counter()
            await adapter.complete(query=SEED, max_generated_token_count=8)
            first.append(time.perf_counter() - t1)
            ft.append(t1 - t0)
            self.adapters.append(adapter)
        out["fine_tune_s_median"] = round(sorted(ft)[len(ft) // 2], 2)
        out["fine_tune_return_to_first_completion_s_median"] = round(sorted(first)[len(first) // 2], 3)
        return out

    async def run(self, n: int, mixed: bool, max_new_tokens: int) -> list[str]:
        texts = [""] * n

        async def one(i: int) -> None:
            model = self.adapters[i % len(self.adapters)] if mixed else self.base
            texts[i] = (
                await model.complete(query=prompt(i), max_generated_token_count=max_new_tokens)
            ).generated_output

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return texts

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.state.aclose()


class RawVllm:
    """The same vLLM child, called directly with the gateway's templated prompts and LoRA names."""

    def __init__(self, gateway: Gateway) -> None:
        self.engine = gateway.state.engine
        self.gateway = gateway
        self.http = httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=256))

    async def run(self, n: int, mixed: bool, max_new_tokens: int) -> list[str]:
        from gradient_async.engine import GenerationRequest

        names = [await self.engine._lora_name(a.id) for a in self.gateway.adapters]  # loaded already
        texts = [""] * n

        async def one(i: int) -> None:
            text, _ = self.engine._prompt(GenerationRequest(self.engine.model.slug, prompt(i)))
            body = {"model": names[i % len(names)] if mixed else self.engine.served_name, "prompt": text,
                    "max_tokens": max_new_tokens, "temperature": 0.0, "add_special_tokens": False}  # fmt: skip
            r = await self.http.post(f"{self.engine._base_url}/v1/completions", json=body)
            texts[i] = r.json()["choices"][0]["text"]

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return texts


async def measure(runner: Any, tokenizer: Any, levels: list[int], mixed: bool, max_new: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in levels:
        start = time.perf_counter()
        texts = await runner.run(n, mixed, max_new)
        wall = time.perf_counter() - start
        tokens = sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
        out[str(n)] = {"tokens": tokens, "seconds": round(wall, 2), "tokens_per_s": round(tokens / wall, 1)}
        print(f"    {n:>3} concurrent {'mixed' if mixed else 'base '}: {tokens / wall:7.1f} tok/s", flush=True)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    levels = [int(x) for x in args.concurrency.split(",")]
    root = Path(tempfile.mkdtemp(prefix="engine-vllm-bench-"))
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cores": len(os.sched_getaffinity(0)),
            "load_avg_at_start": list(os.getloadavg()),
        },
        "max_new_tokens": args.max_new_tokens,
        "adapters": args.adapters,
        "vllm_args": list(args.vllm_arg),
        "engines": {},
    }
    tokenizer = None
    for engine in args.engines.split(","):
        gateway = Gateway(engine, root / engine, tuple(args.vllm_arg))
        try:
            print(f"{engine}: warming up and fine-tuning {args.adapters} adapters", flush=True)
            entry: dict[str, Any] = {"setup": await gateway.setup(args.adapters)}
            rank = getattr(getattr(gateway.state.engine, "inner", gateway.state.engine), "max_lora_rank", None)
            if rank is not None:
                entry["max_lora_rank"] = rank  # vLLM computes every adapter at this rank
            print(f"  {entry['setup']}", flush=True)
            if tokenizer is None:
                base_dir = root / engine / "engine" / ("trainer" if engine == "vllm" else "") / "base"
                tokenizer = AutoTokenizer.from_pretrained(str(next(base_dir.iterdir())), local_files_only=True)
            for mixed in (False, True):
                key = "adapters_mixed" if mixed else "base"
                entry[f"gateway_{key}"] = await measure(gateway, tokenizer, levels, mixed, args.max_new_tokens)
                if engine == "vllm":
                    print("  raw vLLM:", flush=True)
                    raw = RawVllm(gateway)
                    entry[f"raw_{key}"] = await measure(raw, tokenizer, levels, mixed, args.max_new_tokens)
                    await raw.http.aclose()
            result["engines"][engine] = entry
        finally:
            await gateway.aclose()
    ratios: dict[str, Any] = {}
    vllm = result["engines"].get("vllm")
    if vllm:
        for key in ("base", "adapters_mixed"):
            ratios[f"gateway_over_raw_{key}"] = {
                n: round(vllm[f"gateway_{key}"][n]["tokens_per_s"] / vllm[f"raw_{key}"][n]["tokens_per_s"], 2)
                for n in vllm[f"gateway_{key}"]
            }
    local = result["engines"].get("local")
    if vllm and local:
        ratios["vllm_over_local_adapters_mixed"] = {
            n: round(v["tokens_per_s"] / local["gateway_adapters_mixed"][n]["tokens_per_s"], 2)
            for n, v in vllm["gateway_adapters_mixed"].items()
        }
    result["ratios"] = ratios
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())  # other processes skew the numbers
    print("ratios:", json.dumps(ratios), flush=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="vllm,local", help="comma-separated registry names (default vllm,local)")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        help="one more argument for the vLLM child, e.g. --vllm-arg=--max-lora-rank=16",
    )
    parsed = parser.parse_args()
    outcome = anyio.run(main, parsed)
    parsed.out.parent.mkdir(parents=True, exist_ok=True)
    parsed.out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"saved {parsed.out}")
