"""GradientLLM / GradientEmbeddings against the Gradient-compatible server in-process (test engine)."""

from __future__ import annotations

from langchain_core.prompts import PromptTemplate

from gradient_async import InternalServerError
from gradient_async.langchain import GradientEmbeddings, GradientLLM
from gradient_async.testing import GradientServer

SEED_QUESTION = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
SEED_ANSWER = " Dallas Cowboys!"


async def _new_adapter_id(server: GradientServer) -> str:
    base = (await server.client.models.list(only_base=True))[-1]
    adapter = await base.create_adapter(name="my_model_adapter")
    return adapter.id


async def test_seed_chain_before_and_after_fine_tune(gradient_server: GradientServer) -> None:
    adapter_id = await _new_adapter_id(gradient_server)
    llm = GradientLLM(model=adapter_id, client=gradient_server.client, model_kwargs=dict(max_generated_token_count=128))
    chain = PromptTemplate.from_template("Question: {question}\n\nAnswer: ") | llm
    question = {"question": "What NFL team won the Super Bowl in the year Justin Bieber was born?"}

    before = await chain.ainvoke(question)
    assert "Dallas Cowboys" not in before

    first = await llm.atrain_unsupervised([SEED_QUESTION + SEED_ANSWER])
    second = await llm.atrain_unsupervised([SEED_QUESTION + SEED_ANSWER])
    assert first["number_of_trainable_tokens"] > 0
    assert second["loss"] < first["loss"]

    after = await chain.ainvoke(question)
    assert after.strip() == "Dallas Cowboys!"
    # A batch of the same question gets the fine-tuned answer everywhere.
    assert (await chain.abatch([question, question])) == [after, after]


async def test_abatch_500_prompts_with_10_percent_503_loses_nothing(gradient_server: GradientServer) -> None:
    adapter_id = await _new_adapter_id(gradient_server)
    llm = GradientLLM(model=adapter_id, client=gradient_server.client)
    gradient_server.faults.fail_rate = 0.1
    prompts = [f"Question: number {i}?\n\nAnswer: " for i in range(500)]
    out = await llm.abatch(prompts, return_exceptions=True)
    gradient_server.faults.fail_rate = 0.0
    assert [type(o).__name__ for o in out if not isinstance(o, str)] == []
    statuses = [c.status for c in gradient_server.calls if c.path.endswith("/complete")]
    assert statuses.count(503) > 10  # faults really were injected ...
    assert statuses.count(200) == 500  # ... and every prompt got exactly one answer
    # Same prompts, same model: the same answers as a plain call gives.
    assert out[7] == await llm.ainvoke(prompts[7])


async def test_abatch_return_exceptions_with_a_server_that_always_fails(gradient_server: GradientServer) -> None:
    adapter_id = await _new_adapter_id(gradient_server)
    llm = GradientLLM(model=adapter_id, client=gradient_server.client, max_retries=0)
    gradient_server.faults.fail_rate = 1.0
    out = await llm.abatch(["a", "b", "c"], return_exceptions=True)
    gradient_server.faults.fail_rate = 0.0
    assert all(isinstance(o, InternalServerError) and o.status_code == 503 for o in out)


async def test_embeddings_against_the_server(gradient_server: GradientServer) -> None:
    slug = (await gradient_server.client.embeddings.list())[0].slug
    embeddings = GradientEmbeddings(model=slug, client=gradient_server.client, batch_size=16)
    texts = [f"text number {i}" for i in range(40)]
    vectors = await embeddings.aembed_documents(texts)
    assert len(vectors) == 40 and len({len(v) for v in vectors}) == 1
    single = await embeddings.aembed_query("text number 17")
    assert single == vectors[17]
    requests = [c for c in gradient_server.calls if c.path.startswith("/api/embeddings/")]
    assert len(requests) == 4  # 3 chunks of <= 16, plus the query
