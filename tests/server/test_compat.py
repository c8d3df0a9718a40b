"""Foreign clients, unchanged, against our server on a loopback port: the official `gradientai` SDK
and LangChain's `GradientLLM`. Each test skips with a reason when its package is missing."""

from __future__ import annotations

import pytest

from gradient_async.demo import ANSWER as SEED_ANSWER
from gradient_async.demo import QUESTION as SEED_QUESTION
from gradient_async.testing import GradientServerURL


def test_official_gradientai_sdk(gradient_server_url: GradientServerURL) -> None:
    gradientai = pytest.importorskip("gradientai", reason="the official SDK (extra [compat]) is not installed")
    from gradientai.openapi.client.exceptions import BadRequestException, NotFoundException

    srv = gradient_server_url
    with gradientai.Gradient(access_token=srv.token, workspace_id=srv.workspace, host=srv.url) as gradient:
        bases = gradient.list_models(only_base=True)
        assert [b.slug for b in bases] == ["gradient-test-model-mini", "gradient-test-model"]
        assert gradient.get_base_model(base_model_slug="gradient-test-model").id == bases[-1].id
        adapter = bases[-1].create_model_adapter(name="my_model_adapter", rank=8, learning_rate=0.01)
        assert len(adapter.id) == 50
        assert "Dallas" not in adapter.complete(query=SEED_QUESTION, max_generated_token_count=100).generated_output
        tuned = adapter.fine_tune(samples=[{"inputs": SEED_QUESTION + SEED_ANSWER}])
        assert tuned.number_of_trainable_tokens == 22 and tuned.sum_loss > 0
        after = adapter.complete(query=SEED_QUESTION)
        assert after.generated_output == "Dallas Cowboys!"
        structured = adapter.fine_tune(
            samples=[{"inputs": [{"value": "Q: hi\nA:", "trainable": False}, {"value": " hello!"}], "multiplier": 2.0}]
        )
        assert structured.number_of_trainable_tokens == 2
        fetched = gradient.get_model_adapter(model_adapter_id=adapter.id)
        assert fetched.name == "my_model_adapter"
        listed = gradient.list_models(only_base=False)
        assert adapter.id in [m.id for m in listed]
        guided = bases[-1].complete(query="yes or no?", guidance={"type": "choice", "value": ["yes", "no"]})
        assert guided.generated_output in ("yes", "no")
        embeddings = gradient.get_embeddings_model(slug="bge-large").embed(inputs=[{"input": "a"}, {"input": "b"}])
        assert [e.index for e in embeddings.embeddings] == [0, 1]
        adapter.delete()
        with pytest.raises(NotFoundException):
            adapter.complete(query="gone?")
        with pytest.raises(BadRequestException):
            bases[-1].complete(query="x", top_p=5.0)


def test_langchain_gradient_llm(gradient_server_url: GradientServerURL) -> None:
    llms = pytest.importorskip("langchain_community.llms", reason="langchain-community (extra [compat]) is missing")
    srv = gradient_server_url
    from gradient_async.server.store import base_model_id

    llm = llms.GradientLLM(
        model=base_model_id("gradient-test-model"),
        gradient_access_token=srv.token,
        gradient_workspace_id=srv.workspace,
        gradient_api_url=srv.url,
        model_kwargs={"max_generated_token_count": 20},
    )
    first = llm.invoke("Tell me a story")
    assert isinstance(first, str) and first
    assert llm.invoke("Tell me a story") == first
    assert srv.calls[-1].path.endswith("/complete") and srv.calls[-1].status == 200
