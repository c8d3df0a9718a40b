"""OpenTelemetry SDK fixtures: in-memory span and metric exporters installed as the global providers for one
test, then removed again (the API allows setting a provider once per process, so the test resets its globals)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gradient_async.testing import gradient_server, gradient_server_url, mock_gradient

__all__ = ["Otel", "gradient_server", "gradient_server_url", "mock_gradient", "otel"]

pytest.importorskip("opentelemetry.sdk")


@dataclass
class Otel:
    exporter: Any  # InMemorySpanExporter
    reader: Any  # InMemoryMetricReader

    def spans(self, name: str | None = None, *, kind: str | None = None, scope: str | None = None) -> list[Any]:
        """Finished spans, optionally by name, kind ("CLIENT", "SERVER", ...) and instrumentation scope."""
        found = list(self.exporter.get_finished_spans())
        return [
            s
            for s in found
            if (name is None or s.name == name)
            and (kind is None or s.kind.name == kind)
            and (scope is None or s.instrumentation_scope.name == scope)
        ]

    def points(self, name: str) -> list[Any]:
        """The data points of metric `name` collected now (empty when it was never recorded)."""
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out

    def total(self, name: str, **attrs: Any) -> float:
        """Sum of a counter's values (or a histogram's counts) over points whose attributes include `attrs`."""
        total = 0.0
        for p in self.points(name):
            if all(p.attributes.get(k) == v for k, v in attrs.items()):
                total += p.count if hasattr(p, "count") else p.value
        return total


def _reset_globals() -> None:
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


@pytest.fixture
def otel() -> Iterator[Otel]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    _reset_globals()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Otel(exporter, reader)
    finally:
        _reset_globals()
        tracer_provider.shutdown()
        meter_provider.shutdown()
