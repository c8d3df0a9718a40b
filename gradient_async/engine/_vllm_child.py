"""A vLLM OpenAI-compatible server as a child process of the gateway.

It runs `python -m vllm.entrypoints.openai.api_server` with the vLLM virtualenv's Python
(vLLM pins its own torch/transformers, so it lives in its own virtualenv: `make vllm-venv`),
on a free loopback port, with runtime LoRA loading on. Its output goes to a log file whose
tail is quoted in errors. On Linux the child gets SIGTERM when the gateway dies
(`PR_SET_PDEATHSIG`), so a crashed gateway leaves no vLLM behind.

Example::

    child = VllmChild(python, model_dir, served_name="smollm2", log_path=Path("vllm.log"))
    child.start()
    await child.wait_ready(http, timeout=300)
    ...
    await child.stop()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx

__all__ = ["DEFAULT_MAX_LORA_RANK", "ChildFailed", "VllmChild", "cli_flag", "free_port"]

DEFAULT_MAX_LORA_RANK = 8
"""vLLM's `--max-lora-rank` for a child we start: the trainer's default rank. vLLM sizes its LoRA
buffers and computes every adapter at this rank whatever its own, so it is kept small (on CPU, 32
concurrent completions over 8 rank-8 adapters mixed: 75 tok/s at 8, 42 at 16). Pass
`--vllm-arg=--max-lora-rank=N` to serve adapters of a larger rank."""


def cli_flag(args: Sequence[str], flag: str) -> str | None:
    """The value `args` give `flag` (`--flag=V` or `--flag V`, with `-` or `_` between words as vLLM
    accepts; the last one wins), or None."""
    value: str | None = None
    for i, arg in enumerate(args):
        name, eq, given = arg.partition("=")
        if name.replace("_", "-") != flag:
            continue
        if eq:
            value = given
        elif i + 1 < len(args):
            value = args[i + 1]
    return value


class ChildFailed(RuntimeError):
    """The child exited or never became ready; the message quotes its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()


class VllmChild:
    """One vLLM server process. `start()` must run on the event loop's thread (the
    parent-death signal follows the thread that started the child)."""

    def __init__(
        self,
        python: Path,
        model_dir: Path,
        *,
        served_name: str,
        log_path: Path,
        max_lora_rank: int = DEFAULT_MAX_LORA_RANK,
        max_loras: int = 8,
        max_model_len: int = 2048,
        kv_cache_gib: float = 1.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.python = python
        self.model_dir = model_dir
        self.served_name = served_name
        self.log_path = log_path
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self.extra_args = tuple(extra_args)
        self.port = 0
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def command(self) -> list[str]:
        own_rank = cli_flag(self.extra_args, "--max-lora-rank") is not None  # the caller's own flag wins
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enable-lora",
            *(() if own_rank else ("--max-lora-rank", str(self.max_lora_rank))),
            "--max-loras",
            str(self.max_loras),
            "--max-model-len",
            str(self.max_model_len),
            "--disable-log-stats",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))}
        env.update(
            VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
            VLLM_CPU_KVCACHE_SPACE=f"{self.kv_cache_gib:g}",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        return env

    def start(self) -> None:
        """Start the process (not yet ready: await `wait_ready`)."""
        if self.running:
            return
        if self._proc is not None:  # a previous child died: end whatever it left in its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=str(self.log_path.parent),
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def exit_message(self) -> str:
        code = self.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return f"the vLLM child process (pid {self.pid}) {how}; its log {self.log_path} ends with:\n{self.log_tail()}"

    async def wait_ready(self, http: httpx.AsyncClient, *, timeout: float) -> None:
        """Poll `/health` until it answers 200; ChildFailed when the child exits or `timeout` passes."""
        deadline = anyio.current_time() + timeout
        while True:
            if not self.running:
                raise ChildFailed(self.exit_message())
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{self.url}/health", timeout=5.0)).status_code == 200:
                    return
            if anyio.current_time() > deadline:
                await self.stop()
                raise ChildFailed(
                    f"the vLLM child did not become ready within {timeout:.0f} s; its log {self.log_path} "
                    f"ends with:\n{self.log_tail()}"
                )
            await anyio.sleep(0.5)

    async def wait_exit(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the child to exit (in a worker thread); True when it has."""
        proc = self._proc
        if proc is None:
            return True

        def wait() -> bool:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True

        return await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)

    async def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the child's process group, SIGKILL after `grace_s`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if not await self.wait_exit(grace_s):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(proc.wait)
