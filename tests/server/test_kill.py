"""Issue 11 §3/§4 with real processes: `gradient-async serve --engine test` killed with SIGKILL at each
step of a fine-tune (crash points, `GRADIENT_ASYNC_CRASH_AT`), then restarted; SIGTERM shutdown.

After a kill the catalogue still lists the adapter and the answer is exactly the previous version's
or the new one's; no temp file survives the restart; the next fine-tune applies once. No timing asserts:
every wait is a generous deadline for something that must happen.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gradient_async.demo import ANSWER, QUESTION
from gradient_async.engine.base import TrainingSample, TrainingSegment
from gradient_async.engine.test_engine import _AdapterState, _train

TOKEN = "kill-test-token"
WORKSPACE = "kill-ws"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "x-gradient-workspace-id": WORKSPACE}
SAMPLE = {"samples": [{"inputs": QUESTION + ANSWER}]}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL/SIGTERM semantics")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, data_dir: Path, *, crash_at: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "GRADIENT_ASYNC_CRASH_AT"}
        env["GRADIENT_SERVER_TOKEN"] = TOKEN
        if crash_at:
            env["GRADIENT_ASYNC_CRASH_AT"] = crash_at
        cmd = [
            sys.executable,
            "-c",
            "import sys; from gradient_async.cli import main; sys.exit(main())",
            "serve",
            "--engine",
            "test",
            "--data-dir",
            str(data_dir),
            "--port",
            str(self.port),
            "--workspace",
            WORKSPACE,
            "--log-level",
            "warning",
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.communicate()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("server did not start within 60 s")
            time.sleep(0.05)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api", headers=HEADERS, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@contextmanager
def serving(data_dir: Path, **kw: object) -> Iterator[Server]:
    server = Server(data_dir, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def base_id(client: httpx.Client) -> str:
    models = client.get("/models", params={"onlyBase": "True", "capability": "any"}).json()["models"]
    return str(models[-1]["id"])


@pytest.mark.parametrize(
    ("crash_at", "trained"),
    [("test_engine.before_rename@2", False), ("test_engine.after_rename@2", True)],
)
def test_kill_9_during_a_fine_tune_leaves_one_whole_version(tmp_path: Path, crash_at: str, trained: bool) -> None:
    # Write 1 is the adapter's creation, write 2 the fine-tune's commit: the server dies just before
    # (or just after) the rename that switches versions.
    with serving(tmp_path, crash_at=crash_at) as server, server.client() as client:
        adapter = client.post("/models", json={"model": {"baseModelId": base_id(client), "name": "k"}}).json()["id"]
        with pytest.raises(httpx.HTTPError):
            client.post(f"/models/{adapter}/fine-tune", json=SAMPLE)
        assert server.proc.wait(timeout=30) == -signal.SIGKILL
    assert bool(list(tmp_path.rglob("*.tmp"))) is not trained  # killed before the rename: a temp file is left
    with serving(tmp_path) as server, server.client() as client:
        assert list(tmp_path.rglob("*.tmp")) == []  # start-up removed the half-done write
        assert [m["id"] for m in client.get("/models").json()["models"] if m["type"] == "modelAdapter"] == [adapter]
        answer = client.post(f"/models/{adapter}/complete", json={"query": QUESTION}).json()["generatedOutput"]
        assert (answer == "Dallas Cowboys!") is trained
        again = client.post(f"/models/{adapter}/fine-tune", json=SAMPLE).json()
    # Applied exactly once before (or not at all): the loss halves per earlier training of the sample.
    first = first_loss()
    assert again == {"numberOfTrainableTokens": 22, "sumLoss": round(first / 2, 6) if trained else first}


def first_loss() -> float:
    """The test engine's loss for SAMPLE trained once on a fresh adapter."""
    state = _AdapterState("gradient-test-model")
    _, outcome = _train(state, [TrainingSample((TrainingSegment(QUESTION + ANSWER),))])
    return outcome.sum_loss


def test_kill_9_between_engine_and_catalogue_on_create(tmp_path: Path) -> None:
    with serving(tmp_path, crash_at="server.create_adapter.after_engine") as server, server.client() as client:
        with pytest.raises(httpx.HTTPError):
            client.post("/models", json={"model": {"baseModelId": base_id(client), "name": "k"}})
        assert server.proc.wait(timeout=30) == -signal.SIGKILL
    with serving(tmp_path) as server, server.client() as client:
        assert [m["type"] for m in client.get("/models").json()["models"]] == ["baseModel", "baseModel"]
        assert client.post("/models", json={"model": {"baseModelId": base_id(client), "name": "k"}}).status_code == 200


def test_sigterm_waits_for_work_in_flight_and_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    # Every API answer waits 10 minutes (the latency knob): only the second signal can end this in time.
    with serving(tmp_path, extra=("--latency-ms", "600000", "--shutdown-timeout", "600")) as server:
        slow = subprocess.Popen(
            [sys.executable, "-c", f"import httpx; httpx.get('{server.url}/api/models', timeout=900)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while httpx.get(server.url + "/ready", timeout=5).json()["requests"] < 2:  # the slow one + this one
                assert time.monotonic() < deadline, "the slow request never arrived"
                time.sleep(0.05)
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                server.proc.wait(timeout=2)  # it waits for the request in flight (up to 600 s)
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=60) == 128 + signal.SIGTERM
        finally:
            slow.kill()
            slow.wait()
        _, err = server.proc.communicate(timeout=30)
    assert "shutting down: finishing requests in flight" in err and "second signal: exiting now" in err


def test_sigterm_with_nothing_in_flight_exits_cleanly(tmp_path: Path) -> None:
    with serving(tmp_path, extra=("--shutdown-timeout", "5")) as server:
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=60)
        _, err = server.proc.communicate(timeout=30)
    assert code in (0, -signal.SIGTERM), err
    assert "shutting down" in err
