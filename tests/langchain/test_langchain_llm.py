"""GradientLLM against a scripted API (httpx.MockTransport): fields, wire body, stop, usage, batches."""

from __future__ import annotations

import json
import math

import anyio
import httpx
import pytest
from langchain_core.prompts import PromptTemplate
from pydantic import ValidationError as PydanticValidationError

from gradient_async import AsyncGradient, InputValidationError, InternalServerError, NotFoundError
from gradient_async.langchain import GradientLLM, _feeder
from gradient_async.langchain.llms import apply_stop

MODEL_ID = "11111111-2222-3333-4444-555555555555_model_adapter"


@pytest.fixture(autouse=True)
def _no_gradient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRADIENT_ACCESS_TOKEN", "GRADIENT_WORKSPACE_ID", "GRADIENT_API_URL"):
        monkeypatch.delenv(name, raising=False)


# -- construction ----------------------------------------------------------------------------


def test_missing_settings_are_named() -> None:
    with pytest.raises(ValueError) as info:
        GradientLLM(model=MODEL_ID)
    message = str(info.value)
    assert "gradient_access_token" in message and "GRADIENT_ACCESS_TOKEN" in message
    assert "gradient_workspace_id" in message and "GRADIENT_WORKSPACE_ID" in message


def test_only_the_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", "sk-from-env")
    with pytest.raises(ValueError) as info:
        GradientLLM(model=MODEL_ID)
    assert "gradient_workspace_id" in str(info.value)
    assert "gradient_access_token" not in str(info.value)


def test_reads_the_sdk_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", "sk-env-SECRET")
    monkeypatch.setenv("GRADIENT_WORKSPACE_ID", "ws-env")
    monkeypatch.setenv("GRADIENT_API_URL", "http://127.0.0.1:9/api/")
    llm = GradientLLM(model_id=MODEL_ID)
    assert llm.gradient_workspace_id == "ws-env"
    assert llm.gradient_api_url == "http://127.0.0.1:9/api/"
    assert llm.gradient_access_token is not None
    assert llm.gradient_access_token.get_secret_value() == "sk-env-SECRET"
    assert "sk-env-SECRET" not in repr(llm) and "sk-env-SECRET" not in str(llm.asdict())


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIENT_WORKSPACE_ID", "ws-env")
    llm = GradientLLM(model=MODEL_ID, gradient_access_token="sk-arg", gradient_workspace_id="ws-arg")
    assert llm.gradient_workspace_id == "ws-arg"
    assert llm.gradient_api_url == "https://api.gradient.ai/api"


def test_bad_settings_name_the_field() -> None:
    creds = {"gradient_access_token": "sk-x", "gradient_workspace_id": "ws"}
    with pytest.raises(ValueError, match="max_generated_token_count"):
        GradientLLM(model=MODEL_ID, model_kwargs={"max_generated_token_count": 512}, **creds)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_tokens'\]"):
        GradientLLM(model=MODEL_ID, model_kwargs={"max_tokens": 5}, **creds)
    with pytest.raises(ValueError, match="base_url must start with http"):
        GradientLLM(model=MODEL_ID, gradient_api_url="api.gradient.ai", **creds)
    with pytest.raises(PydanticValidationError, match="max_concurrency"):
        GradientLLM(model=MODEL_ID, max_concurrency=0, **creds)


async def test_client_and_credentials_together_are_refused(mock_client: AsyncGradient) -> None:
    with pytest.raises(ValueError, match="pass either client="):
        GradientLLM(model=MODEL_ID, client=mock_client, gradient_access_token="sk-x")


async def test_identity(mock_client: AsyncGradient) -> None:
    llm = GradientLLM(model=MODEL_ID, client=mock_client, model_kwargs={"temperature": 0.5})
    assert llm._llm_type == "gradient"
    assert llm._identifying_params == {
        "model_id": MODEL_ID,
        "gradient_api_url": "http://gradient.test/api",
        "model_kwargs": {"temperature": 0.5},
    }
    assert llm.gradient_workspace_id == "ws_lc"


# -- one call ----------------------------------------------------------------------------------


