"""Fault knobs for tests and benchmarks: added latency, injected 503s, and a rate limit with Retry-After.

`FaultSettings` is mutable on purpose: change it while the server runs and the next
request sees the new values. Injected failures come from a seeded RNG, so a run repeats.

Example::

    faults = FaultSettings(latency_ms=20, fail_rate=0.1, rate_limit_rps=50, seed=7)
    faults.fail_rate = 0.0   # from now on, no injected 503s
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultDecision", "FaultInjector", "FaultSettings"]


@dataclass
class FaultSettings:
    """What the server does wrong on purpose; every field can be changed at run time.

    Args:
        latency_ms: milliseconds added before every `/api` answer.
        fail_rate: fraction (0–1) of `/api` requests answered 503.
        rate_limit_rps: requests per second allowed (token bucket, burst = max(1, rps));
            over it the answer is 429 with Retry-After. None: no limit.
        seed: seed of the RNG that picks the failing requests.

    Example::

        gradient_server.faults.rate_limit_rps = 5
    """

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    rate_limit_rps: float | None = None
    seed: int = 0
    _ready: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("latency_ms", "fail_rate", "rate_limit_rps", "seed"):
            _check(name, getattr(self, name))
        self._ready = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_ready", False):
            _check(name, value)
        super().__setattr__(name, value)


def _check(name: str, value: Any) -> None:
    if name == "latency_ms" and not (isinstance(value, (int, float)) and value >= 0):
        raise ValueError(f"latency_ms must be a number >= 0, got {value!r}")
    if name == "fail_rate" and not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise ValueError(f"fail_rate must be between 0 and 1, got {value!r}")
    if name == "rate_limit_rps" and value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"rate_limit_rps must be a number > 0 or None, got {value!r}")
    if name == "seed" and not isinstance(value, int):
        raise ValueError(f"seed must be an integer, got {value!r}")


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request: wait `delay_s`, then answer `status` (None: serve it)."""

    delay_s: float = 0.0
    status: int | None = None
    retry_after_s: float | None = None


class FaultInjector:
    """Turns `FaultSettings` into a decision per request (token bucket + seeded RNG)."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._seed = settings.seed
        self._rate: float | None = None
        self._tokens = 0.0
        self._stamp = 0.0

    def decide(self, now: float | None = None) -> FaultDecision:
        s = self.settings
        now = time.monotonic() if now is None else now
        if s.seed != self._seed:
            self._rng, self._seed = random.Random(s.seed), s.seed
        delay = s.latency_ms / 1000.0
        if s.rate_limit_rps is not None:
            wait = self._take(s.rate_limit_rps, now)
            if wait > 0:
                return FaultDecision(delay, 429, wait)
        else:
            self._rate = None
        if s.fail_rate > 0 and self._rng.random() < s.fail_rate:
            return FaultDecision(delay, 503)
        return FaultDecision(delay)

    def _take(self, rate: float, now: float) -> float:
        burst = max(1.0, rate)
        if self._rate != rate:
            self._rate, self._tokens, self._stamp = rate, burst, now
        self._tokens = min(burst, self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return max(0.001, (1.0 - self._tokens) / rate)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up, per HTTP) plus the precise retry-after-ms."""
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}
