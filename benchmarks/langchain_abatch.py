"""LangChain `abatch`: gradient_async.langchain.GradientLLM vs langchain_community's GradientLLM.

Both classes run `abatch(prompts, return_exceptions=True)` on the same load server (in a child
process: 100 ms latency, 10 % of answers are 503s, seeded). Measured per class: prompts that came
back with text ("completed"), wall time, and the server's request count. LangChain's class is run
twice: as users call it (no max_concurrency: every prompt at once, a new aiohttp session each) and
with `config={"max_concurrency": 64}` (waves of 64), matching our default concurrency.

Run::

    .venv/bin/python benchmarks/langchain_abatch.py
    .venv/bin/python benchmarks/langchain_abatch.py --prompts 200 --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_server import BASE_MODEL_ID, LoadServerProcess

from gradient_async.langchain import GradientLLM

RESULTS = Path(__file__).resolve().parent / "results" / "langchain_abatch.json"
TOKEN = "gsk-bench-token-0123456789"
WORKSPACE = "bench-ws"


def _prompts(n: int) -> list[str]:
    return [f"Question: what is {i} + {i}?\n\nAnswer: " for i in range(n)]


async def _run(llm: Any, prompts: list[str], config: dict[str, Any] | None) -> tuple[int, float]:
    start = time.perf_counter()
    out = await llm.abatch(prompts, config=config, return_exceptions=True)
    wall = time.perf_counter() - start
    return sum(isinstance(o, str) for o in out), wall


def _measure(
    name: str, srv: LoadServerProcess, llm: Any, prompts: list[str], config: dict[str, Any] | None
) -> dict[str, Any]:
    srv.reset()
    completed, wall = asyncio.run(_run(llm, prompts, config))
    stats = srv.stats()
    row = {
        "completed": completed,
        "lost": len(prompts) - completed,
        "wall_s": round(wall, 3),
        "server_requests": stats["requests"],
        "server_503s": stats["statuses"].get("503", 0),
        "max_in_flight": stats["max_in_flight"],
    }
    print(f"{name:<44} completed {completed:>5}/{len(prompts)}  wall {wall:6.2f}s  requests {stats['requests']}")
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from langchain_community.llms import GradientLLM as LangChainGradientLLM

    prompts = _prompts(args.prompts)
    results: dict[str, Any] = {}
    with LoadServerProcess(latency_ms=args.latency_ms, fail_rate=args.fail_rate, seed=1) as srv:
        creds = {"gradient_access_token": TOKEN, "gradient_workspace_id": WORKSPACE, "gradient_api_url": srv.api_url}
        ours = GradientLLM(model=BASE_MODEL_ID, max_concurrency=args.concurrency, **creds)
        theirs = LangChainGradientLLM(model=BASE_MODEL_ID, **creds)
        results["gradient_async GradientLLM.abatch"] = _measure(
            "gradient_async GradientLLM.abatch", srv, ours, prompts, None
        )
        results["langchain_community GradientLLM.abatch"] = _measure(
            "langchain_community GradientLLM.abatch", srv, theirs, prompts, None
        )
        name = f"langchain_community GradientLLM.abatch (max_concurrency={args.concurrency})"
        results[name] = _measure(name, srv, theirs, prompts, {"max_concurrency": args.concurrency})
        ours.close()
    report = {
        "benchmark": "langchain_abatch",
        "prompts": args.prompts,
        "latency_ms": args.latency_ms,
        "fail_rate": args.fail_rate,
        "concurrency": args.concurrency,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
