"""`GradientLLM`: LangChain's Gradient LLM on this SDK's pooled client, retries, limits and typed errors.

Drop-in for `langchain_community.llms.GradientLLM`: same constructor fields, same environment
variables, same `_llm_type`; change the import and nothing else.

Example::

    from langchain_core.prompts import PromptTemplate
    from gradient_async.langchain import GradientLLM   # was: from langchain_community.llms import GradientLLM

    llm = GradientLLM(model=adapter_id, model_kwargs=dict(max_generated_token_count=128))
    chain = PromptTemplate.from_template("Question: {question}\\n\\nAnswer: ") | llm
    print(chain.invoke({"question": "What NFL team won the Super Bowl in 1994?"}))
    answers = await chain.abatch([{"question": q} for q in questions], return_exceptions=True)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypedDict, cast

import anyio
import anyio.abc
import anyio.to_thread
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.llms import BaseLLM
from langchain_core.outputs import Generation, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from gradient_async._client import AsyncGradient
from gradient_async._config import DEFAULT_BASE_URL
from gradient_async._retry import RetryPolicy
from gradient_async.langchain._common import attach_runtime, fill_from_env
from gradient_async.langchain._feeder import CURRENT_FEEDER, engine_feeder
from gradient_async.langchain._runtime import ClientRuntime
from gradient_async.resources.completions import build_complete_body
from gradient_async.types.completions import Completion, CompletionParams

__all__ = ["GradientLLM", "TrainResult", "apply_stop"]

_COMPLETION_KEYS = frozenset(CompletionParams.__annotations__)
_MODEL_KWARGS = _COMPLETION_KEYS | {"stop", "multipliers"}


class TrainResult(TypedDict):
    """Result of `train_unsupervised`: mean `loss` per trainable token (NaN if none), plus the raw numbers."""

    loss: float
    number_of_trainable_tokens: int
    sum_loss: float


def apply_stop(text: str, stop: Sequence[str] | None) -> str:
    """`text` cut at the first occurrence of any stop sequence (the API has no `stop` parameter).

    Example::

        apply_stop("Dallas Cowboys!\\nQuestion: next", ["\\nQuestion:"])   # 'Dallas Cowboys!'
    """
    if not stop:
        return text
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _token_usage(completions: Sequence[Completion]) -> dict[str, int]:
    """Token counts the server reported (a `usage` object or `...Token...` fields), summed."""
    usage: dict[str, int] = {}
    for completion in completions:
        extra = completion.model_extra or {}
        found: dict[str, Any] = dict(extra["usage"]) if isinstance(extra.get("usage"), dict) else {}
        found.update({k: v for k, v in extra.items() if "token" in k.lower()})
        for key, value in found.items():
            if isinstance(value, int) and not isinstance(value, bool):
                name = _snake(key)
                usage[name] = usage.get(name, 0) + value
    return usage


class GradientLLM(BaseLLM):
    """Gradient completions as a LangChain LLM, async-first.

    Same fields as LangChain's `GradientLLM` (`model` / `model_id`, `gradient_access_token`,
    `gradient_workspace_id`, `gradient_api_url`, `model_kwargs`), read from the same
    environment variables, plus:

    - `max_concurrency`: requests in flight at once (default: the client's, 64);
    - `max_retries`: retries per request (default 2; batches retry each prompt at least 5 times);
    - `timeout`: seconds per request (default 120);
    - `client`: an existing `AsyncGradient` to share (its pool, limits and settings); never closed by us.

    `abatch(..., return_exceptions=True)` gives each failed prompt its own typed error, in
    place; with `return_exceptions=False` the first error is raised after in-flight work is
    cancelled. Sync calls (`invoke`, `batch`) work from scripts, threads and inside a running
    loop. Call `close()` / `await aclose()` (or use `async with`) to release connections early.

    Example::

        llm = GradientLLM(model="99148c6d-c2a0-4fbe-a4a7-e7c05bdb8a09_base_ml_model",
                          model_kwargs={"max_generated_token_count": 128, "temperature": 0.7})
        print(llm.invoke("Question: What is 2+2?\\n\\nAnswer: ", stop=["\\n"]))
    """

    model_id: str = Field(alias="model", min_length=2)
    """The base model id or adapter id to complete with."""
    gradient_workspace_id: str | None = None
    """Workspace id; default GRADIENT_WORKSPACE_ID."""
    gradient_access_token: SecretStr | None = None
    """Access token; default GRADIENT_ACCESS_TOKEN. Never shown in repr or logs."""
    gradient_api_url: str = DEFAULT_BASE_URL
    """API root including `/api`; default GRADIENT_API_URL or https://api.gradient.ai/api."""
    model_kwargs: dict[str, Any] | None = None
    """Completion settings: max_generated_token_count, temperature, top_k, top_p (also auto_template,
    guidance, rag), `stop` (applied client-side), `multipliers` (for train_unsupervised)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once, for this LLM's client and batches."""
    max_retries: int = Field(default=2, ge=0)
    """Retries per request on 429 / 5xx / timeouts (the client's policy)."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds per request; None: the SDK default (120 s)."""
    client: AsyncGradient | None = Field(default=None, exclude=True)
    """An existing AsyncGradient to share; when set, the gradient_* fields must be left unset."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", arbitrary_types_allowed=True)

    _runtime: ClientRuntime | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_env(cls, values: Any) -> Any:
        return fill_from_env(values)

    @model_validator(mode="after")
    def _validate_settings(self) -> Self:
        kwargs = dict(self.model_kwargs or {})
        unknown = sorted(set(kwargs) - _MODEL_KWARGS)
        if unknown:
            raise ValueError(f"model_kwargs has unknown key(s) {unknown}; allowed: {sorted(_MODEL_KWARGS)}")
        build_complete_body("x", {k: v for k, v in kwargs.items() if k in _COMPLETION_KEYS})
        self._runtime = attach_runtime(self)
        return self

    # -- LangChain's required surface ---------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "gradient"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {
            "model_id": self.model_id,
            "gradient_api_url": self.gradient_api_url,
            "model_kwargs": self.model_kwargs or {},
        }

    @property
    def runtime(self) -> ClientRuntime:
        """Where this LLM's clients live (one per event loop, plus the sync bridge)."""
        assert self._runtime is not None
        return self._runtime

    def _split_params(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        merged = {**(self.model_kwargs or {}), **kwargs}
        merged.pop("multipliers", None)
        default_stop = merged.pop("stop", None)
        return merged, list(stop if stop is not None else default_stop or [])

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        params, stops = self._split_params(stop, kwargs)
        feeder = CURRENT_FEEDER.get()
        if feeder is not None and feeder.owner is self and len(prompts) == 1:
            completions = [await feeder.submit(prompts[0])]
        else:
            client = await self.runtime.client()
            if len(prompts) == 1:
                completions = [await client.completions.create(self.model_id, query=prompts[0], **params)]
            else:
                result = await client.completions.batch(
                    self.model_id,
                    prompts,
                    max_concurrency=self.max_concurrency,
                    retry=self._batch_retry(client),
                    fail_fast=True,
                    **params,
                )
                completions = [item.unwrap() for item in result]
        generations = [
            [Generation(text=apply_stop(c.generated_output, stops), generation_info={"finish_reason": c.finish_reason})]
            for c in completions
        ]
        llm_output: dict[str, Any] = {"model_id": self.model_id}
        usage = _token_usage(completions)
        if usage:
            llm_output["token_usage"] = usage
        return LLMResult(generations=generations, llm_output=llm_output)

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return self.runtime.run_sync(lambda: self._agenerate(prompts, stop, None, **kwargs))

    def _batch_retry(self, client: AsyncGradient) -> RetryPolicy | None:
        # An explicit max_retries is honoured in batches too; otherwise the engine's default (>= 5).
        return client.config.retry if "max_retries" in self.model_fields_set else None

    # -- batches: one run per prompt, errors in place ---------------------------------------

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Complete every input through the batch engine; results in input order.

        Each prompt is its own LangChain run (callbacks and tracing see exactly which failed).
        `return_exceptions=True` puts each failed prompt's typed error in its slot; with False the
        first error is raised once in-flight work has been cancelled. The concurrency is
        `config["max_concurrency"]`, else `max_concurrency`, else the client's.

        Example::

            answers = await llm.abatch(prompts, return_exceptions=True)
            failed = [a for a in answers if isinstance(a, Exception)]
        """
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        client = await self.runtime.client()
        limit = int(configs[0].get("max_concurrency") or self.max_concurrency or client.config.max_concurrency)
        params, _ = self._split_params(kwargs.get("stop"), {k: v for k, v in kwargs.items() if k != "stop"})
        results: list[Any] = [None] * len(inputs)
        failures: list[BaseException] = []
        pending = iter(range(len(inputs)))
        item_configs = [cast(RunnableConfig, {**c, "max_concurrency": None}) for c in configs]

        async def worker(tg: anyio.abc.TaskGroup) -> None:
            for index in pending:
                try:
                    results[index] = await self.ainvoke(inputs[index], item_configs[index], **kwargs)
                except Exception as exc:
                    if return_exceptions:
                        results[index] = exc
                        continue
                    if not failures:
                        failures.append(exc)
                    tg.cancel_scope.cancel()
                    return

        async with engine_feeder(
            client,
            self.model_id,
            params=params,
            max_concurrency=limit,
            retry=self._batch_retry(client),
            owner=self,
        ) as feeder:
            token = CURRENT_FEEDER.set(feeder)
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(min(limit, len(inputs))):
                        tg.start_soon(worker, tg)
            finally:
                CURRENT_FEEDER.reset(token)
            if failures:
                feeder.abort()
        if failures:
            raise failures[0]
        return results

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Blocking `abatch` (same semantics), usable from scripts, threads and running loops.

        Example::

            answers = llm.batch(["Hi", "Bye"], return_exceptions=True)
        """
        if not inputs:
            return []
        return self.runtime.run_sync(lambda: self.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs))

    # -- fine-tuning, as LangChain's GradientLLM offers it -------------------------------------

    async def atrain_unsupervised(self, inputs: Sequence[str], **kwargs: Any) -> TrainResult:
        """Fine-tune this adapter on `inputs` (not retried once sent: it would train twice).

        `multipliers=[...]` (or in model_kwargs) weights each sample.

        Example::

            result = await llm.atrain_unsupervised([prompt + " Dallas Cowboys!"])
            print(result["loss"])
        """
        multipliers = {**(self.model_kwargs or {}), **kwargs}.get("multipliers")
        if multipliers is None:
            samples: list[dict[str, Any]] = [{"inputs": text} for text in inputs]
        else:
            if len(multipliers) != len(inputs):
                raise ValueError(f"got {len(multipliers)} multipliers for {len(inputs)} inputs; pass one per input")
            samples = [{"inputs": text, "multiplier": m} for text, m in zip(inputs, multipliers, strict=True)]
        client = await self.runtime.client()
        result = await client.fine_tunes.create(self.model_id, samples=samples)
        loss = result.mean_loss
        return TrainResult(
            loss=math.nan if loss is None else loss,
            number_of_trainable_tokens=result.number_of_trainable_tokens,
            sum_loss=result.sum_loss,
        )

    def train_unsupervised(self, inputs: Sequence[str], **kwargs: Any) -> TrainResult:
        """Blocking `atrain_unsupervised`.

        Example::

            print(llm.train_unsupervised(["Question: ...\\n\\nAnswer: Dallas Cowboys!"])["loss"])
        """
        return self.runtime.run_sync(lambda: self.atrain_unsupervised(inputs, **kwargs))

    # -- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connections this LLM opened (on the running loop and for sync calls); a shared
        `client` stays open.

        Example::

            async with GradientLLM(model=model_id) as llm:
                await llm.ainvoke("Hi")
        """
        await self.runtime.aclose()
        await anyio.to_thread.run_sync(self.runtime.close)

    def close(self) -> None:
        """Stop the private loop that serves sync calls and close its connections.

        Example::

            llm.close()
        """
        self.runtime.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
