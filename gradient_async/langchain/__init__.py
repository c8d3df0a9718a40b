"""LangChain integration (extra `langchain`): `GradientLLM` and `GradientEmbeddings`, drop-in
replacements for LangChain's classes on this SDK's pooled client, retries, limits and typed errors.

Example::

    # before: from langchain_community.llms import GradientLLM
    from gradient_async.langchain import GradientEmbeddings, GradientLLM

    llm = GradientLLM(model=adapter_id, model_kwargs=dict(max_generated_token_count=128))
    print(llm.invoke("Question: What is 2+2?\\n\\nAnswer: "))
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradient_async.langchain needs langchain-core: pip install 'gradient-async[langchain]'") from exc

from gradient_async.langchain.embeddings import GradientEmbeddings
from gradient_async.langchain.llms import GradientLLM, TrainResult

__all__ = ["GradientEmbeddings", "GradientLLM", "TrainResult"]