async def test_wire_body_merges_model_kwargs_and_call_kwargs(mock_client: AsyncGradient, fake_gradient) -> None:
    llm = GradientLLM(
        model=MODEL_ID,
        client=mock_client,
        model_kwargs={"max_generated_token_count": 128, "temperature": 0.7, "top_k": 20, "top_p": 0.95},
    )
    assert await llm.ainvoke("Hello", temperature=0.1) == "echo: Hello"
    [request] = fake_gradient.requests
    assert request.url.path == f"/api/models/{MODEL_ID}/complete"
    assert request.headers["authorization"] == "Bearer sk-lc-SECRET-token"
    body = json.loads(request.content)
    assert body["query"] == "Hello"
    assert body["maxGeneratedTokenCount"] == 128
    assert body["temperature"] == 0.1
    assert (body["topK"], body["topP"]) == (20, 0.95)


async def test_stop_sequences_are_applied_client_side(mock_client: AsyncGradient, fake_gradient) -> None:
    fake_gradient.answers["Q"] = httpx.Response(
        200, json={"finishReason": "length", "generatedOutput": "Dallas Cowboys!\nQuestion: and then"}
    )
    llm = GradientLLM(model=MODEL_ID, client=mock_client, model_kwargs={"stop": ["\nQuestion:"]})
    assert await llm.ainvoke("Q") == "Dallas Cowboys!"
    assert await llm.ainvoke("Q", stop=["Cowboys"]) == "Dallas "  # the call's stop wins
    assert "stop" not in fake_gradient.bodies("/complete")[0]


def test_apply_stop_takes_the_earliest_and_escapes_nothing() -> None:
    assert apply_stop("a.b|c", ["|", "."]) == "a"
    assert apply_stop("abc", ["", "z"]) == "abc"
    assert apply_stop("abc", None) == "abc"


async def test_llm_output_carries_finish_reason_and_token_usage(mock_client: AsyncGradient, fake_gradient) -> None:
    fake_gradient.extra = {"usage": {"promptTokens": 3, "generatedTokens": 2}, "totalTokenCount": 5}
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    result = await llm.agenerate(["one", "two"])
    assert [g[0].text for g in result.generations] == ["echo: one", "echo: two"]
    assert result.generations[0][0].generation_info == {"finish_reason": "length"}
    assert result.llm_output is not None
    assert result.llm_output["token_usage"] == {"prompt_tokens": 6, "generated_tokens": 4, "total_token_count": 10}


async def test_no_token_usage_when_the_api_reports_none(mock_client: AsyncGradient) -> None:
    result = await GradientLLM(model=MODEL_ID, client=mock_client).agenerate(["one"])
    assert result.llm_output == {"model_id": MODEL_ID}


async def test_errors_are_typed_and_retried(mock_client: AsyncGradient, fake_gradient) -> None:
    calls = 0

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return httpx.Response(503, json={"message": "busy"})
        return httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "finally"})

    fake_gradient.answers["flaky"] = flaky
    fake_gradient.answers["missing"] = httpx.Response(
        404, json={"message": "no adapter", "type": "unknownModelAdapter"}
    )
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    assert await llm.ainvoke("flaky") == "finally"
    assert calls == 3
    with pytest.raises(NotFoundError) as info:
        await llm.ainvoke("missing")
    assert info.value.error_type == "unknownModelAdapter"


async def test_chain_with_prompt_template(mock_client: AsyncGradient) -> None:
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    chain = PromptTemplate.from_template("Question: {question}\n\nAnswer: ") | llm
    assert await chain.ainvoke({"question": "2+2?"}) == "echo: Question: 2+2?\n\nAnswer: "


# -- batches ----------------------------------------------------------------------------------


async def test_abatch_return_exceptions_keeps_each_error_in_place(mock_client: AsyncGradient, fake_gradient) -> None:
    fake_gradient.answers["p3"] = httpx.Response(404, json={"message": "gone", "type": "unknownModelAdapter"})
    fake_gradient.answers["p7"] = httpx.Response(500, json={"message": "boom"})
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    prompts = [f"p{i}" for i in range(10)] + [""]
    out = await llm.abatch(prompts, return_exceptions=True)
    assert len(out) == 11
    for i in range(10):
        if i not in (3, 7):
            assert out[i] == f"echo: p{i}"
    assert isinstance(out[3], NotFoundError)
    assert isinstance(out[7], InternalServerError)
    assert isinstance(out[10], InputValidationError) and "query" in str(out[10])


