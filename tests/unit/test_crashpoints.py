"""Named crash points: a child process SIGKILLs itself at the chosen hit, and only there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from gradient_async._crashpoints import crash_point

CRASH_ENV = "GRADIENT_ASYNC_CRASH_AT"

SCRIPT = (
    "from gradient_async._crashpoints import crash_point\n"
    "for i in range(3):\n"
    "    print(i, flush=True)\n"
    "    crash_point('demo.point')\n"
    "print('done', flush=True)\n"
)


def _run(spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if spec is not None:
        env[CRASH_ENV] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("spec", "lines", "killed"),
    [
        (None, "0 1 2 done", False),
        ("other.point", "0 1 2 done", False),
        ("demo.point", "0", True),
        ("demo.point@2", "0 1", True),
        ("x, demo.point@3", "0 1 2", True),
        ("demo.point@4", "0 1 2 done", False),
    ],
)
def test_crash_point_kills_at_the_chosen_hit(spec: str | None, lines: str, killed: bool) -> None:
    done = _run(spec)
    assert done.stdout.split() == lines.split()
    assert done.returncode == (-signal.SIGKILL if killed else 0)


def test_without_the_variable_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    crash_point("anything")
