"""Prometheus metrics of one server app, served as text at `GET /metrics`.

Each app owns its registry (two apps in one process never share a counter). Names, all prefixed
`gradient_`:

- `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}` (histogram);
  `route` is the route template (`/api/models/{model_id}/complete`), never a raw path.
- `engine_queue_depth{engine}` (completions waiting for a batch), `engine_queue_seconds{engine}`,
  `engine_batch_size{engine}`, `engine_generation_seconds{engine}` (per batch).
- `generated_tokens_total{engine}` and `generated_tokens_per_second{engine}` (over the last 60 s).
- `fine_tune_steps_total{engine}`, `fine_tune_duration_seconds{engine}`, `fine_tune_trainable_tokens_total{engine}`.
- `adapters{workspace}` (read from the catalogue at scrape time).
- `limit_rejections_total{status,reason}`: requests refused by a size or work limit (413/422/429).

Example::

    metrics = ServerMetrics()
    metrics.record_rejection(status=413, reason="body_too_large")
    body, content_type = metrics.render()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "ServerMetrics", "TokenRate", "record_rejection"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TRAIN_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class TokenRate:
    """Tokens per second over a sliding window of `window_s` one-second buckets.

    Example::

        rate = TokenRate(now=clock)
        rate.add(32)
        rate.per_second()
    """

    def __init__(self, window_s: int = 60, *, now: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._now = now
        self._start = now()
        self._buckets: dict[int, int] = {}

    def add(self, tokens: int) -> None:
        second = int(self._now())
        self._buckets[second] = self._buckets.get(second, 0) + tokens
        if len(self._buckets) > 2 * self.window_s:
            self._drop_old(second)

    def per_second(self) -> float:
        now = self._now()
        self._drop_old(int(now))
        span = min(float(self.window_s), max(now - self._start, 1.0))
        return sum(self._buckets.values()) / span

    def _drop_old(self, second: int) -> None:
        oldest = second - self.window_s
        for key in [k for k in self._buckets if k <= oldest]:
            del self._buckets[key]


class ServerMetrics:
    """The app's instruments. The middleware, the engine wrapper and the limit checks record here."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gradient_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "gradient_http_request_duration_seconds",
            "Time from request start to the end of the response",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "gradient_engine_queue_depth", "Completions waiting for an engine batch", ["engine"], registry=r
        )
        self.queue_seconds = Histogram(
            "gradient_engine_queue_seconds",
            "Time a completion waited before its batch started",
            ["engine"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "gradient_engine_batch_size", "Completions per engine batch", ["engine"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.generation_seconds = Histogram(
            "gradient_engine_generation_seconds",
            "Engine time per generation batch",
            ["engine"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("gradient_generated_tokens", "Tokens generated", ["engine"], registry=r)
        self.tokens_per_second = Gauge(
            "gradient_generated_tokens_per_second",
            "Tokens generated per second over the last 60 s",
            ["engine"],
            registry=r,
        )
        self.fine_tune_steps = Counter(
            "gradient_fine_tune_steps",
            "Fine-tune optimizer steps (1 per call when the engine reports none)",
            ["engine"],
            registry=r,
        )
        self.fine_tune_seconds = Histogram(
            "gradient_fine_tune_duration_seconds",
            "Engine time per fine-tune call",
            ["engine"],
            buckets=_TRAIN_BUCKETS,
            registry=r,
        )
        self.fine_tune_tokens = Counter(
            "gradient_fine_tune_trainable_tokens", "Trainable tokens seen by fine-tunes", ["engine"], registry=r
        )
        self.adapters = Gauge("gradient_adapters", "Model adapters per workspace", ["workspace"], registry=r)
        self.rejections = Counter(
            "gradient_limit_rejections",
            "Requests refused by a size or work limit",
            ["status", "reason"],
            registry=r,
        )
        self._rates: dict[str, TokenRate] = {}

    def record_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(duration_s)

    def record_rejection(self, *, status: int, reason: str) -> None:
        """Count one request refused by a limit (`status` 413, 422 or 429; `reason` a short snake_case word)."""
        self.rejections.labels(str(status), reason).inc()

    def record_tokens(self, engine: str, tokens: int) -> None:
        if tokens <= 0:
            return
        self.tokens.labels(engine).inc(tokens)
        rate = self._rates.get(engine)
        if rate is None:
            rate = self._rates[engine] = TokenRate()
        rate.add(tokens)

    def set_adapter_counts(self, counts: Mapping[str, int]) -> None:
        self.adapters.clear()
        for workspace, n in counts.items():
            self.adapters.labels(workspace).set(n)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        for engine, rate in self._rates.items():
            self.tokens_per_second.labels(engine).set(rate.per_second())
        return generate_latest(self.registry), CONTENT_TYPE


def record_rejection(target: Any, *, status: int, reason: str) -> None:
    """Count a limit rejection on the app that `target` belongs to: a `ServerState`, a FastAPI app or
    request, or an ASGI scope. Does nothing when the app has no metrics (e.g. a bare test app).

    Example::

        record_rejection(scope, status=413, reason="body_too_large")
        record_rejection(request, status=429, reason="queue_full")
    """
    metrics = _find_metrics(target)
    if metrics is not None:
        metrics.record_rejection(status=status, reason=reason)


def _find_metrics(target: Any) -> ServerMetrics | None:
    if isinstance(target, ServerMetrics):
        return target
    if isinstance(target, dict):  # an ASGI scope
        target = target.get("app")
    app = getattr(target, "app", target)  # a Request has .app
    state = getattr(getattr(app, "state", None), "gradient", None)
    if state is None:
        state = target
    metrics = getattr(state, "metrics", None)
    return metrics if isinstance(metrics, ServerMetrics) else None
