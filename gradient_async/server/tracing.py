"""Server spans through the OpenTelemetry API, without a hard dependency.

With the `[otel]` extra installed and a tracer provider set by the application, the server continues the
caller's trace from its `traceparent` header; without either, every function here is a cheap no-op.

Example::

    tracer = server_tracer()
    if tracer is not None:
        ...  # opentelemetry.trace.Tracer
"""

from __future__ import annotations

from typing import Any

from gradient_async._version import __version__

__all__ = ["server_tracer"]

_SCOPE = "gradient_async.server"


def server_tracer() -> Any | None:
    """The server's tracer when `opentelemetry` imports and a real tracer provider is set, else None."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer(_SCOPE, __version__)
