"""Blocking calls: from plain code, from a running loop's worker thread, inside a running loop;
one private loop and one pool, closed when asked, nothing leaked."""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread
import pytest

from gradient_async import NotFoundError
from gradient_async.langchain import GradientEmbeddings, GradientLLM
from gradient_async.testing import GradientServer, GradientServerURL


def _llm(srv: GradientServerURL, **kwargs: object) -> GradientLLM:
    return GradientLLM(
        model=srv.base_model_ids[0],
        gradient_access_token=srv.token,
        gradient_workspace_id=srv.workspace,
        gradient_api_url=srv.url,
        **kwargs,
    )


def _bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gradient-async-langchain"]


def test_sync_calls_from_plain_code_share_one_loop_and_pool(gradient_server_url: GradientServerURL) -> None:
    before = len(_bridge_threads())
    llm = _llm(gradient_server_url, model_kwargs={"max_generated_token_count": 8})
    first = llm.invoke("Hello there")
    assert isinstance(first, str) and first
    assert llm.invoke("Hello there") == first  # deterministic test engine
    out = llm.batch(["a", "b", ""], return_exceptions=True)
    assert isinstance(out[0], str) and isinstance(out[1], str) and isinstance(out[2], ValueError)
    assert len(_bridge_threads()) == before + 1
    assert llm.runtime.open_clients() == 1
    llm.close()
    assert len(_bridge_threads()) == before
    assert llm.runtime.open_clients() == 0
    # Usable again after close: a fresh private loop starts on demand.
    assert llm.invoke("Hello there") == first
    llm.close()


def test_sync_errors_are_typed(gradient_server_url: GradientServerURL) -> None:
    llm = GradientLLM(
        model="00000000-0000-0000-0000-000000000000_model_adapter",
        gradient_access_token=gradient_server_url.token,
        gradient_workspace_id=gradient_server_url.workspace,
        gradient_api_url=gradient_server_url.url,
    )
    try:
        with pytest.raises(NotFoundError):
            llm.invoke("Hello")
    finally:
        llm.close()


async def test_sync_call_from_a_worker_thread_and_inside_the_loop(gradient_server_url: GradientServerURL) -> None:
    llm = _llm(gradient_server_url, model_kwargs={"max_generated_token_count": 8})
    expected = await llm.ainvoke("Hello there")
    assert await anyio.to_thread.run_sync(llm.invoke, "Hello there") == expected
    assert llm.invoke("Hello there") == expected  # blocks this loop, but runs on the private one
    await llm.aclose()
    assert llm.runtime.open_clients() == 0


async def test_shared_client_sync_call_runs_on_its_own_loop(gradient_server: GradientServer) -> None:
    llm = GradientLLM(model=gradient_server.base_model_ids[0], client=gradient_server.client)
    expected = await llm.ainvoke("Hello there")
    assert await anyio.to_thread.run_sync(llm.invoke, "Hello there") == expected
    with pytest.raises(RuntimeError, match="ainvoke"):
        llm.invoke("Hello there")  # would deadlock: the shared client lives on this very loop
    assert not gradient_server.client.is_closed


def test_async_clients_close_with_their_loop(gradient_server_url: GradientServerURL) -> None:
    llm = _llm(gradient_server_url)

    async def use() -> str:
        return await llm.ainvoke("Hello there")

    answers = [asyncio.run(use()), asyncio.run(use())]  # two loops, one after the other
    assert answers[0] == answers[1]
    assert llm.runtime.open_clients() == 0  # each loop's client was closed at that loop's shutdown
    assert llm.runtime.bridge.thread is None  # async use never starts the private loop


def test_embeddings_sync(gradient_server_url: GradientServerURL) -> None:
    embeddings = GradientEmbeddings(
        model="bge-large",
        gradient_access_token=gradient_server_url.token,
        gradient_workspace_id=gradient_server_url.workspace,
        gradient_api_url=gradient_server_url.url,
        query_prompt_for_retrieval="Represent this for retrieval:",
    )
    try:
        vectors = embeddings.embed_documents(["one", "two"])
        assert len(vectors) == 2 and vectors[0] != vectors[1]
        assert embeddings.embed_query("one") == embeddings.embed_documents(["Represent this for retrieval: one"])[0]
        assert embeddings.embed_documents([]) == []
    finally:
        embeddings.close()


def test_an_unclosed_llm_releases_its_loop_when_collected(gradient_server_url: GradientServerURL) -> None:
    import gc

    before = len(_bridge_threads())
    llm = _llm(gradient_server_url)
    llm.invoke("Hello there")
    thread = llm.runtime.bridge.thread
    assert thread is not None and thread.is_alive()
    del llm
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(_bridge_threads()) == before
