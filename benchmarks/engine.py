"""Engine benchmark: many LoRA adapters in one batch, on this machine's CPU (local engine).

For 1, 8, 32 and 64 concurrent completions through `DynamicBatcher` (the server's settings:
batches of up to 32), generated tokens/s of all requests together:

* `base`: every request on the base model;
* `mixed`: requests spread over 8 fine-tuned adapters (request i on adapter i % 8), the local
  engine's batched LoRA (all adapters' deltas in one pass per layer);
* `peft_mixed` (the peer, same run, same weights): the same mixed batches through peft's
  `adapter_names=` path, which splits every LoRA layer's batch per adapter (the engine before this
  change). `--no-peer` skips it.

Each kind is measured `--rounds` times, interleaved (base, mixed, peer, base, ...), and the best
round is kept: on a shared machine other processes only ever slow a round down. Tokens per
CPU-second of this process (`*_cpu` ratios) are reported too: other processes on a busy machine
change wall time far more than the CPU time the work itself takes.
Goal (issue 12): mixed >= 60 % of base at 32 concurrent. Also checked: every mixed answer equals
the answer of its adapter's requests run alone (greedy tokens), and the time from a fine-tune's
return to the first completion served by the new version.

Example::

    python benchmarks/engine.py                 # writes benchmarks/results/engine.json
    python benchmarks/engine.py --quick         # 16 new tokens, 1 / 8 / 32 concurrent
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradient_async.engine import (
    AdapterSpec,
    DynamicBatcher,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
    TrainingSegment,
)

RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"
ADAPTERS = 8
TOPICS = [
    "a lighthouse keeper", "a robot learning to paint", "the history of bread", "a trip to Mars",
    "a dragon who loves tea", "the ocean at night", "a detective in Paris", "an old clock",
]  # fmt: skip


def requests_for(slug: str, n: int, max_new_tokens: int, adapters: list[str] | None) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            slug,
            f"Write a long story about {TOPICS[i % len(TOPICS)]} (version {i}).",
            adapter_id=None if adapters is None else adapters[i % len(adapters)],
            max_new_tokens=max_new_tokens,
        )
        for i in range(n)
    ]


Generate = Callable[[list[GenerationRequest]], Awaitable[list[GenerationResult]]]


async def throughput(generate: Generate, count: Callable[[str], int], requests: list[GenerationRequest]) -> Any:
    """All requests concurrently through one DynamicBatcher in front of `generate`."""

    class _Engine:
        async def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
            return await generate(batch)

    batcher = DynamicBatcher(_Engine(), max_batch_size=32, max_wait_s=0.002)  # type: ignore[arg-type]
    results: list[GenerationResult | None] = [None] * len(requests)

    async def one(i: int) -> None:
        results[i] = await batcher.generate(requests[i])

    start, cpu_start = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    texts = [r.text if r is not None else "" for r in results]
    tokens = sum(count(t) for t in texts)
    stats = {"requests": len(requests), "tokens": tokens, "seconds": round(wall, 3), "cpu_s": round(cpu, 3)}
    stats["tokens_per_s"] = round(tokens / wall, 1)
    stats["tokens_per_cpu_s"] = round(tokens / cpu, 1)  # robust to other processes on a shared machine
    return stats, texts


class PeftPeer:
    """The same adapters in a peft model on a second copy of the base model; batches use
    peft's mixed `adapter_names=` path (what the local engine did before batched LoRA)."""

    def __init__(self, engine: Any, adapters: list[str]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from gradient_async.engine._local_model import library_warnings_quiet

        folder = engine.data_dir / "base" / engine.base_models[0].slug
        if engine.model_path is not None:
            folder = engine.model_path
        self.engine = engine
        with library_warnings_quiet():
            base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
            self.model = PeftModel.from_pretrained(base, str(engine.adapter_path(adapters[0])), adapter_name="p0")
            for n, a in enumerate(adapters[1:], 1):
                self.model.load_adapter(str(engine.adapter_path(a)), adapter_name=f"p{n}")
        self.names = {a: f"p{n}" for n, a in enumerate(adapters)}

    async def generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        return await anyio.to_thread.run_sync(self._generate, batch)

    def _generate(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        import torch
        from transformers import GenerationConfig

        from gradient_async.engine._local_generate import pad_batch
        from gradient_async.engine._local_model import library_warnings_quiet

        engine = self.engine
        tok = engine._model.tokenizer
        prompts = [engine._prompt_ids(r) for r in batch]
        ids, mask = pad_batch(prompts, int(tok.pad_token_id), left=True)
        cap = max(r.max_new_tokens or 64 for r in batch)
        config = GenerationConfig(
            max_new_tokens=cap, pad_token_id=int(tok.pad_token_id), eos_token_id=engine._eos_ids, do_sample=False
        )
        names = [self.names[r.adapter_id] if r.adapter_id else "__base__" for r in batch]
        torch.set_num_threads(engine.threads)
        with torch.inference_mode(), library_warnings_quiet():
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, adapter_names=names)
        results = []
        for row in out[:, ids.shape[1] :].tolist():
            stop = next((i for i, t in enumerate(row) if t in engine._eos_ids), len(row))
            results.append(GenerationResult(tok.decode(row[:stop], skip_special_tokens=True), "length"))
        return results


async def fine_tune_adapters(engine: Any, slug: str) -> list[str]:
    ids = []
    for n in range(ADAPTERS):
        spec = AdapterSpec(f"bench-adapter-{n}", slug)
        await engine.create_adapter(spec)
        story = f" Once upon a time there was {TOPICS[n]}, and every day brought something new to learn."
        sample = TrainingSample((TrainingSegment(f"Write a long story about {TOPICS[n]}.", trainable=False),
                                 TrainingSegment(story)))  # fmt: skip
        await engine.fine_tune(spec, [sample])
        ids.append(spec.adapter_id)
    return ids


async def fine_tune_to_first_completion(engine: Any, slug: str, adapter_id: str) -> dict[str, float]:
    """Seconds from a fine-tune's return to the first completion answered by the new version."""
    spec = AdapterSpec(adapter_id, slug)
    sample = TrainingSample((TrainingSegment("Hello there, general Kenobi!"),))
    start = time.perf_counter()
    await engine.fine_tune(spec, [sample])
    returned = time.perf_counter()
    await engine.generate([GenerationRequest(slug, "Hello there,", adapter_id=adapter_id, max_new_tokens=1)])
    done = time.perf_counter()
    return {"fine_tune_s": round(returned - start, 3), "return_to_first_completion_s": round(done - returned, 3)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from gradient_async.engine.local import LocalEngine

    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="engine-bench-"))
    engine = LocalEngine(data_dir)
    slug = engine.base_models[0].slug
    start = time.perf_counter()
    await engine.warm_up()
    load_s = time.perf_counter() - start
    print(f"model loaded in {load_s:.1f} s (data dir {data_dir}, {engine.threads} torch threads)", flush=True)
    adapters = await fine_tune_adapters(engine, slug)
    peer = None if args.no_peer else PeftPeer(engine, adapters)
    await engine.generate(requests_for(slug, 2, 4, adapters))  # warm the kernels

    def count(text: str) -> int:
        return int(engine.count_tokens(slug, text))

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
        "adapters_mixed": ADAPTERS,
        "local": {},
    }
    header = f"{'concurrent':>10} {'base tok/s':>11} {'mixed tok/s':>12} {'mixed/base':>11}"
    print(header + ("" if peer is None else f" {'peft tok/s':>11} {'mixed/peft':>11}"), flush=True)

    def best(runs: list[Any]) -> Any:
        return max(runs, key=lambda r: r[0]["tokens_per_s"])

    for n in args.concurrency:
        base_requests = requests_for(slug, n, args.max_new_tokens, None)
        mixed_requests = requests_for(slug, n, args.max_new_tokens, adapters)
        runs: dict[str, list[Any]] = {"base": [], "mixed": [], "peft": []}
        for _ in range(args.rounds):
            runs["base"].append(await throughput(engine.generate, count, base_requests))
            runs["mixed"].append(await throughput(engine.generate, count, mixed_requests))
            if peer is not None:
                runs["peft"].append(await throughput(peer.generate, count, mixed_requests))
        (base, _), (mixed, texts) = best(runs["base"]), best(runs["mixed"])
        row: dict[str, Any] = {"base": base, "mixed": mixed, "rounds": args.rounds}
        row["mixed_over_base"] = round(mixed["tokens_per_s"] / base["tokens_per_s"], 3)
        row["mixed_over_base_cpu"] = round(mixed["tokens_per_cpu_s"] / base["tokens_per_cpu_s"], 3)
        # Identical answers: each adapter's requests alone (no other adapter in the batch).
        alone: dict[int, str] = {}
        for a in adapters:
            idx = [i for i, r in enumerate(mixed_requests) if r.adapter_id == a]
            for i, res in zip(idx, await engine.generate([mixed_requests[i] for i in idx]), strict=True):
                alone[i] = res.text
        row["identical_to_per_adapter_runs"] = f"{sum(alone[i] == t for i, t in enumerate(texts))}/{n}"
        line = f"{n:>10} {base['tokens_per_s']:>11.1f} {mixed['tokens_per_s']:>12.1f} {row['mixed_over_base']:>10.2f}x"
        if peer is not None:
            peft = best(runs["peft"])[0]
            row["peft_mixed"] = peft
            row["mixed_over_peft"] = round(mixed["tokens_per_s"] / peft["tokens_per_s"], 2)
            row["mixed_over_peft_cpu"] = round(mixed["tokens_per_cpu_s"] / peft["tokens_per_cpu_s"], 2)
            line += f" {peft['tokens_per_s']:>11.1f} {row['mixed_over_peft']:>10.2f}x"
        cpu_ratios = f"cpu: mixed/base {row['mixed_over_base_cpu']:.2f}x"
        if peer is not None:
            cpu_ratios += f", mixed/peft {row['mixed_over_peft_cpu']:.2f}x"
        print(line + f"   identical {row['identical_to_per_adapter_runs']}   {cpu_ratios}", flush=True)
        result["local"][str(n)] = row
    result["fine_tune"] = await fine_tune_to_first_completion(engine, slug, adapters[0])
    print("fine-tune:", json.dumps(result["fine_tune"]), flush=True)
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())  # other processes skew the numbers
    await engine.aclose()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="engine data dir (reuses its converted model); default: a temp dir")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--no-peer", action="store_true", help="skip the peft mixed-batch peer")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per kind, best kept (default 2)")
    parser.add_argument("--quick", action="store_true", help="16 new tokens; 1, 8 and 32 concurrent")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.max_new_tokens, parsed.concurrency = 16, [1, 8, 32]
    outcome = anyio.run(main, parsed)
    parsed.out.parent.mkdir(parents=True, exist_ok=True)
    parsed.out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"saved {parsed.out}")
