"""Bad input is rejected with a message naming the field, before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from gradient_async import AsyncGradient, InputValidationError

from .conftest import ADAPTER_ID, FakeAPI


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "q", "max_generated_token_count": 512}, "max_generated_token_count"),
        ({"query": "q", "max_generated_token_count": 0}, "max_generated_token_count"),
        ({"query": "q", "temperature": -0.1}, "temperature"),
        ({"query": "q", "top_k": 0}, "top_k"),
        ({"query": "q", "top_p": 1.5}, "top_p"),
        ({"query": "q", "guidance": {"type": "choice", "value": []}}, "guidance.value"),
        ({"query": "q", "guidance": {"type": "choice", "value": ["x" * 33]}}, "guidance.value"),
        ({"query": "q", "guidance": {"type": "regex", "value": ["a"]}}, "guidance.type"),
        ({"query": "q", "rag": {"collection_id": ""}}, "rag.collection_id"),
        ({"query": "q", "bogus": 1}, "bogus"),
    ],
)
async def test_bad_completion_input(client: AsyncGradient, api: FakeAPI, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputValidationError, match=field.replace(".", r"\.")):
        await client.completions.create(ADAPTER_ID, **kwargs)
    assert api.requests == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_model_id": "", "name": "n"}, "base_model_id"),
        ({"base_model_id": "b", "name": ""}, "name"),
        ({"base_model_id": "b", "name": "n", "rank": 33}, "rank"),
        ({"base_model_id": "b", "name": "n", "rank": 0}, "rank"),
        ({"base_model_id": "b", "name": "n", "learning_rate": 1.0}, "learning_rate"),
        ({"base_model_id": "b", "name": "n", "learning_rate": 0}, "learning_rate"),
    ],
)
async def test_bad_adapter_input(client: AsyncGradient, api: FakeAPI, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputValidationError, match=field):
        await client.adapters.create(**kwargs)
    assert api.requests == []


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([], "samples"),
        ("just a string", "list of samples"),
        ([""], "inputs"),
        ([{"inputs": []}], "inputs"),
        ([{"inputs": [{"value": ""}]}], "value"),
        ([{"inputs": "x", "multiplier": 0}], "multiplier"),
        ([42], "a sample must be"),
        ([{"text": "x"}], "inputs"),
    ],
)
async def test_bad_fine_tune_input(client: AsyncGradient, api: FakeAPI, samples: Any, message: str) -> None:
    with pytest.raises(InputValidationError, match=message):
        await client.fine_tunes.create(ADAPTER_ID, samples=samples)
    assert api.requests == []


@pytest.mark.parametrize("inputs", [[], [""], ["x"] * 257, "text"])
async def test_bad_embeddings_input(client: AsyncGradient, api: FakeAPI, inputs: Any) -> None:
    with pytest.raises(InputValidationError):
        await client.embeddings.create("bge-large", inputs=inputs)
    assert api.requests == []


@pytest.mark.parametrize("bad_id", ["", "   ", None, 5])
async def test_empty_ids_are_rejected(client: AsyncGradient, api: FakeAPI, bad_id: Any) -> None:
    with pytest.raises(InputValidationError, match="non-empty"):
        await client.completions.create(bad_id, query="q")
    with pytest.raises(InputValidationError, match="non-empty"):
        await client.models.get(bad_id)
    assert api.requests == []


async def test_validation_error_has_no_deep_traceback(client: AsyncGradient) -> None:
    with pytest.raises(InputValidationError) as info:
        await client.completions.create(ADAPTER_ID, query="")
    assert info.value.__cause__ is None and info.value.__suppress_context__
