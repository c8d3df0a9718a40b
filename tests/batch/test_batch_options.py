"""Batch options live in one object; batch calls go through the resources."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from gradient_async import AsyncGradient, InputValidationError
from gradient_async.batch import BatchKwargs, BatchOptions
from gradient_async.resources.completions import AsyncCompletions
from gradient_async.resources.embeddings import AsyncEmbeddings

from .conftest import MODEL, FakeServer


def test_keywords_and_options_object_name_the_same_options() -> None:
    assert set(BatchKwargs.__optional_keys__) == {f.name for f in dataclasses.fields(BatchOptions)}


def test_options_object_validates() -> None:
    with pytest.raises(InputValidationError, match="requests_per_minute"):
        BatchOptions(requests_per_minute=float("inf"))
    with pytest.raises(InputValidationError, match="retry"):
        BatchOptions(retry="twice")  # type: ignore[arg-type]


async def test_options_object_and_keywords_combine(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    server.latency = 0.001
    seen: list[tuple[int, int | None, int, int]] = []
    opts = BatchOptions(max_concurrency=2, progress=lambda *a: seen.append(a))
    async with make_client() as client:
        result = await client.completions.batch(MODEL, ["a", "b", "c"], options=opts, max_concurrency=1)
    assert result.ok == 3 and server.max_in_flight == 1  # the keyword overrode the object
    assert seen[-1] == (3, 3, 3, 0)


async def test_a_bad_setting_fails_before_anything_is_sent(
    make_client: Callable[..., AsyncGradient], server: FakeServer
) -> None:
    async with make_client() as client:
        with pytest.raises(InputValidationError, match="temprature"):
            await client.completions.batch(MODEL, ["a", "b"], temprature=0.5)  # type: ignore[call-arg]
        with pytest.raises(InputValidationError, match="unknown embeddings batch option"):
            await client.embeddings.batch("bge", ["a"], temperature=0.5)  # type: ignore[call-arg]
    assert not server.requests


async def test_batch_calls_go_through_the_resources(
    make_client: Callable[..., AsyncGradient], server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    create, embed = AsyncCompletions.create, AsyncEmbeddings.create

    async def spy_create(self: AsyncCompletions, model_id: str, **kwargs: Any) -> Any:
        calls.append({"kind": "complete", **kwargs})
        return await create(self, model_id, **kwargs)

    async def spy_embed(self: AsyncEmbeddings, slug: str, **kwargs: Any) -> Any:
        calls.append({"kind": "embed", **kwargs})
        return await embed(self, slug, **kwargs)

    monkeypatch.setattr(AsyncCompletions, "create", spy_create)
    monkeypatch.setattr(AsyncEmbeddings, "create", spy_embed)
    async with make_client() as client:
        await client.completions.batch(MODEL, ["a"], max_generated_token_count=5)
        await client.embeddings.batch("bge-large", ["x", "y"])
    assert [c["kind"] for c in calls] == ["complete", "embed"]
    assert calls[0]["max_retries"] == 0 and calls[0]["max_generated_token_count"] == 5  # the batch retries
    assert calls[1]["max_retries"] == 0


@pytest.mark.parametrize("prompts", [None, "one string", b"bytes", 42])
async def test_prompts_that_are_not_an_iterable_of_prompts_are_refused(
    make_client: Callable[..., AsyncGradient], server: FakeServer, prompts: Any
) -> None:
    async with make_client() as client:
        with pytest.raises(InputValidationError, match="prompts must be an iterable"):
            await client.completions.batch(MODEL, prompts)
        with pytest.raises(InputValidationError, match="fail_fast"):
            await client.completions.batch(MODEL, ["a"], fail_fast="yes")  # type: ignore[arg-type]
    assert not server.requests
