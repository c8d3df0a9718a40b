"""Every endpoint's request shape (method, path, headers, wire body) and response parsing."""

from __future__ import annotations

import httpx
import pytest

from gradient_async import (
    AsyncGradient,
    BaseModelHandle,
    Completion,
    FineTuneResult,
    InputValidationError,
    ModelAdapter,
    Sample,
    StructuredInput,
)
from gradient_async._client import USER_AGENT

from .conftest import ADAPTER_ID, BASE_ID, TOKEN, WORKSPACE, FakeAPI

BASE_JSON = {
    "id": BASE_ID,
    "name": "Nous Hermes 2",
    "slug": "nous-hermes2",
    "type": "baseModel",
    "capabilities": ["complete", "fineTune"],
}
ADAPTER_JSON = {
    "id": ADAPTER_ID,
    "name": "my-adapter",
    "baseModelId": BASE_ID,
    "latestUpdateTime": "2024-01-10T12:00:00.000Z",
    "type": "modelAdapter",
    "futureField": {"kept": True},
}


def assert_common_headers(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-gradient-workspace-id"] == WORKSPACE
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT


async def test_list_models_parses_both_kinds(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json={"models": [BASE_JSON, ADAPTER_JSON]}))
    models = await client.models.list()
    request = api.requests[0]
    assert request.url.params["onlyBase"] == "False"
    assert request.url.params["capability"] == "any"
    assert_common_headers(request)
    assert "content-type" not in request.headers
    base, adapter = models
    assert (
        isinstance(base, BaseModelHandle)
        and base.slug == "nous-hermes2"
        and base.capabilities == ["complete", "fineTune"]
    )
    assert isinstance(adapter, ModelAdapter) and adapter.base_model_id == BASE_ID
    assert adapter.latest_update_time is not None and adapter.latest_update_time.year == 2024
    assert adapter.model_extra == {"futureField": {"kept": True}}


