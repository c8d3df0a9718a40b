"""Crash points for kill -9 tests: `crash_point(name)` kills this process with SIGKILL when asked to.

Set `GRADIENT_ASYNC_CRASH_AT` to `name` or `name@N` (the N-th time it is reached in this process;
default 1), several separated by commas. Otherwise a crash point is one dict lookup.

Example::

    crash_point("test_engine.before_rename")   # GRADIENT_ASYNC_CRASH_AT=test_engine.before_rename
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]

_hits: dict[str, int] = {}


def _targets() -> dict[str, int]:
    spec = os.environ.get("GRADIENT_ASYNC_CRASH_AT", "")
    targets: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition("@")
        targets[name] = int(nth) if nth.isdigit() else 1
    return targets


_TARGETS = _targets()


def crash_point(name: str) -> None:
    """SIGKILL this process if `GRADIENT_ASYNC_CRASH_AT` names this point (and this is the N-th hit)."""
    nth = _TARGETS.get(name)
    if nth is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
