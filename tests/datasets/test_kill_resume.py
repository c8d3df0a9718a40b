"""A fine-tune run killed with SIGKILL mid-way (a child process) and resumed never sends a confirmed step twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from gradient_async import AsyncGradient
from gradient_async.testing import GradientServerURL
from gradient_async.training import UncertainStepError, fine_tune_run

SAMPLES = [f"Question: what is {i} times 3?\n\nAnswer: {3 * i}" for i in range(12)]

CHILD = textwrap.dedent(
    """
    import os, signal, sys, anyio
    from gradient_async import AsyncGradient
    from gradient_async.training import fine_tune_run

    data, ckpt, adapter_id, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def on_step(record):
        if record.step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        async with AsyncGradient() as client:
            await fine_tune_run(client, adapter_id, data, batch_size=2, checkpoint=ckpt, on_step=on_step)

    anyio.run(main)
    """
)


class Trained:
    """Counts sample texts the server's engine trains on, and requests still being trained."""

    def __init__(self, server: GradientServerURL) -> None:
        self.counts: Counter[str] = Counter()
        self.started = self.finished = 0
        engine = server.state.engine
        inner = engine.fine_tune

        async def fine_tune(adapter: Any, samples: Any) -> Any:
            self.started += 1
            try:
                return await inner(adapter, samples)
            finally:
                self.counts.update("".join(seg.value for seg in sample.segments) for sample in samples)
                self.finished += 1

        engine.fine_tune = fine_tune

    def settle(self) -> None:
        for _ in range(500):
            if self.started == self.finished:
                return
            time.sleep(0.01)
        raise AssertionError("the server kept training")


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _confirmed(path: Path) -> set[int]:
    return {r["step"] for r in _records(path) if r["type"] == "confirmed"}


@pytest.fixture
def setup(
    gradient_server_url: GradientServerURL, tmp_path: Path
) -> tuple[GradientServerURL, Path, str, dict[str, str]]:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"inputs": s}) + "\n" for s in SAMPLES))
    env = {**os.environ, **gradient_server_url.env}

    async def create() -> str:
        async with _client(gradient_server_url) as client:
            adapter = await client.adapters.create(base_model_id=gradient_server_url.base_model_ids[-1], name="kill")
            return adapter.id

    return gradient_server_url, data, anyio.run(create), env


def _client(server: GradientServerURL) -> AsyncGradient:
    return AsyncGradient(access_token=server.token, workspace_id=server.workspace, base_url=server.url)


def _child(data: Path, ckpt: Path, adapter_id: str, kill_after: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", CHILD, str(data), str(ckpt), adapter_id, str(kill_after)]
    with (ckpt.parent / "child.err").open("wb") as err:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)


async def _resume(server: GradientServerURL, data: Path, ckpt: Path, adapter_id: str, **kwargs: Any) -> Any:
    async with _client(server) as client:
        return await fine_tune_run(client, adapter_id, data, batch_size=2, checkpoint=ckpt, resume=True, **kwargs)


def test_killed_after_a_confirmed_step_resumes_with_the_rest(setup: Any, tmp_path: Path) -> None:
    server, data, adapter_id, env = setup
    trained = Trained(server)
    ckpt = tmp_path / "ckpt.jsonl"
    child = _child(data, ckpt, adapter_id, 3, env)
    assert child.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "child.err").read_text()
    assert _confirmed(ckpt) == {1, 2, 3}
    run = anyio.run(lambda: _resume(server, data, ckpt, adapter_id))
    assert (run.skipped, run.sent) == (3, 3)
    trained.settle()
    assert trained.counts == Counter(SAMPLES)  # every sample trained exactly once across both processes


def test_killed_mid_request_stops_then_resends_only_the_uncertain_step(setup: Any, tmp_path: Path) -> None:
    server, data, adapter_id, env = setup
    trained = Trained(server)
    server.faults.latency_ms = 150  # each step is in flight long enough to be killed during it
    ckpt = tmp_path / "ckpt.jsonl"
    child = _child(data, ckpt, adapter_id, 0, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = _records(ckpt) if ckpt.exists() else []
            if len(_confirmed(ckpt) if records else ()) >= 2 and records[-1]["type"] == "sent":
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        child.kill()
    assert child.wait(timeout=60) == -signal.SIGKILL
    server.faults.latency_ms = 0
    trained.settle()
    confirmed = _confirmed(ckpt)
    [uncertain] = {r["step"] for r in _records(ckpt) if r["type"] == "sent"} - confirmed
    before = Counter(trained.counts)
    with pytest.raises(UncertainStepError, match=f"step {uncertain} of 6"):
        anyio.run(lambda: _resume(server, data, ckpt, adapter_id))
    assert trained.counts == before  # stopping sent nothing
    run = anyio.run(lambda: _resume(server, data, ckpt, adapter_id, resend_uncertain=True))
    assert run.skipped == len(confirmed) and run.sent == 6 - len(confirmed)
    trained.settle()
    # every sample of a confirmed step was trained once; only the uncertain step's may have been trained twice
    twice = {text for text, n in trained.counts.items() if n > 1}
    assert set(trained.counts) == set(SAMPLES) and len(twice) <= 2
    assert all(n <= 2 for n in trained.counts.values())
    assert json.loads(ckpt.read_text().splitlines()[-1])["type"] == "confirmed"
