"""How a batch's item spans should hang off the batch span: as children, or as linked roots? Measured in one run.

Each item makes what a real item makes (an item span, its call span and one attempt span) under an SDK tracer
provider with a BatchSpanProcessor and an exporter that drops everything; the batch span is opened once. Shapes:

- children: every item span is a child of the batch span (one trace holds the whole batch);
- links: every item span starts its own trace and carries one link to the batch span.

Printed per shape: CPU per item (without tracemalloc), peak traced memory (a second pass), the largest trace
(spans under one trace id), and what a 1% head sampler (ParentBased(TraceIdRatioBased(0.01)), the usual way to
afford 10^6 items) keeps: with children the batch is kept or dropped whole, with links ~1% of the items are
kept. JSON goes to benchmarks/results/tracing_batch.json.

Run::

    .venv/bin/python benchmarks/tracing_batch.py                # 100,000 items per shape
    .venv/bin/python benchmarks/tracing_batch.py --items 20000
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind

RESULTS = Path(__file__).resolve().parent / "results" / "tracing_batch.json"


class CountingExporter(SpanExporter):
    """Drops spans, counting them per trace id (what a backend would have to hold per trace)."""

    def __init__(self) -> None:
        self.per_trace: Counter[int] = Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for s in spans:
            assert s.context is not None
            self.per_trace[s.context.trace_id] += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def run(shape: str, items: int, *, trace_memory: bool = False, ratio: float | None = None) -> dict[str, Any]:
    exporter = CountingExporter()
    sampler = ParentBased(TraceIdRatioBased(ratio)) if ratio is not None else None
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16, schedule_delay_millis=200))
    tracer = provider.get_tracer("bench")
    gc.collect()
    if trace_memory:
        tracemalloc.start()
    cpu = time.process_time()
    batch = tracer.start_span("gradient.batch", attributes={"gradient.batch.size": items})
    batch_ctx = trace.set_span_in_context(batch)
    links = [Link(batch.get_span_context())]
    for _ in range(items):
        if shape == "children":
            item = tracer.start_span("gradient.batch.item", context=batch_ctx)
        else:
            item = tracer.start_span("gradient.batch.item", context=Context(), links=links)
        call = tracer.start_span("text_completion m", context=trace.set_span_in_context(item), kind=SpanKind.CLIENT)
        attempt = tracer.start_span("POST", context=trace.set_span_in_context(call), kind=SpanKind.CLIENT)
        attempt.end()
        call.end()
        item.end()
    batch.end()
    provider.force_flush()
    cpu = time.process_time() - cpu
    peak = 0
    if trace_memory:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    provider.shutdown()
    return {
        "shape": shape,
        "items": items,
        "cpu_us_per_item": round(cpu / items * 1e6, 2),
        "peak_mib": round(peak / 2**20, 1),
        "traces": len(exporter.per_trace),
        "largest_trace_spans": max(exporter.per_trace.values(), default=0),
        "spans_exported": sum(exporter.per_trace.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sample-runs", type=int, default=5, help="runs with a 1%% sampler per shape")
    args = parser.parse_args(argv)
    rows = []
    for shape in ("children", "links"):
        row = run(shape, args.items)  # CPU without tracemalloc (it slows every allocation)
        row["peak_mib"] = run(shape, args.items, trace_memory=True)["peak_mib"]
        sampled = [run(shape, args.items, ratio=0.01)["spans_exported"] for _ in range(args.sample_runs)]
        row["sampled_1pct_spans_kept"] = sampled
        rows.append(row)
    base = rows[0]["cpu_us_per_item"]
    print(f"{args.items} items per shape; spans kept by a 1% sampler over {args.sample_runs} runs")
    header = (
        f"{'shape':<10} {'CPU µs/item':>12} {'vs children':>12} {'peak MiB':>9} {'traces':>8} {'largest trace':>14}"
    )
    print(f"{header}  1% sampler kept")
    for r in rows:
        ratio = r["cpu_us_per_item"] / base if base else float("nan")
        print(
            f"{r['shape']:<10} {r['cpu_us_per_item']:>12.2f} {ratio:>11.2f}x {r['peak_mib']:>9.1f} "
            f"{r['traces']:>8} {r['largest_trace_spans']:>14}  {r['sampled_1pct_spans_kept']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"python": sys.version.split()[0], "machine": platform.machine(), "rows": rows}, indent=2) + "\n"
    )
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
