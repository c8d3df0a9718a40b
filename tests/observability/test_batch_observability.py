"""Batches: one batch span, one linked trace per item holding its calls, item counters, hooks from the batch loop."""

from __future__ import annotations

from typing import Any

from gradient_async import AsyncGradient, RetryPolicy
from gradient_async._hooks import CallEvent, Hooks, RetryEvent
from gradient_async.testing import GradientServer

from .conftest import Otel


async def no_sleep(seconds: float) -> None:
    return None


def client_for(srv: GradientServer, **kwargs: Any) -> AsyncGradient:
    kwargs.setdefault("retry", RetryPolicy(sleep=no_sleep))
    return srv.make_client(**kwargs)


async def test_batch_span_items_linked_and_their_calls_as_children(gradient_server: GradientServer, otel: Otel) -> None:
    faults = gradient_server.faults
    faults.fail_rate = 1.0
    retries: list[RetryEvent] = []

    def heal(event: RetryEvent) -> None:
        retries.append(event)
        faults.fail_rate = 0.0

    client = client_for(gradient_server, hooks=Hooks(on_retry=[heal]))
    base = gradient_server.base_model_ids[-1]
    result = await client.completions.batch(base, ["a", "b", "c", ""], max_concurrency=1)
    assert result.ok == 3 and result.failed == 1  # the empty prompt fails alone, before any request

    [batch] = otel.spans("gradient.batch")
    assert batch.attributes["gradient.batch.size"] == 4
    assert (batch.attributes["gradient.batch.ok"], batch.attributes["gradient.batch.failed"]) == (3, 1)
    assert batch.attributes["gradient.batch.retried"] == 1
    items = otel.spans("gradient.batch.item")
    assert len(items) == 4
    for item in items:
        assert item.parent is None  # each item is its own trace...
        assert [link.context.span_id for link in item.links] == [batch.context.span_id]  # ...linked to the batch
    calls = otel.spans(f"text_completion {base}")
    by_item = {i.context.span_id: i for i in items}
    assert all(c.parent.span_id in by_item for c in calls)
    assert len(calls) == 4  # a: 503 then 200 (two calls: the batch retries), b, c
    servers = otel.spans(kind="SERVER")
    item_traces = {i.context.trace_id for i in items}
    assert {s.context.trace_id for s in servers} <= item_traces  # the server continued each item's trace
    failed = [i for i in items if i.attributes.get("error.type")]
    assert len(failed) == 1 and failed[0].attributes["gradient.attempts"] == 0
    assert [e.name for i in items for e in i.events] == ["gradient.retry"]

    assert [r.attempt for r in retries] == [1]  # the batch's own retry reached the client's hooks
    op = {"gen_ai.operation.name": "text_completion"}
    assert otel.total("gradient.batch.items", **op, **{"gradient.batch.outcome": "ok"}) == 3
    assert otel.total("gradient.batch.items", **op, **{"gradient.batch.outcome": "failed"}) == 1
    assert otel.total("gradient.batch.items.retried", **op) == 1


async def test_batch_calls_reach_the_hooks_without_opentelemetry(gradient_server: GradientServer) -> None:
    ends: list[CallEvent] = []
    client = client_for(gradient_server, hooks=Hooks(on_call_end=[ends.append]))
    base = gradient_server.base_model_ids[-1]
    await client.completions.batch(base, ["a", "b"])
    assert len(ends) == 2 and all(e.error is None and e.attempts == 1 for e in ends)


async def test_embeddings_batch_is_observed_too(gradient_server: GradientServer, otel: Otel) -> None:
    client = client_for(gradient_server)
    slug = (await client.embeddings.list())[0].slug
    await client.embeddings.batch(slug, ["x", "y", "z"], chunk_size=2)
    [batch] = otel.spans("gradient.batch")
    assert batch.attributes["gen_ai.operation.name"] == "embeddings"
    assert len(otel.spans("gradient.batch.item")) == 2
