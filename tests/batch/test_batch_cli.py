"""`gradient-async batch`: JSONL in, JSONL out, resume after a crash, bad lines reported, safe by default."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from gradient_async import AsyncGradient, RetryPolicy
from gradient_async.cli import main
from gradient_async.cli.batch import BatchFileError, BatchFileSummary, resume_command, run_file
from gradient_async.fake_api import FakeGradientAPI

from .conftest import MODEL, FakeSleep

ROOT = Path(__file__).resolve().parents[2]
COMPLETE = f"/api/models/{MODEL}/complete"


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


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "in.jsonl", tmp_path / "out.jsonl"


@pytest.fixture
def env(server: FakeGradientAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGradientAPI]:
    """`main([...])` runs against the fake (through respx), with test credentials."""
    from gradient_async.testing import mock_gradient_router

    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", "tok")
    monkeypatch.setenv("GRADIENT_WORKSPACE_ID", "ws")
    monkeypatch.setenv("GRADIENT_API_URL", "http://gradient.test/api")
    with mock_gradient_router("http://gradient.test/api", server, pass_through=False):
        yield server


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_resume_after_crash_yields_each_id_once(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], server: FakeGradientAPI, anyio_backend: str
) -> None:
    inp, out = files
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
            fh.write('{"id": "q7", "line": 8, "outp')  # a line torn by the crash
        requests_before = server.handled
        summary = await run_file(client, inp, out, model_id=MODEL, resume=True, stderr=err)

    records = _records(out)
    ids = Counter(json.dumps(r["id"]) for r in records)
    assert all(count == 1 for count in ids.values())
    assert len(records) == 119  # 120 lines, one bad
    failed = [r for r in records if r["error"] is not None]
    assert [r["id"] for r in failed] == ["q5"] and "BadRequestError" in str(failed[0]["error"])
    by_id = {json.dumps(r["id"]): r for r in records}
    assert by_id['"q4"']["output"] == "echo: prompt 4" and by_id['"q4"']["line"] == 5
    assert by_id["1"]["output"] == "echo: bare prompt 0" and by_id["1"]["line"] == 1
    assert summary.skipped == len([r for r in first if r["error"] is None])
    assert summary.ok + summary.failed + summary.skipped == 119
    assert summary.bad_lines == 1 and summary.exit_code == 1
    assert server.handled - requests_before == summary.requests
    assert "in.jsonl:11: skipped bad line" in err.getvalue()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_resume_reruns_failures_and_writes_them_once(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], anyio_backend: str
) -> None:
    inp, out = files
    inp.write_text('"a"\n"b !status:422"\n{"id": "c", "query": "c", "bogus": 1}\n', encoding="utf-8")
    async with make_client() as client:
        first = await run_file(client, inp, out, model_id=MODEL, stderr=io.StringIO())
        again = await run_file(client, inp, out, model_id=MODEL, resume=True, stderr=io.StringIO())
    assert (first.ok, first.failed) == (1, 2) and first.exit_code == 1
    assert (again.ok, again.failed, again.skipped) == (0, 2, 1)
    records = _records(out)
    assert sorted(json.dumps(r["id"]) for r in records) == ['"c"', "1", "2"]
    bogus = next(r for r in records if r["id"] == "c")
    assert "bogus" in str(bogus["error"]) and "line 3" in str(bogus["error"]) and bogus["line"] == 3


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_existing_output_is_never_truncated(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], server: FakeGradientAPI, anyio_backend: str
) -> None:
    inp, out = files
    inp.write_text('"a"\n', encoding="utf-8")
    out.write_text("".join(json.dumps({"id": i, "output": "kept", "error": None}) + "\n" for i in range(13)))
    async with make_client() as client:
        with pytest.raises(BatchFileError, match=r"--resume to continue it, or --overwrite to start over"):
            await run_file(client, inp, out, model_id=MODEL)
        assert len(_records(out)) == 13 and server.handled == 0
        summary = await run_file(client, inp, out, model_id=MODEL, overwrite=True)
    assert summary.ok == 1 and [r["id"] for r in _records(out)] == [1]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_null_and_missing_ids_are_line_numbers_also_on_resume(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], server: FakeGradientAPI, anyio_backend: str
) -> None:
    inp, out = files
    rows = [{"id": None, "query": "a"}, {"query": "b"}, "c", {"id": "x", "query": "d"}, {"id": None, "query": "e"}]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    async with make_client() as client:
        await run_file(client, inp, out, model_id=MODEL)
        sent = server.handled
        for _ in range(2):
            summary = await run_file(client, inp, out, model_id=MODEL, resume=True)
            assert (summary.skipped, summary.ok, summary.failed) == (5, 0, 0)
    assert server.handled == sent == 5
    assert sorted(json.dumps(r["id"]) for r in _records(out)) == ['"x"', "1", "2", "3", "5"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_one_numbering_the_input_line(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], anyio_backend: str
) -> None:
    inp, out = files
    inp.write_text('"ok"\n\n{"query": \n{"id": "v", "query": 5}\n"fine"\n', encoding="utf-8")
    err = io.StringIO()
    async with make_client() as client:
        await run_file(client, inp, out, model_id=MODEL, stderr=err)
    assert "in.jsonl:3: skipped bad line: invalid JSON" in err.getvalue()
    assert "line 1 column" not in err.getvalue()
    records = {r["id"]: r for r in _records(out)}
    assert set(records) == {1, "v", 5}
    assert [records[k]["line"] for k in (1, "v", 5)] == [1, 4, 5]
    assert "line 4" in str(records["v"]["error"]) and "prompt" not in str(records["v"]["error"]).split(":")[1]
    assert all("index" not in r for r in records.values())


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-tokens", "0"),
        ("--max-tokens", "512"),
        ("--rpm", "0"),
        ("--concurrency", "0"),
        ("--tpm", "-1"),
        ("--temperature", "-0.5"),
        ("--rpm", "nan"),
    ],
)
def test_bad_flags_are_named_before_sending(
    env: FakeGradientAPI, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    inp, out = files
    inp.write_text('"a"\n"b"\n', encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(inp), "-o", str(out), "--model", MODEL, flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert env.handled == 0 and not out.exists()


def test_a_wrong_token_stops_the_run_with_the_resume_command(
    env: FakeGradientAPI, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = files
    inp.write_text("".join(json.dumps(f"p{i}") + "\n" for i in range(300)), encoding="utf-8")
    env.add("POST", COMPLETE, httpx.Response(401, json={"message": "bad token", "type": "unauthorized"}))
    code = main(["batch", str(inp), "-o", str(out), "--model", MODEL, "--concurrency", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert env.handled < 20  # not 300
    assert "error: stopped after 5 identical failures in a row: AuthenticationError" in err
    assert (
        f"continue with: gradient-async batch {inp} -o {out} --model {MODEL} --concurrency 4 --no-progress --resume"
        in err
    )
    assert err.count("AuthenticationError") == 1 and "Traceback" not in err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_nothing_listening_stops_soon_and_reads_as_a_connection_error(
    files: tuple[Path, Path], fake_sleep: FakeSleep, anyio_backend: str
) -> None:
    inp, out = files
    inp.write_text("".join(json.dumps(f"p{i}") + "\n" for i in range(300)), encoding="utf-8")
    client = AsyncGradient(
        access_token="t", workspace_id="w", base_url="http://127.0.0.1:9/api", retry=RetryPolicy(sleep=fake_sleep)
    )
    async with client:
        summary = await run_file(client, inp, out, model_id=MODEL, concurrency=2)
    assert summary.stopped is not None
    assert "cannot connect to http://127.0.0.1:9 (connection refused)" in summary.stopped
    assert summary.failed == 5 and summary.requests <= 10 * 6  # 6 attempts an item; not 300 items
    assert "ssl:default" not in out.read_text()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_fail_fast_stops_at_the_first_failure(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], server: FakeGradientAPI, anyio_backend: str
) -> None:
    inp, out = files
    inp.write_text("".join(json.dumps("x !status:400" if i == 3 else f"p{i}") + "\n" for i in range(200)))
    async with make_client() as client:
        summary = await run_file(client, inp, out, model_id=MODEL, concurrency=1, fail_fast=True)
    assert summary.stopped is not None and "--fail-fast" in summary.stopped and "BadRequestError" in summary.stopped
    assert server.handled < 10 and summary.exit_code == 1  # a window of 2 may be in flight


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_progress_has_a_total_for_a_file(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], anyio_backend: str
) -> None:
    inp, out = files
    inp.write_text('"a"\n\n"b"\n{bad\n{"id": "v", "query": 1}\n"c"\n', encoding="utf-8")
    totals: list[int | None] = []
    async with make_client() as client:
        await run_file(client, inp, out, model_id=MODEL, progress=lambda d, t, o, f: totals.append(t))
    assert totals == [3, 3, 3]


@pytest.mark.parametrize("where", ["directory", "missing folder", "disk full"])
def test_unwritable_output_is_one_line(
    env: FakeGradientAPI, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], where: str
) -> None:
    inp, out = files
    inp.write_text('"a"\n"b"\n', encoding="utf-8")
    if where == "directory":
        out.mkdir()
        reason = "it is a directory"
    elif where == "missing folder":
        out = out.parent / "nope" / "out.jsonl"
        reason = "No such file or directory"
    else:
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        out = Path("/dev/full")
        reason = "No space left on device"
    code = main(["batch", str(inp), "-o", str(out), "--model", MODEL, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[0] == f"error: cannot write {out}: {reason}"
    assert "Traceback" not in err


def test_resume_command_replaces_overwrite() -> None:
    argv = ["batch", "in file.jsonl", "-o", "o.jsonl", "--model", "m", "--overwrite"]
    assert resume_command(argv) == "gradient-async batch 'in file.jsonl' -o o.jsonl --model m --resume"
    assert BatchFileSummary(stopped="x").exit_code == 1


def _load_server() -> type:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from load_server import LoadServerProcess
    finally:
        sys.path.pop(0)
    return LoadServerProcess  # type: ignore[no-any-return]


def _cli_env(api_url: str) -> dict[str, str]:
    return {**os.environ, "GRADIENT_ACCESS_TOKEN": "tok", "GRADIENT_WORKSPACE_ID": "ws", "GRADIENT_API_URL": api_url}


def test_cli_end_to_end_against_the_load_server(files: tuple[Path, Path]) -> None:
    inp, out = files
    inp.write_text("".join(json.dumps({"id": i, "query": f"p{i}"}) + "\n" for i in range(50)), encoding="utf-8")
    with _load_server()(fail_rate=0.1, seed=-1) as srv:
        cmd = [sys.executable, "-m", "gradient_async.cli", "batch", str(inp), "-o", str(out), "--model", MODEL]
        proc = subprocess.run(
            [*cmd, "--concurrency", "8", "--max-tokens", "4"],
            env=_cli_env(srv.api_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        stats = srv.stats()
    assert proc.returncode == 0, proc.stderr
    assert "batch: 50 ok, 0 failed" in proc.stderr
    assert sorted(r["id"] for r in _records(out)) == list(range(50))
    assert stats["statuses"].get("503", 0) >= 4
    assert "tok" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_flushes_prints_the_summary_and_the_resume_command(files: tuple[Path, Path], sig: int) -> None:
    inp, out = files
    inp.write_text("".join(json.dumps(f"p{i}") + "\n" for i in range(400)), encoding="utf-8")
    with _load_server()(latency_ms=50) as srv:
        cmd = [sys.executable, "-m", "gradient_async.cli", "batch", str(inp), "-o", str(out), "--model", MODEL]
        proc = subprocess.Popen(
            [*cmd, "--concurrency", "2"], env=_cli_env(srv.api_url), stderr=subprocess.PIPE, text=True
        )
        try:
            for _ in range(600):  # until a few rows are written (at most ~60 s)
                if out.exists() and out.read_text().count("\n") >= 4:
                    break
                time.sleep(0.1)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    rows = _records(out)  # every row whole
    assert 4 <= len(rows) < 400
    assert f"interrupted; batch: {len(rows)} ok, 0 failed" in err
    assert f"continue with: gradient-async batch {inp} -o {out} --model {MODEL} --concurrency 2 --resume" in err
    assert "Traceback" not in err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_hostile_files(
    files: tuple[Path, Path], make_client: Callable[..., AsyncGradient], server: FakeGradientAPI, anyio_backend: str
) -> None:
    inp, out = files
    inp.write_bytes(b'"ok"\n\xff\xfe not utf-8\n"fine"\n')
    err = io.StringIO()
    async with make_client() as client:
        summary = await run_file(client, inp, out, model_id=MODEL, stderr=err)
        assert (summary.ok, summary.bad_lines) == (2, 1)
        with out.open("ab") as fh:
            fh.write('{"id": 9, "output": "café'.encode()[:-1])  # killed inside a character
        again = await run_file(client, inp, out, model_id=MODEL, resume=True, stderr=io.StringIO())
        assert (again.skipped, again.ok) == (2, 0)
        assert "in.jsonl:2: skipped bad line: not UTF-8 text (byte 1 of the line)" in err.getvalue()
        before = inp.read_bytes()
        with pytest.raises(BatchFileError, match="is the input file"):
            await run_file(client, inp, inp, model_id=MODEL, overwrite=True)
        assert inp.read_bytes() == before  # never truncated
        with pytest.raises(BatchFileError, match="is a directory"):
            await run_file(client, inp.parent, out, model_id=MODEL, overwrite=True)
    assert server.handled == 2
