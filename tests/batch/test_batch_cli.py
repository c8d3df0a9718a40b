"""`gradient-async batch`: JSONL in, JSONL out, resume after a crash, bad lines reported."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from gradient_async import AsyncGradient
from gradient_async.cli.batch import run_file

from .conftest import MODEL, FakeServer

ROOT = Path(__file__).resolve().parents[2]


def _write_input(path: Path, n: int) -> None:
    lines = []
    for i in range(n):
        if i % 3 == 0:
            lines.append(json.dumps(f"bare prompt {i}"))  # id = line number
        else:
            lines.append(json.dumps({"id": f"q{i}", "query": f"prompt {i}", "max_generated_token_count": 8}))
    lines[5] = json.dumps({"id": "q5", "query": "this one fails !status:400"})
    lines[10] = "{not json"
    lines.insert(20, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_resume_after_crash_yields_each_id_once(
    tmp_path: Path, make_client: Callable[..., AsyncGradient], server: FakeServer, anyio_backend: str
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(inp, 120)
    server.latency = 0.001
    err = io.StringIO()
    async with make_client(max_concurrency=8) as client:
        with anyio.CancelScope() as scope:

            def crash(done: int, total: int | None, ok: int, failed: int) -> None:
                if done == 40:
                    scope.cancel()  # the process dies here: whatever was written stays

            await run_file(client, inp, out, model_id=MODEL, progress=crash, stderr=err)
        assert scope.cancelled_caught
        first = _records(out)
        assert 30 <= len(first) <= 40
        with out.open("a", encoding="utf-8") as fh:
            fh.write('{"id": "q7", "index": 7, "outp')  # a line torn by the crash
        requests_before = server.requests
        summary = await run_file(client, inp, out, model_id=MODEL, resume=True, stderr=err)

    records = _records(out)
    ids = Counter(json.dumps(r["id"]) for r in records)
    assert all(count == 1 for count in ids.values())
    assert len(records) == 119  # 120 lines, one bad
    failed = [r for r in records if r["error"] is not None]
    assert [r["id"] for r in failed] == ["q5"] and "BadRequestError" in str(failed[0]["error"])
    by_id = {json.dumps(r["id"]): r for r in records}
    assert by_id['"q4"']["output"] == "echo: prompt 4" and by_id['"q4"']["index"] == 4
    assert by_id["1"]["output"] == "echo: bare prompt 0" and by_id["1"]["finish_reason"] == "length"
    assert summary.skipped == len([r for r in first if r["error"] is None])
    assert summary.ok + summary.failed + summary.skipped == 119
    assert summary.bad_lines == 1 and summary.exit_code == 1
    assert server.requests - requests_before == summary.requests
    assert "in.jsonl:11: skipped bad line" in err.getvalue()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_resume_reruns_failures_and_writes_them_once(
    tmp_path: Path, make_client: Callable[..., AsyncGradient], server: FakeServer, anyio_backend: str
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('"a"\n"b !status:422"\n{"id": "c", "query": "c", "bogus": 1}\n', encoding="utf-8")
    async with make_client() as client:
        first = await run_file(client, inp, out, model_id=MODEL, stderr=io.StringIO())
        again = await run_file(client, inp, out, model_id=MODEL, resume=True, stderr=io.StringIO())
    assert (first.ok, first.failed) == (1, 2) and first.exit_code == 1
    assert (again.ok, again.failed, again.skipped) == (0, 2, 1)
    records = _records(out)
    assert sorted(json.dumps(r["id"]) for r in records) == ['"c"', "1", "2"]
    assert "bogus" in str(next(r for r in records if r["id"] == "c")["error"])


def test_cli_end_to_end_against_the_load_server(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from load_server import LoadServerProcess
    finally:
        sys.path.pop(0)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "query": f"p{i}"}) + "\n" for i in range(50)), encoding="utf-8")
    with LoadServerProcess(fail_rate=0.1, seed=-1) as srv:
        env = {
            **os.environ,
            "GRADIENT_ACCESS_TOKEN": "tok",
            "GRADIENT_WORKSPACE_ID": "ws",
            "GRADIENT_API_URL": srv.api_url,
        }
        cmd = [sys.executable, "-m", "gradient_async.cli", "batch", str(inp), "-o", str(out), "--model", MODEL]
        proc = subprocess.run(
            [*cmd, "--concurrency", "8", "--max-tokens", "4"], env=env, capture_output=True, text=True, timeout=60
        )
        stats = srv.stats()
    assert proc.returncode == 0, proc.stderr
    assert "batch: 50 ok, 0 failed" in proc.stderr
    assert sorted(r["id"] for r in _records(out)) == list(range(50))
    assert stats["statuses"].get("503", 0) >= 4
    assert "tok" not in proc.stderr