async def test_list_models_only_base_and_capability(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/models", httpx.Response(200, json={"models": [BASE_JSON]}))
    await client.models.list(only_base=True, capability="fineTune")
    assert api.requests[0].url.query == b"onlyBase=True&capability=fineTune"
    await client.models.list(only_base=True, capability=None)
    assert api.requests[1].url.query == b"onlyBase=True"


async def test_get_and_delete_model(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", f"/api/models/{ADAPTER_ID}", httpx.Response(200, json=ADAPTER_JSON))
    api.add("DELETE", f"/api/models/{ADAPTER_ID}", httpx.Response(200, json={}))
    model = await client.models.get(ADAPTER_ID)
    assert isinstance(model, ModelAdapter) and model.name == "my-adapter"
    await client.models.delete(ADAPTER_ID)
    delete = api.requests[1]
    assert delete.method == "DELETE" and delete.content == b"" and "content-type" not in delete.headers
    with pytest.raises(InputValidationError, match="model_id"):  # its own parameter's name, not adapter_id's
        await client.models.delete("")


async def test_path_ids_are_percent_encoded(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("DELETE", "/api/models/a%2Fb", httpx.Response(200, content=b""))
    await client.adapters.delete("a/b")
    assert api.requests[0].url.raw_path == b"/api/models/a%2Fb"


async def test_create_adapter_sends_full_hyperparameter_shape(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("POST", "/api/models", httpx.Response(200, json={"id": ADAPTER_ID}))
    adapter = await client.adapters.create(base_model_id=BASE_ID, name="my_model_adapter")
    assert api.body() == {
        "model": {"baseModelId": BASE_ID, "name": "my_model_adapter"},
        "initialHyperparameters": {"loraHyperparameters": {"rank": None}, "trainingArguments": {"learningRate": None}},
    }
    assert api.requests[0].headers["content-type"] == "application/json"
    assert adapter.id == ADAPTER_ID and adapter.name == "my_model_adapter" and adapter.base_model_id == BASE_ID
    await client.adapters.create(base_model_id=BASE_ID, name="x", rank=8, learning_rate=0.001)
    assert api.body()["initialHyperparameters"] == {
        "loraHyperparameters": {"rank": 8},
        "trainingArguments": {"learningRate": 0.001},
    }


async def test_get_adapter(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", f"/api/models/{ADAPTER_ID}", httpx.Response(200, json=ADAPTER_JSON))
    adapter = await client.adapters.get(ADAPTER_ID)
    assert adapter.client is client and adapter.name == "my-adapter"


async def test_complete_sends_nulls_like_the_official_sdk(client: AsyncGradient, api: FakeAPI) -> None:
    api.add(
        "POST",
        f"/api/models/{ADAPTER_ID}/complete",
        httpx.Response(200, json={"finishReason": "length", "generatedOutput": " Paris."}),
    )
    out = await client.completions.create(ADAPTER_ID, query="Capital of France?", max_generated_token_count=50)
    assert out == Completion(finish_reason="length", generated_output=" Paris.")
    assert api.body() == {
        "query": "Capital of France?",
        "maxGeneratedTokenCount": 50,
        "temperature": None,
        "topK": None,
        "topP": None,
        "autoTemplate": None,
        "guidance": None,
        "rag": None,
    }


async def test_complete_guidance_and_rag_wire_names(client: AsyncGradient, api: FakeAPI) -> None:
    api.add(
        "POST",
        f"/api/models/{BASE_ID}/complete",
        httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "yes"}),
    )
    await client.completions.create(
        BASE_ID,
        query="q",
        temperature=0.7,
        top_k=50,
        top_p=0.9,
        auto_template=False,
        guidance={"type": "choice", "value": ["yes", "no"]},
        rag={"collection_id": "col-1"},
    )
    body = api.body()
    assert body["guidance"] == {"type": "choice", "value": ["yes", "no"]}
    assert body["rag"] == {"collectionId": "col-1"}
    assert (body["temperature"], body["topK"], body["topP"], body["autoTemplate"]) == (0.7, 50, 0.9, False)


async def test_fine_tune_plain_and_structured_samples(client: AsyncGradient, api: FakeAPI) -> None:
    api.add(
        "POST",
        f"/api/models/{ADAPTER_ID}/fine-tune",
        httpx.Response(200, json={"numberOfTrainableTokens": 42, "sumLoss": 12.5}),
    )
    result = await client.fine_tunes.create(
        ADAPTER_ID,
        samples=[
            "### Instruction: Say hi\n\n### Response: Hi!",
            {
                "inputs": [
                    {"value": "### Instruction: Say bye\n\n### Response:", "trainable": False},
                    {"value": " Bye!"},
                ],
                "multiplier": 2.0,
            },
            Sample(inputs=[StructuredInput(value="x", parse_special_tokens=False)]),
        ],
    )
    assert result == FineTuneResult(number_of_trainable_tokens=42, sum_loss=12.5)
    assert result.mean_loss == pytest.approx(12.5 / 42)
    assert api.body() == {
        "samples": [
            {"inputs": "### Instruction: Say hi\n\n### Response: Hi!", "fineTuningParameters": {"multiplier": None}},
            {
                "inputs": [
                    {
                        "value": "### Instruction: Say bye\n\n### Response:",
                        "trainable": False,
                        "parseSpecialTokens": True,
                    },
                    {"value": " Bye!", "trainable": True, "parseSpecialTokens": True},
                ],
                "fineTuningParameters": {"multiplier": 2.0},
            },
            {
                "inputs": [{"value": "x", "trainable": True, "parseSpecialTokens": False}],
                "fineTuningParameters": {"multiplier": None},
            },
        ]
    }


async def test_fine_tune_default_multiplier(client: AsyncGradient, api: FakeAPI) -> None:
    api.add(
        "POST",
        f"/api/models/{ADAPTER_ID}/fine-tune",
        httpx.Response(200, json={"numberOfTrainableTokens": 0, "sumLoss": 0.0}),
    )
    result = await client.fine_tunes.create(
        ADAPTER_ID, samples=["a", {"inputs": "b", "multiplier": 3.0}], multiplier=0.5
    )
    assert [s["fineTuningParameters"]["multiplier"] for s in api.body()["samples"]] == [0.5, 3.0]
    assert result.mean_loss is None


async def test_embeddings_list_and_create(client: AsyncGradient, api: FakeAPI) -> None:
    api.add("GET", "/api/embeddings", httpx.Response(200, json={"embeddingsModels": [{"slug": "bge-large"}]}))
    api.add(
        "POST",
        "/api/embeddings/bge-large",
        httpx.Response(
            200, json={"embeddings": [{"embedding": [0.1, 0.2], "index": 0}, {"embedding": [0.3], "index": 1}]}
        ),
    )
    models = await client.embeddings.list()
    assert [m.slug for m in models] == ["bge-large"]
    resp = await client.embeddings.create("bge-large", inputs=["hello", "world"])
    assert api.body() == {"inputs": [{"input": "hello"}, {"input": "world"}]}
    assert [e.index for e in resp.embeddings] == [0, 1] and resp.embeddings[0].embedding == [0.1, 0.2]


async def test_object_handles_tell_the_seed_story(client: AsyncGradient, api: FakeAPI) -> None:
    new_id = "22222222-2222-3333-4444-555555555555_model_adapter"
    api.add("GET", "/api/models", httpx.Response(200, json={"models": [BASE_JSON]}))
    api.add("POST", "/api/models", httpx.Response(200, json={"id": new_id}))
    api.add(
        "POST",
        f"/api/models/{new_id}/complete",
        httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "Dallas Cowboys!"}),
    )
    api.add(
        "POST",
        f"/api/models/{new_id}/fine-tune",
        httpx.Response(200, json={"numberOfTrainableTokens": 27, "sumLoss": 87.0}),
    )
    api.add("DELETE", f"/api/models/{new_id}", httpx.Response(200, json={}))
    base = (await client.models.list(only_base=True))[-1]
    assert isinstance(base, BaseModelHandle)
    adapter = await base.create_adapter(name="my_model_adapter")
    query = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
    ft = await adapter.fine_tune(samples=[{"inputs": query + " Dallas Cowboys!"}])
    assert ft.number_of_trainable_tokens == 27
    assert (await adapter.complete(query=query)).generated_output == "Dallas Cowboys!"
    await adapter.delete()
    assert [r.method for r in api.requests] == ["GET", "POST", "POST", "POST", "DELETE"]


def test_unbound_handle_says_how_to_fix() -> None:
    from gradient_async import ClientClosedError

    handle = ModelAdapter(id=ADAPTER_ID, name="n", base_model_id=BASE_ID)
    with pytest.raises(ClientClosedError, match=r"client\.models"):
        _ = handle.client
