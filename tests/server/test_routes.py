"""Every route and error path, through our SDK against the in-process server (`gradient_server`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gradient_async import (
    AuthenticationError,
    BadRequestError,
    BaseModelHandle,
    ModelAdapter,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from gradient_async._errors import InternalServerError
from gradient_async.demo import ANSWER as SEED_ANSWER
from gradient_async.demo import QUESTION as SEED_QUESTION
from gradient_async.testing import TEST_TOKEN, TEST_WORKSPACE, GradientServer

HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}", "x-gradient-workspace-id": TEST_WORKSPACE}


async def raw(
    srv: GradientServer, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    """A request with no SDK in between (to send what the SDK would refuse to send)."""
    transport = httpx.ASGITransport(app=srv.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as http:
        return await http.request(method, path, headers=HEADERS if headers is None else headers, **kw)


async def new_adapter(srv: GradientServer) -> ModelAdapter:
    base = (await srv.client.models.list(only_base=True))[-1]
    assert isinstance(base, BaseModelHandle)
    return await base.create_adapter(name="my_model_adapter")


async def test_seed_story(gradient_server: GradientServer) -> None:
    client = gradient_server.client
    bases = await client.models.list(only_base=True)
    assert [b.type for b in bases] == ["baseModel", "baseModel"]
    assert all(len(b.id) == 50 and b.id.endswith("_base_ml_model") for b in bases)
    adapter = await new_adapter(gradient_server)
    assert len(adapter.id) == 50 and adapter.id.endswith("_model_adapter")
    before = await adapter.complete(query=SEED_QUESTION)
    assert "Dallas" not in before.generated_output
    tuned = await adapter.fine_tune(samples=[SEED_QUESTION + SEED_ANSWER])
    assert tuned.number_of_trainable_tokens == 22 and tuned.sum_loss > 0
    after = await adapter.complete(query=SEED_QUESTION)
    assert (after.generated_output, after.finish_reason) == ("Dallas Cowboys!", "stop")
    again = await adapter.fine_tune(samples=[SEED_QUESTION + SEED_ANSWER])
    assert again.sum_loss < tuned.sum_loss
    await adapter.delete()
    assert [m.id for m in await client.models.list()] == [b.id for b in bases]
    assert [(c.method, c.status) for c in gradient_server.calls][-1] == ("GET", 200)


async def test_list_filters_and_describe(gradient_server: GradientServer) -> None:
    adapter = await new_adapter(gradient_server)
    models = await gradient_server.client.models.list()
    assert [m.type for m in models] == ["baseModel", "baseModel", "modelAdapter"]
    for only_base in ("True", "true", "1"):
        r = await raw(gradient_server, "GET", f"/api/models?onlyBase={only_base}&capability=complete")
        assert r.status_code == 200 and [m["type"] for m in r.json()["models"]] == ["baseModel"] * 2
    r = await raw(gradient_server, "GET", "/api/models")  # capability defaults to fineTune
    assert len(r.json()["models"]) == 3
    got = await gradient_server.client.models.get(adapter.id)
    assert isinstance(got, ModelAdapter) and got.name == "my_model_adapter" and got.latest_update_time is not None
    wire = (await raw(gradient_server, "GET", f"/api/models/{adapter.id}")).json()
    assert set(wire) == {"id", "name", "baseModelId", "latestUpdateTime", "type"}
    assert wire["latestUpdateTime"].endswith("Z")
    base = await gradient_server.client.models.get(gradient_server.base_model_ids[0])
    assert isinstance(base, BaseModelHandle) and base.slug == "gradient-test-model-mini"


async def test_create_accepts_official_sdk_shape(gradient_server: GradientServer) -> None:
    body = {
        "model": {"baseModelId": gradient_server.base_model_ids[-1], "name": "x"},
        "initialHyperparameters": {"loraHyperparameters": {"rank": None}, "trainingArguments": {"learningRate": None}},
    }
    r = await raw(gradient_server, "POST", "/api/models", json=body)
    assert r.status_code == 200 and len(r.json()["id"]) == 50
    body["initialHyperparameters"] = None
    assert (await raw(gradient_server, "POST", "/api/models", json=body)).status_code == 200
    adapter = await gradient_server.client.adapters.create(
        base_model_id=gradient_server.base_model_ids[-1], name="ranked", rank=8, learning_rate=0.01
    )
    record = await gradient_server.state.store.get_adapter(adapter.id, workspace=TEST_WORKSPACE)
    assert record is not None and (record.rank, record.learning_rate) == (8, 0.01)


async def test_complete_with_explicit_nulls_base_model_and_guidance(gradient_server: GradientServer) -> None:
    body = {
        "query": "Hello",
        "maxGeneratedTokenCount": None,
        "temperature": None,
        "topK": None,
        "topP": None,
        "autoTemplate": None,
        "guidance": None,
        "rag": None,
    }
    base_id = gradient_server.base_model_ids[-1]
    r = await raw(gradient_server, "POST", f"/api/models/{base_id}/complete", json=body)
    assert r.status_code == 200 and set(r.json()) == {"finishReason", "generatedOutput"}
    out = await gradient_server.client.completions.create(
        base_id, query="Pick", guidance={"type": "choice", "value": ["red", "green"]}
    )
    assert out.generated_output in ("red", "green")
    short = await gradient_server.client.completions.create(base_id, query="Ramble on", max_generated_token_count=2)
    assert short.finish_reason == "length"


async def test_structured_fine_tune_samples(gradient_server: GradientServer) -> None:
    adapter = await new_adapter(gradient_server)
    body = {
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
            {"inputs": "<|im_start|>hey", "fineTuningParameters": None},
        ]
    }
    r = await raw(gradient_server, "POST", f"/api/models/{adapter.id}/fine-tune", json=body)
    assert r.status_code == 200, r.text
    # 14 tokens ("#", "#", "#", "Instruction", ":", ...) + "Bye", "!" + "<|im_start|>", "hey"
    assert r.json()["numberOfTrainableTokens"] == 14 + 2 + 2
    out = await adapter.complete(query="### Instruction: Say bye\n\n### Response:")
    assert out.generated_output == "Bye!"


async def test_embeddings(gradient_server: GradientServer) -> None:
    assert [m.slug for m in await gradient_server.client.embeddings.list()] == ["bge-large"]
    resp = await gradient_server.client.embeddings.create("bge-large", inputs=["a", "b", "a"])
    vectors = [e.embedding for e in resp.embeddings]
    assert [e.index for e in resp.embeddings] == [0, 1, 2]
    assert vectors[0] == vectors[2] != vectors[1]
    with pytest.raises(NotFoundError):
        await gradient_server.client.embeddings.create("nope", inputs=["a"])


async def test_auth_errors(gradient_server: GradientServer) -> None:
    r = await raw(gradient_server, "GET", "/api/models", headers={"x-gradient-workspace-id": TEST_WORKSPACE})
    assert r.status_code == 401 and "Authorization" in r.json()["message"]
    assert TEST_TOKEN not in r.text
    with pytest.raises(AuthenticationError, match="invalid access token"):
        await gradient_server.make_client(access_token="wrong-token", grant=False).models.list()
    with pytest.raises(PermissionDeniedError, match="may not use workspace"):
        await gradient_server.make_client(workspace_id="someone-else", grant=False).models.list()
    r = await raw(gradient_server, "GET", "/api/models", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    assert r.status_code == 403 and "x-gradient-workspace-id" in r.json()["message"]


async def test_not_found_errors(gradient_server: GradientServer) -> None:
    missing = "00000000-0000-0000-0000-000000000000_model_adapter"
    with pytest.raises(NotFoundError) as info:
        await gradient_server.client.completions.create(missing, query="Hi")
    assert info.value.error_type == "unknownModelAdapter"
    with pytest.raises(NotFoundError):
        await gradient_server.client.fine_tunes.create(missing, samples=["x"])
    with pytest.raises(NotFoundError):
        await gradient_server.client.adapters.delete(missing)
    with pytest.raises(NotFoundError) as info:
        await gradient_server.client.adapters.create(base_model_id="x" * 50, name="n")
    assert info.value.error_type == "unknownBaseModel" and "baseModelId" in info.value.message
    r = await raw(gradient_server, "GET", "/nope")
    assert r.status_code == 404 and "/api" in r.json()["message"]


async def test_bad_bodies_are_400_naming_the_field(gradient_server: GradientServer) -> None:
    adapter = await new_adapter(gradient_server)
    cases: list[tuple[str, Any, str]] = [
        ("complete", {"query": ""}, "query"),
        ("complete", {"query": "hi", "maxGeneratedTokenCount": 512}, "maxGeneratedTokenCount"),
        ("complete", {"query": "hi", "topP": 1.5}, "topP"),
        ("complete", {"query": "hi", "guidance": {"type": "choice", "value": []}}, "guidance.value"),
        ("complete", {"query": "hi", "bogus": 1}, "bogus"),
        ("complete", {}, "query"),
        ("fine-tune", {"samples": []}, "samples"),
        ("fine-tune", {"samples": [{"inputs": "x", "fineTuningParameters": {"multiplier": 0}}]}, "multiplier"),
    ]
    for route, body, field in cases:
        r = await raw(gradient_server, "POST", f"/api/models/{adapter.id}/{route}", json=body)
        assert r.status_code == 400, (body, r.text)
        data = r.json()
        assert data["type"] == "bodyParsingError" and field in data["message"], data
        assert "formattedValidationError" in data["payload"]
    r = await raw(gradient_server, "POST", f"/api/models/{adapter.id}/complete", content=b"{not json")
    assert r.status_code == 400
    r = await raw(
        gradient_server,
        "POST",
        "/api/models",
        json={
            "model": {"baseModelId": "b", "name": "n"},
            "initialHyperparameters": {"loraHyperparameters": {"rank": 64}},
        },
    )
    assert r.status_code == 400 and "rank" in r.json()["message"]
    r = await raw(gradient_server, "GET", "/api/models?capability=bogus")
    assert r.status_code == 400 and r.json()["type"] == "queryOrPathParsingError"


async def test_refusals(gradient_server: GradientServer) -> None:
    base_id = gradient_server.base_model_ids[-1]
    with pytest.raises(BadRequestError) as info:
        await gradient_server.client.fine_tunes.create(base_id, samples=["x"])
    assert info.value.error_type == "modelIncapableOfFineTuning"
    with pytest.raises(BadRequestError, match="base model"):
        await gradient_server.client.adapters.delete(base_id)
    with pytest.raises(NotFoundError) as nf:
        await gradient_server.client.completions.create(base_id, query="x", rag={"collection_id": "c"})
    assert nf.value.error_type == "unknownRagCollection"


async def test_faults(gradient_server: GradientServer) -> None:
    client = gradient_server.client.with_options(max_retries=0)
    gradient_server.faults.fail_rate = 1.0
    with pytest.raises(InternalServerError) as info:
        await client.models.list()
    assert info.value.status_code == 503
    gradient_server.faults.fail_rate = 0.0
    gradient_server.faults.rate_limit_rps = 0.01  # a burst of one, then one every 100 s
    await client.models.list()
    with pytest.raises(RateLimitError) as limited:
        await client.models.list()
    assert limited.value.retry_after is not None and 50 < limited.value.retry_after <= 100
    assert 50 < int(limited.value.response.headers["Retry-After"]) <= 100
    gradient_server.faults.rate_limit_rps = None
    gradient_server.faults.latency_ms = 1
    await client.models.list()
    assert [c.status for c in gradient_server.calls[-4:]] == [503, 200, 429, 200]
    with pytest.raises(ValueError, match="fail_rate"):
        gradient_server.faults.fail_rate = 2


async def test_retries_ride_through_injected_failures(gradient_server: GradientServer) -> None:
    from gradient_async import RetryPolicy

    async def no_sleep(_: float) -> None:
        return None

    client = gradient_server.make_client(retry=RetryPolicy(max_retries=20, sleep=no_sleep))
    gradient_server.faults.fail_rate = 0.5
    gradient_server.faults.seed = 3
    for _ in range(5):
        assert await client.models.list(only_base=True)
    statuses = [c.status for c in gradient_server.calls]
    assert statuses.count(200) == 5 and 503 in statuses


async def test_health_and_openapi(gradient_server: GradientServer) -> None:
    r = await raw(gradient_server, "GET", "/health", headers={})
    assert r.json()["status"] == "ok" and r.json()["engine"] == "test"
    schema = (await raw(gradient_server, "GET", "/openapi.json", headers={})).json()
    assert {"/api/models", "/api/models/{model_id}", "/api/models/{model_id}/complete"} <= set(schema["paths"])
