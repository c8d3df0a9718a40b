"""kill -9 of a real `gradient-async serve --engine local` during fine-tunes, then restart.

One child server per crash point, each started on the data directory the last one died on:
it must list the adapter, serve exactly one whole version (the previous one when the kill came
before the switch, the new one after it) and answer like it; the fine-tunes that return build
on it. The child dies by SIGKILL from a named crash point (GRADIENT_ASYNC_CRASH_AT). The three
windows here are mid-training, between the new version's rename and the switch (where the old
layout lost weights) and right after the switch; every commit step is also killed, without a
model, in test_lora_store_recovery.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from gradient_async import AsyncGradient, GradientError

from .conftest import SEED_ANSWER, SEED_PROMPT

CRASH_ENV = "GRADIENT_ASYNC_CRASH_AT"

pytestmark = [pytest.mark.local_model, pytest.mark.asyncio]

TOKEN = "kill-test-token"
SAMPLE = [{"inputs": SEED_PROMPT + SEED_ANSWER}]
# (crash point, version served after the restart, relative to the one served before the kill)
POINTS = [
    ("lora.version_renamed", 0),  # renamed to v<N+1>, CURRENT still names v<N>
    ("lora.current_switched", 1),  # CURRENT switched; old version, memory and answer not yet
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(data_dir: Path, crash_at: str | None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    exe = Path(sys.executable).with_name("gradient-async")
    cmd = [str(exe), "serve", "--engine", "local", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--token", TOKEN, "--workspace", "kill-ws", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}/api"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        assert proc.stderr is not None
        proc.stderr.close()


async def _client(url: str) -> AsyncGradient:
    import httpx

    with anyio.fail_after(300):  # the child imports torch and loads the model
        while True:
            try:
                async with httpx.AsyncClient() as http:
                    if (await http.get(url.removesuffix("/api") + "/health")).status_code == 200:
                        break
            except httpx.TransportError:
                pass
            await anyio.sleep(0.2)
    return AsyncGradient(access_token=TOKEN, workspace_id="kill-ws", base_url=url, timeout=600, max_retries=0)


def _served(adapter_dir: Path) -> tuple[str, bytes]:
    current = (adapter_dir / "CURRENT").read_text()
    names = sorted(p.name for p in adapter_dir.iterdir())
    assert names == ["CURRENT", "adapter.json", current]  # one whole version, nothing half done
    return current, (adapter_dir / current / "adapter_model.safetensors").read_bytes()


async def _answer(adapter: Any) -> str:
    return str((await adapter.complete(query=SEED_PROMPT, max_generated_token_count=12)).generated_output)


async def test_kill_at_each_step_of_a_fine_tune_then_restart(
    local_engine: Any, engine_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="the server needs the [server] extra")
    await local_engine.warm_up()  # the converted model, shared with the children (no GGUF parse each)
    slug = local_engine.base_models[0].slug
    (tmp_path / "engine" / "base").mkdir(parents=True)
    (tmp_path / "engine" / "base" / slug).symlink_to(engine_dir / "base" / slug)

    # The first server commits v1, then dies in the second optimizer step of the next fine-tune.
    with serve(tmp_path, "train.step@6") as (proc, url):  # 4 steps per call: step 2 of call 2
        async with await _client(url) as client:
            base = (await client.models.list(only_base=True))[-1]
            adapter = await base.create_adapter(name="survivor")
            await adapter.fine_tune(samples=SAMPLE)
            [adapter_dir] = [p for p in (tmp_path / "engine" / "adapters").iterdir() if p.is_dir()]
            version, weights = _served(adapter_dir)
            answer = await _answer(adapter)
            with pytest.raises(GradientError):
                await adapter.fine_tune(samples=SAMPLE)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    moves = 0
    for point, next_moves in [*POINTS, (None, 0)]:
        with serve(tmp_path, point) as (proc, url):
            async with await _client(url) as client:  # the server is up: its engine recovered the store
                after, after_weights = _served(adapter_dir)
                assert after == f"v{int(version[1:]) + moves:06d}", point
                assert (after_weights == weights) == (moves == 0), point
                version, weights = after, after_weights
                listed = {m.id: m for m in await client.models.list()}
                assert adapter.id in listed  # the catalogue kept the adapter
                restored = listed[adapter.id]
                if moves:  # the version the last server switched to before dying: learn its answer
                    answer = await _answer(restored)
                assert await _answer(restored) == answer, point
                if point is None:  # the last server lives: training continues from what was served
                    tuned = await restored.fine_tune(samples=SAMPLE)
                    assert tuned.number_of_trainable_tokens == 28
                    assert "Dallas Cowboys" in await _answer(restored)
                    assert _served(adapter_dir)[0] == f"v{int(version[1:]) + 1:06d}"
                    break
                with pytest.raises(GradientError):  # the server dies in the middle of this call
                    await restored.fine_tune(samples=SAMPLE)
            assert proc.wait(timeout=60) == -signal.SIGKILL, point
        moves = next_moves
    shutil.rmtree(tmp_path / "engine" / "adapters")
