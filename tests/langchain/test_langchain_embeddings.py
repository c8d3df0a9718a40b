"""GradientEmbeddings against a scripted API: chunking, order, errors, settings."""

from __future__ import annotations

import httpx
import pytest

from gradient_async import AsyncGradient, InputValidationError, InternalServerError
from gradient_async.langchain import GradientEmbeddings


async def test_documents_are_sent_in_chunks_and_come_back_in_order(mock_client: AsyncGradient, fake_gradient) -> None:
    embeddings = GradientEmbeddings(model="bge-large", client=mock_client)
    texts = ["x" * (i % 7 + 1) for i in range(600)]
    vectors = await embeddings.aembed_documents(texts)
    assert [v[0] for v in vectors] == [float(len(t)) for t in texts]
    sizes = [len(b["inputs"]) for b in fake_gradient.bodies("/embeddings/bge-large")]  # type: ignore[arg-type]
    assert sorted(sizes) == [88, 256, 256]


async def test_small_batch_size_and_one_request_for_few_texts(mock_client: AsyncGradient, fake_gradient) -> None:
    embeddings = GradientEmbeddings(model="bge-large", client=mock_client, batch_size=2)
    vectors = await embeddings.aembed_documents(["a", "bb", "ccc", "dddd", "eeeee"])
    assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(fake_gradient.requests) == 3
    assert await embeddings.aembed_documents([]) == []
    assert len(fake_gradient.requests) == 3


async def test_query_prefix(mock_client: AsyncGradient, fake_gradient) -> None:
    embeddings = GradientEmbeddings(model="bge-large", client=mock_client, query_prompt_for_retrieval="Q:")
    assert (await embeddings.aembed_query("abc"))[0] == float(len("Q: abc"))
    assert fake_gradient.bodies("/embeddings/bge-large")[-1] == {"inputs": [{"input": "Q: abc"}]}


async def test_errors_are_typed(mock_client: AsyncGradient, fake_gradient) -> None:
    async def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"message": "embedding server down"})

    fake_gradient.handler = broken  # type: ignore[method-assign]
    embeddings = GradientEmbeddings(model="bge-large", client=mock_client, max_retries=0)
    with pytest.raises(InputValidationError, match="input"):
        await embeddings.aembed_documents(["ok", ""])
    transport = httpx.MockTransport(broken)
    async with AsyncGradient(
        access_token="t", workspace_id="w", base_url="http://g.test/api", transport=transport
    ) as c:
        embeddings = GradientEmbeddings(model="bge-large", client=c, max_retries=0)
        with pytest.raises(InternalServerError, match="embedding server down"):
            await embeddings.aembed_documents(["ok"])


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRADIENT_ACCESS_TOKEN", "GRADIENT_WORKSPACE_ID", "GRADIENT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="GradientEmbeddings is missing gradient_access_token"):
        GradientEmbeddings(model="bge-large", gradient_workspace_id="ws")
    with pytest.raises(ValueError, match="batch_size"):
        GradientEmbeddings(model="bge-large", gradient_access_token="t", gradient_workspace_id="w", batch_size=257)
    ok = GradientEmbeddings(model="bge-large", gradient_access_token="sk-SECRET-emb", gradient_workspace_id="w")
    assert "sk-SECRET-emb" not in repr(ok)