async def test_abatch_goes_through_the_batch_engine(
    mock_client: AsyncGradient, fake_gradient, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[str] = []
    original = _feeder.EngineFeeder.submit

    async def spy(self: _feeder.EngineFeeder, prompt: str):  # type: ignore[no-untyped-def]
        submitted.append(prompt)
        return await original(self, prompt)

    monkeypatch.setattr(_feeder.EngineFeeder, "submit", spy)
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    out = await llm.abatch([f"p{i}" for i in range(20)], config={"max_concurrency": 4})
    assert out == [f"echo: p{i}" for i in range(20)]
    assert sorted(submitted) == sorted(f"p{i}" for i in range(20))


async def test_abatch_engine_retries_more_than_a_single_call(mock_client: AsyncGradient, fake_gradient) -> None:
    attempts = 0

    async def fails_four_times(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts <= 4:
            return httpx.Response(503, json={"message": "busy"})
        return httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "ok"})

    fake_gradient.answers["p"] = fails_four_times
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    assert await llm.abatch(["p"]) == ["ok"]  # the client alone retries twice; a batch at least 5 times
    assert attempts == 5


async def test_abatch_fail_fast_cancels_in_flight_work_then_raises(mock_client: AsyncGradient, fake_gradient) -> None:
    started = 0
    cancelled = 0
    release = anyio.Event()
    all_started = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal started, cancelled
        started += 1
        if started == 5:
            all_started.set()
        try:
            await release.wait()  # never set: only cancellation ends it
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise
        return httpx.Response(200, json={"finishReason": "stop", "generatedOutput": "late"})

    async def fail_when_others_are_waiting(request: httpx.Request) -> httpx.Response:
        await all_started.wait()
        return httpx.Response(404, json={"message": "gone"})

    for i in range(5):
        fake_gradient.answers[f"slow{i}"] = slow
    fake_gradient.answers["bad"] = fail_when_others_are_waiting
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    with pytest.raises(NotFoundError):  # the error itself, not an ExceptionGroup
        await llm.abatch([f"slow{i}" for i in range(5)] + ["bad"])
    assert started == 5
    assert cancelled == 5


async def test_empty_batch(mock_client: AsyncGradient) -> None:
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    assert await llm.abatch([]) == []


async def test_agenerate_many_prompts_raises_the_first_error(mock_client: AsyncGradient, fake_gradient) -> None:
    fake_gradient.answers["bad"] = httpx.Response(404, json={"message": "gone"})
    llm = GradientLLM(model=MODEL_ID, client=mock_client)
    with pytest.raises(NotFoundError):
        await llm.agenerate(["a", "bad", "c"])


async def test_train_unsupervised_reports_mean_loss(mock_client: AsyncGradient, fake_gradient) -> None:
    async def tune(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"numberOfTrainableTokens": 4, "sumLoss": 10.0})

    fake_gradient.script.clear()
    original = fake_gradient.handler

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/fine-tune"):
            fake_gradient.requests.append(request)
            body = json.loads(request.content)
            zero = body["samples"][0]["inputs"] == "nothing"
            return httpx.Response(200, json={"numberOfTrainableTokens": 0 if zero else 4, "sumLoss": 10.0})
        return await original(request)

    fake_gradient.handler = handler  # type: ignore[method-assign]
    transport = httpx.MockTransport(handler)
    async with AsyncGradient(
        access_token="t", workspace_id="w", base_url="http://g.test/api", transport=transport
    ) as c:
        llm = GradientLLM(model=MODEL_ID, client=c)
        result = await llm.atrain_unsupervised(["a", "b"], multipliers=[1.0, 2.0])
        assert result == {"loss": 2.5, "number_of_trainable_tokens": 4, "sum_loss": 10.0}
        samples = fake_gradient.bodies("/fine-tune")[0]["samples"]
        assert [s["fineTuningParameters"]["multiplier"] for s in samples] == [1.0, 2.0]
        assert math.isnan((await llm.atrain_unsupervised(["nothing"]))["loss"])
        with pytest.raises(ValueError, match="2 multipliers for 1 inputs"):
            await llm.atrain_unsupervised(["a"], multipliers=[1.0, 2.0])
