"""Evaluation at scale: `gradient-async eval` vs `gradient-async batch` on the same 100,000 items.

Both commands run as child processes against one `gradient-async serve --engine test` child (the
deterministic test engine over a loopback socket), with the same concurrency. `eval` answers every item
and scores it (`contains`), keeps a rows file, and computes the summary (means, bootstrap intervals);
`batch` only answers and writes its output file. Measured per command: wall time, items/s and peak RSS
(`wait4` of that child). The goal is eval within 1.2x of batch on both.

Example::

    python benchmarks/eval.py                  # 100,000 items, writes benchmarks/results/eval.json
    python benchmarks/eval.py --items 10000    # quicker, writes benchmarks/results/eval_10000.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN, WORKSPACE = "bench-token", "bench-ws"
CLI = [str(Path(sys.executable).parent / "gradient-async")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError("the server exited at start-up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _base_model(api: str) -> str:
    request = urllib.request.Request(
        api + "/models?onlyBase=True",
        headers={"Authorization": f"Bearer {TOKEN}", "x-gradient-workspace-id": WORKSPACE},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.load(answer)["models"][-1]["id"])


def _measure(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "last_line": err.decode().strip().splitlines()[-1] if err.strip() else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each command, alternating (best is kept)")
    args = parser.parse_args()
    n = args.items
    with tempfile.TemporaryDirectory(prefix="gradient-bench-eval-") as tmp_dir:
        tmp = Path(tmp_dir)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server_cmd = [*CLI, "serve", "--engine", "test", "--port", str(port), "--data-dir", str(tmp / "server")]
        server_cmd += ["--token", TOKEN, "--workspace", WORKSPACE, "--log-level", "warning"]
        server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_up(url, server)
            model = _base_model(url + "/api")
            items = tmp / "items.jsonl"
            prompts = tmp / "prompts.jsonl"
            with items.open("w") as fi, prompts.open("w") as fp:
                for i in range(n):
                    query = f"Question: what is {i} plus {i}?\n\nAnswer:"
                    fi.write(json.dumps({"id": i, "query": query, "expected": str(2 * i)}) + "\n")
                    fp.write(json.dumps({"id": i, "query": query}) + "\n")
            env = {
                **os.environ,
                "GRADIENT_API_URL": url + "/api",
                "GRADIENT_ACCESS_TOKEN": TOKEN,
                "GRADIENT_WORKSPACE_ID": WORKSPACE,
            }
            common = ["--model", model, "--concurrency", str(args.concurrency), "--max-tokens", "8", "--no-progress"]
            runs: dict[str, dict[str, Any]] = {}
            names = [f"{kind}#{r + 1}" for r in range(args.repeat) for kind in ("batch", "eval")]
            for name in names:  # alternate, so drift in the machine's load hits both alike
                if name.startswith("batch"):
                    cmd = [*CLI, "batch", str(prompts), "-o", str(tmp / f"{name}.jsonl"), *common]
                else:
                    cmd = [*CLI, "eval", "--data", str(items), "--scorer", "contains"]
                    cmd += ["--rows", str(tmp / f"{name}.rows.jsonl"), "--summary-json", str(tmp / "s.json"), *common]
                print(f"running {name} on {n} items ...", file=sys.stderr, flush=True)
                runs[name] = _measure(cmd, env)
                runs[name]["items_per_s"] = round(n / runs[name]["wall_s"], 1)
                print(f"  {runs[name]}", file=sys.stderr, flush=True)
            summary = json.loads((tmp / "s.json").read_text())
        finally:
            server.terminate()
            server.wait(timeout=30)
    best = {
        k: min((r for name, r in runs.items() if name.startswith(k)), key=lambda r: r["wall_s"])
        for k in ("batch", "eval")
    }
    ratios = {
        "time_eval_over_batch": round(best["eval"]["wall_s"] / best["batch"]["wall_s"], 3),
        "rss_eval_over_batch": round(best["eval"]["peak_rss_mb"] / best["batch"]["peak_rss_mb"], 3),
        "client_cpu_eval_over_batch": round(best["eval"]["cpu_s"] / best["batch"]["cpu_s"], 3),
    }
    out = {
        "benchmark": "eval",
        "items": n,
        "concurrency": args.concurrency,
        "server": "gradient-async serve --engine test (child process, loopback)",
        "runs": runs,
        "best": best,
        "ratios": ratios,
        "goal": "eval within 1.2x of batch in time and peak RSS",
        "met": ratios["time_eval_over_batch"] <= 1.2 and ratios["rss_eval_over_batch"] <= 1.2,
        "eval_answered": summary["models"][model]["answered"],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("eval.json" if n == 100_000 else f"eval_{n}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'':8}{'wall s':>8}{'items/s':>10}{'peak RSS MB':>13}{'client CPU s':>14}")
    for name in ("batch", "eval"):
        r = best[name]
        print(f"{name:8}{r['wall_s']:>8}{r['items_per_s']:>10}{r['peak_rss_mb']:>13}{r['cpu_s']:>14}")
    print(
        f"eval/batch: time {ratios['time_eval_over_batch']}x, RSS {ratios['rss_eval_over_batch']}x, "
        f"client CPU {ratios['client_cpu_eval_over_batch']}x -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
