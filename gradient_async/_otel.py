"""OpenTelemetry through the API only (extra `[otel]`): found lazily, a no-op until the application sets a
provider, and never a hard dependency.

`telemetry()` answers, per call, which of tracing and metrics are live: a tracer when a real tracer provider
is set, the client's instruments when a real meter provider is set, else None (the cost is two lookups).

Instruments (meter `gradient_async`):

- `gen_ai.client.operation.duration` (s): one per call, retries and waits included.
- `http.client.request.duration` (s): one per HTTP attempt.
- `gen_ai.client.token.usage` ({token}): tokens generated (`gen_ai.token.type=output`, from the server's
  `x-gradient-generated-tokens`) and trained on (`input`, from a fine-tune's answer).
- `gradient.client.retries`, `gradient.client.rate_limited` (429 answers).
- `gradient.batch.items` (`gradient.batch.outcome` = ok | failed), `gradient.batch.items.retried`.
- `gradient.client.limiter.window` and `gradient.client.limiter.pauses`, fed by the adaptive limiter.

Example::

    tel = telemetry()
    if tel is not None and tel.instruments is not None:
        tel.instruments.retries.add(1, {"gen_ai.operation.name": "text_completion"})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gradient_async._version import __version__

__all__ = ["Instruments", "Telemetry", "instruments", "record_limiter_pause", "record_limiter_window", "telemetry"]

SCOPE: Final = "gradient_async"
_DEFERRED: Final = frozenset(
    {
        ("opentelemetry.trace", "ProxyTracerProvider"),
        ("opentelemetry.trace", "NoOpTracerProvider"),
        ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
        ("opentelemetry.metrics._internal", "NoOpMeterProvider"),
    }
)
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)


@dataclass(frozen=True)
class Instruments:
    """The client's metric instruments on one meter provider."""

    call_duration: Any
    attempt_duration: Any
    tokens: Any
    retries: Any
    rate_limited: Any
    batch_items: Any
    batch_retried: Any
    window: Any
    pauses: Any

    @classmethod
    def create(cls, meter: Any) -> Instruments:
        return cls(
            call_duration=meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="Duration of one SDK call, retries and waits included",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            ),
            attempt_duration=meter.create_histogram(
                "http.client.request.duration",
                unit="s",
                description="Duration of one HTTP attempt",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            ),
            tokens=meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Tokens per call: generated (output) or trained on (input)",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            ),
            retries=meter.create_counter("gradient.client.retries", unit="{retry}", description="Retries scheduled"),
            rate_limited=meter.create_counter(
                "gradient.client.rate_limited", unit="{response}", description="429 answers received"
            ),
            batch_items=meter.create_counter(
                "gradient.batch.items", unit="{item}", description="Batch items finished, by outcome"
            ),
            batch_retried=meter.create_counter(
                "gradient.batch.items.retried", unit="{retry}", description="Retries of batch items"
            ),
            window=meter.create_up_down_counter(
                "gradient.client.limiter.window",
                unit="{request}",
                description="The adaptive limiter's concurrency window (its changes are added)",
            ),
            pauses=meter.create_counter(
                "gradient.client.limiter.pauses", unit="{pause}", description="Client-wide pauses after a 429"
            ),
        )


@dataclass(frozen=True)
class Telemetry:
    """What is live for one call: `tracer` (None: no spans) and `instruments` (None: no metrics)."""

    tracer: Any | None
    instruments: Instruments | None


class _State:
    api: Any = None  # (trace, metrics) modules once imported; False when opentelemetry is not installed
    tracer_provider: Any = None
    tracer: Any = None
    meter_provider: Any = None
    instruments: Instruments | None = None
    last: Telemetry | None = None


def _live(provider: Any) -> bool:
    cls = type(provider)
    return (cls.__module__, cls.__name__) not in _DEFERRED


def telemetry() -> Telemetry | None:
    """The live tracer and instruments, or None when neither a tracer nor a meter provider is set."""
    api = _State.api
    if api is None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            _State.api = api = False
        else:
            _State.api = api = (trace, metrics)
    if api is False:
        return None
    trace, metrics = api
    tp = trace.get_tracer_provider()
    mp = metrics.get_meter_provider()
    if tp is _State.tracer_provider and mp is _State.meter_provider:
        return _State.last
    tracer = tp.get_tracer(SCOPE, __version__) if _live(tp) else None
    instruments = Instruments.create(mp.get_meter(SCOPE, __version__)) if _live(mp) else None
    _State.tracer_provider, _State.tracer = tp, tracer
    _State.meter_provider, _State.instruments = mp, instruments
    _State.last = None if tracer is None and instruments is None else Telemetry(tracer, instruments)
    return _State.last


def instruments() -> Instruments | None:
    """The live metric instruments (for the batch runner and the limiter), or None."""
    tel = telemetry()
    return tel.instruments if tel is not None else None


def record_limiter_window(size: int, previous: int) -> None:
    """The adaptive limiter's window moved from `previous` to `size` (call it on every change)."""
    inst = instruments()
    if inst is not None and size != previous:
        inst.window.add(size - previous)


def record_limiter_pause(seconds: float) -> None:
    """The adaptive limiter paused the whole client for `seconds` after a 429."""
    inst = instruments()
    if inst is not None:
        inst.pauses.add(1)
