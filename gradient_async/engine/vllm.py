"""The vLLM engine: completions served by a vLLM OpenAI-compatible server, adapters trained here.

Serving: `--vllm-url URL` names a running vLLM server (a GPU box, a fleet behind a router;
it must see this machine's adapter folder at the same path, i.e. a shared store); without it
the engine starts one as a child process (`VllmChild`) for the base model and stops it on
shutdown. vLLM schedules its own batches, so this engine is an `Engine` without a batcher.

Training: the project's own peft trainer (`LocalEngine`, used only for its Trainer role and
embeddings) trains the LoRA adapter and writes it in PEFT format. The engine copies that folder
to a new version `<data_dir>/loras/<key>/v<N>`, loads it into vLLM under a versioned name
(`POST /v1/load_lora_adapter`), switches the adapter to it, then unloads the previous version:
`fine_tune` returns only once the new version is served. Deleting an adapter unloads it.

A child that dies is reported (`readiness()`, and 503 errors quoting its log) and restarted on
the next request, up to `restarts` times; adapters are reloaded lazily after a restart.
Embeddings come from vLLM when it serves them for the model, else from the local trainer.

Example::

    engine = VllmEngine(Path("data/vllm"), trainer=LocalEngine(Path("data/trainer")),
                        model=BaseModelSpec("smollm2-135m-instruct", "SmolLM2 135M Instruct"),
                        python=Path(".venv-vllm/bin/python"))
    await engine.warm_up()                               # ~35 s on 2 CPU cores
    result = await engine.complete(GenerationRequest("smollm2-135m-instruct", "Hi"))
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx

from gradient_async.engine._vllm_child import DEFAULT_MAX_LORA_RANK, ChildFailed, VllmChild, cli_flag
from gradient_async.engine._vllm_wire import completion_body, completion_result, error_message
from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    EngineError,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    Trainer,
    TrainingSample,
)

if TYPE_CHECKING:
    from gradient_async.engine.registry import EngineOptions

__all__ = [
    "DEFAULT_MAX_LORA_RANK",
    "VLLM_VERSION",
    "PeftTrainer",
    "VllmEngine",
    "build_vllm_engines",
    "default_vllm_python",
]

VLLM_VERSION = "0.32.0"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def default_vllm_python() -> Path:
    """`$GRADIENT_VLLM_PYTHON`, else the virtualenv `make vllm-venv` builds
    (`$XDG_CACHE_HOME` or `~/.cache`, then `gradient-async/venv-vllm-<version>/bin/python`)."""
    explicit = os.environ.get("GRADIENT_VLLM_PYTHON")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "gradient-async" / f"venv-vllm-{VLLM_VERSION}" / "bin" / "python"


class PeftTrainer(Trainer, Protocol):
    """What the vLLM engine needs from its trainer (the local engine has all of it)."""

    async def warm_up(self) -> None: ...

    def adapter_path(self, adapter_id: str) -> Path | None:
        """The adapter's current weights as a PEFT folder, or None before its first fine-tune."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


def _unavailable(message: str) -> EngineError:
    return EngineError(message, type="engineUnavailable", status_code=503)


class VllmEngine:
    """An `Engine` over vLLM (see the module docstring).

    Args:
        data_dir: versioned adapter copies (`loras/`) and the child's log (`vllm.log`).
        trainer: trains adapters (a `LocalEngine` on the same base model).
        model: the base model as the catalogue shows it; its slug is vLLM's served model name.
        model_dir: the Hugging Face folder vLLM loads; None: `model_dir_of_trainer` after warm-up.
        url: a running vLLM server; None starts a child with `python`.
        restarts: how often a dead child is restarted before requests fail for good.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        trainer: PeftTrainer,
        model: BaseModelSpec,
        model_dir: Path | None = None,
        url: str | None = None,
        python: Path | None = None,
        max_lora_rank: int | None = None,
        max_loras: int = 8,
        kv_cache_gib: float = 1.0,
        extra_args: Sequence[str] = (),
        max_new_tokens_default: int = 64,
        startup_timeout_s: float = 900.0,
        request_timeout_s: float = 600.0,
        restarts: int = 2,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.trainer = trainer
        self.model = model
        self.model_dir = model_dir
        self.url = url.rstrip("/") if url else None
        self.python = python or default_vllm_python()
        given = cli_flag(extra_args, "--max-lora-rank")
        if given is not None:
            try:
                max_lora_rank = int(given)
            except ValueError:
                max_lora_rank = 0
            if max_lora_rank < 1:
                raise ValueError(
                    f"--max-lora-rank must be an integer >= 1 (--vllm-arg=--max-lora-rank=16), got {given!r}"
                )
        # a running server (url) has its own setting: adapters are checked against it only when told
        self.max_lora_rank = max_lora_rank if max_lora_rank is not None or url else DEFAULT_MAX_LORA_RANK
        self.max_new_tokens_default = max_new_tokens_default
        self.startup_timeout_s = startup_timeout_s
        self.request_timeout_s = request_timeout_s
        self.restarts = restarts
        self.child: VllmChild | None = None
        if self.url is None:
            self.child = VllmChild(
                self.python,
                Path("."),
                served_name=model.slug,
                log_path=self.data_dir / "vllm.log",
                max_lora_rank=self.max_lora_rank or DEFAULT_MAX_LORA_RANK,
                max_loras=max_loras,
                kv_cache_gib=kv_cache_gib,
                extra_args=extra_args,
            )
        self._http: httpx.AsyncClient | None = None
        self._start_lock: anyio.Lock | None = None
        self._adapter_locks: dict[str, anyio.Lock] = {}
        self._ready = False
        self._starting = False
        self._failure: str | None = None
        self._tokenizer: Any = None
        self._served: dict[str, str] = {}  # adapter id -> LoRA name loaded in vLLM now
        self._embeds_via_vllm: bool | None = None
        self._closed = False
        self.served_name = model.slug  # vLLM's name of the base model (--vllm-url: read from /v1/models)

    # ------------------------------------------------------------ protocol
    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return (self.model,)

    @property
    def embeddings_source(self) -> str:
        """ "vllm" or "local" (decided at warm-up; "local" before)."""
        return "vllm" if self._embeds_via_vllm else "local"

    async def warm_up(self) -> None:
        await self._ensure_ready()

    def count_tokens(self, model_slug: str, text: str) -> int:
        """Tokens of `text` by the model's tokenizer (a bytes/4 estimate before start-up); thread-safe."""
        tok = self._tokenizer
        if tok is None:
            return max(1, len(text.encode("utf-8")) // 4)
        return len(tok(text, add_special_tokens=False).input_ids)

    def context_tokens(self, model_slug: str) -> int | None:
        """The child's `--max-model-len`; None for a `--vllm-url` server (its own limit applies)."""
        return self.child.max_model_len if self.child is not None else None

    def readiness(self) -> str | None:
        if self._closed:
            return "the vllm engine is closed"
        child = self.child
        if child is not None and child.starts > 0 and not child.running and not self._starting:
            return child.exit_message().splitlines()[0]
        if self._failure is not None:
            return self._failure.splitlines()[0]
        if self._starting:
            return "the vLLM server is starting"
        if not self._ready:
            return "the vLLM server is not started yet (it starts with the first request)"
        return None

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        self._check_request(request)
        await self._ensure_ready()
        for attempt in range(2):
            model = self.served_name
            if request.adapter_id is not None:
                model = await self._lora_name(request.adapter_id) or model
            prompt, templated = self._prompt(request)
            body = completion_body(
                request, model=model, prompt=prompt, templated=templated, max_tokens=self.max_new_tokens_default
            )
            response = await self._post("/v1/completions", body)
            if response.status_code == 404 and attempt == 0 and request.adapter_id is not None:
                # the version we named was switched out meanwhile (a fine-tune or a restart): once more
                if self._served.get(request.adapter_id) == model:
                    del self._served[request.adapter_id]
                continue
            return completion_result(self._json_or_raise(response, "completion"))
        raise EngineError("the adapter's LoRA kept disappearing from vLLM", type="engineError", status_code=503)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        if not texts:
            return []
        await self._ensure_ready()
        if not self._embeds_via_vllm:
            return await self.trainer.embed(texts)
        response = await self._post("/v1/embeddings", {"model": self.served_name, "input": texts})
        data = self._json_or_raise(response, "embedding")
        items = sorted(data["data"], key=lambda item: item["index"])
        return [[float(v) for v in item["embedding"]] for item in items]

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        self._check_slug(adapter.base_model_slug)
        if adapter.rank is not None and self.max_lora_rank is not None and adapter.rank > self.max_lora_rank:
            raise EngineError(
                f"rank must be <= {self.max_lora_rank} with the vllm engine (its --max-lora-rank), got {adapter.rank}; "
                "use a smaller rank, or start the server with --vllm-arg=--max-lora-rank=N"
            )
        await self.trainer.create_adapter(adapter)

    async def delete_adapter(self, adapter_id: str) -> None:
        async with self._adapter_lock(adapter_id):
            name = self._served.pop(adapter_id, None)
            if name is None and self.url is not None:
                latest = self._latest_version(adapter_id)
                name = None if latest is None else self._lora_version_name(adapter_id, latest)
            if name is not None and self._ready:
                try:
                    await self._unload(name)
                except EngineError as exc:
                    if exc.status_code != 503:  # an unreachable/dead vLLM has nothing loaded to unload
                        raise
            await self.trainer.delete_adapter(adapter_id)
            await anyio.to_thread.run_sync(shutil.rmtree, self._adapter_dir(adapter_id), True)

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        self._check_slug(adapter.base_model_slug)
        await self._ensure_ready()
        async with self._adapter_lock(adapter.adapter_id):
            outcome = await self.trainer.fine_tune(adapter, samples)
            source = self.trainer.adapter_path(adapter.adapter_id)
            if source is None:
                raise EngineError("the trainer wrote no adapter weights", type="engineError", status_code=500)
            version = (self._latest_version(adapter.adapter_id) or 0) + 1
            target = await anyio.to_thread.run_sync(self._copy_version, adapter.adapter_id, source, version)
            name = self._lora_version_name(adapter.adapter_id, version)
            await self._load(name, target)
            previous = self._served.get(adapter.adapter_id)
            self._served[adapter.adapter_id] = name
            if previous is not None and previous != name:
                await self._unload(previous)
            await anyio.to_thread.run_sync(self._prune_versions, adapter.adapter_id, version)
        return outcome

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                if self.child is not None:
                    await self.child.stop()
                if self._http is not None:
                    await self._http.aclose()
            finally:
                await self.trainer.aclose()

    # ------------------------------------------------------------- serving
    async def _ensure_ready(self) -> None:
        if self._closed:
            raise _unavailable("the vllm engine is closed")
        child = self.child
        if self._ready and (child is None or child.running):
            return
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            if self._ready and (child is None or child.running):
                return
            if child is not None and child.starts > 0:
                death = child.exit_message() if child.returncode is not None else None
                if child.starts > self.restarts:
                    raise _unavailable(f"{death or self._failure}\n(no restarts left; restart the server)")
            self._starting = True
            try:
                await self._start()
            except ChildFailed as exc:
                self._failure = str(exc)
                raise _unavailable(str(exc)) from None
            finally:
                self._starting = False
            self._failure = None

    async def _start(self) -> None:
        self._ready = False
        self._served.clear()  # a new vLLM has no adapters loaded
        http = self._client()
        if self.child is None:
            self.served_name = await self._remote_model_name()  # an unreachable URL fails here, fast
        model_dir = await self._model_dir()
        if self._tokenizer is None:
            self._tokenizer = await anyio.to_thread.run_sync(_load_tokenizer, model_dir)
        if self.child is not None:
            self.child.model_dir = model_dir
            self.child.start()
            await self.child.wait_ready(http, timeout=self.startup_timeout_s)
        if self._embeds_via_vllm is None:
            probe = await self._post("/v1/embeddings", {"model": self.served_name, "input": ["probe"]})
            self._embeds_via_vllm = probe.status_code == 200
        self._ready = True

    async def _remote_model_name(self) -> str:
        """The base model a `--vllm-url` server serves: the one named like our slug, else its only one."""
        try:
            response = await self._client().get(f"{self._base_url}/v1/models", timeout=30.0)
            data = response.json()
            models = [m for m in data["data"] if not m.get("parent")]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise ChildFailed(
                f"the vLLM server at {self.url} did not list its models (GET /v1/models): {exc!r}"
            ) from None
        ids = [str(m.get("id")) for m in models]
        if self.model.slug in ids:
            return self.model.slug
        if len(ids) == 1:
            return ids[0]
        raise ChildFailed(
            f"the vLLM server at {self.url} serves {ids}; start it with --served-model-name {self.model.slug}"
        )

    async def _model_dir(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        await self.trainer.warm_up()
        folder = model_dir_of_trainer(self.trainer, self.model.slug)
        if not (folder / "config.json").is_file():
            raise ChildFailed(f"the trainer left no Hugging Face folder for vLLM at {folder}")
        self.model_dir = folder
        return folder

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.request_timeout_s, connect=10.0),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            )
        return self._http

    @property
    def _base_url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.child is not None
        return self.child.url

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await self._client().post(f"{self._base_url}{path}", json=body)
        except httpx.TimeoutException as exc:
            raise _unavailable(f"the vLLM server did not answer {path} within the timeout ({exc!r})") from None
        except httpx.TransportError as exc:
            child = self.child
            # a dying child closes its sockets just before it is reaped
            if child is not None and (not child.running or await child.wait_exit(2.0)):
                self._ready = False
                raise _unavailable(child.exit_message()) from None
            message = f"the vLLM server at {self._base_url} is not reachable ({exc!r})"
            if self.url is not None:
                self._failure = message
            raise _unavailable(message) from None
        if self.url is not None and self._ready:
            self._failure = None
        return response

    @staticmethod
    def _json_or_raise(response: httpx.Response, what: str) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 200 and data is not None:
            return data
        message = error_message(data, response.text[:300])
        if 400 <= response.status_code < 500:
            raise EngineError(f"vLLM refused the {what}: {message}", status_code=422)
        raise EngineError(
            f"the vLLM server failed the {what} ({response.status_code}): {message}",
            type="engineError",
            status_code=502,
        )

    def _prompt(self, request: GenerationRequest) -> tuple[str, bool]:
        tok = self._tokenizer
        if request.auto_template and tok is not None and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": request.prompt}], tokenize=False, add_generation_prompt=True
            )
            return str(text), True
        return request.prompt, False

    # ------------------------------------------------------------- adapters
    def _adapter_lock(self, adapter_id: str) -> anyio.Lock:
        lock = self._adapter_locks.get(adapter_id)
        if lock is None:
            lock = self._adapter_locks[adapter_id] = anyio.Lock()
        return lock

    @staticmethod
    def _key(adapter_id: str) -> str:
        return hashlib.sha256(adapter_id.encode()).hexdigest()[:24]

    def _adapter_dir(self, adapter_id: str) -> Path:
        return self.data_dir / "loras" / self._key(adapter_id)

    def _lora_version_name(self, adapter_id: str, version: int) -> str:
        return f"lora-{self._key(adapter_id)}-v{version}"

    def _latest_version(self, adapter_id: str) -> int | None:
        try:
            names = [p.name for p in self._adapter_dir(adapter_id).iterdir() if p.is_dir()]
        except OSError:
            return None
        versions = [int(m.group(1)) for m in map(_VERSION_DIR.match, names) if m]
        return max(versions) if versions else None

    def _copy_version(self, adapter_id: str, source: Path, version: int) -> Path:
        directory = self._adapter_dir(adapter_id)
        target = directory / f"v{version}"
        tmp = directory / f"v{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        os.replace(tmp, target)
        return target

    def _prune_versions(self, adapter_id: str, current: int) -> None:
        """Keep the current version and the one before (requests in flight may still use it)."""
        directory = self._adapter_dir(adapter_id)
        for path in directory.iterdir():
            match = _VERSION_DIR.match(path.name)
            if (match and int(match.group(1)) < current - 1) or path.name.endswith(".tmp"):
                shutil.rmtree(path, ignore_errors=True)

    async def _lora_name(self, adapter_id: str) -> str | None:
        """The LoRA name serving `adapter_id` (loaded now if needed); None before its first fine-tune."""
        name = self._served.get(adapter_id)
        if name is not None:
            return name
        async with self._adapter_lock(adapter_id):
            name = self._served.get(adapter_id)
            if name is not None:
                return name
            version = self._latest_version(adapter_id)
            if version is None:
                return None
            name = self._lora_version_name(adapter_id, version)
            await self._load(name, self._adapter_dir(adapter_id) / f"v{version}")
            self._served[adapter_id] = name
            return name

    async def _load(self, name: str, path: Path) -> None:
        response = await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if response.status_code == 400 and "already been loaded" in response.text:
            return  # a vLLM we reconnected to (--vllm-url) still has it
        if response.status_code != 200:
            message = error_message(_json(response), response.text[:300])
            if "max_lora_rank" in message:  # the adapter itself cannot be served: not worth a retry
                raise EngineError(
                    f"vLLM cannot serve the adapter {name}: {message} Retrain it with a smaller rank, or start "
                    "vLLM with a larger --max-lora-rank (here: --vllm-arg=--max-lora-rank=N)",
                    status_code=422,
                )
            raise EngineError(
                f"vLLM could not load the adapter {name} from {path}: {message}", type="engineError", status_code=502
            )

    async def _unload(self, name: str) -> None:
        response = await self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code not in (200, 404):
            message = error_message(_json(response), response.text[:300])
            raise EngineError(
                f"vLLM could not unload the adapter {name}: {message}", type="engineError", status_code=502
            )

    # ----------------------------------------------------------- validation
    def _check_slug(self, slug: str) -> None:
        if slug != self.model.slug:
            raise EngineError(f"unknown base model {slug!r}", type="unknownModelAdapter", status_code=404)

    def _check_request(self, r: GenerationRequest) -> None:
        self._check_slug(r.model_slug)
        if r.max_new_tokens is not None and r.max_new_tokens < 1:
            raise EngineError(f"maxGeneratedTokenCount must be >= 1, got {r.max_new_tokens}")
        if r.temperature is not None and not r.temperature >= 0:
            raise EngineError(f"temperature must be >= 0, got {r.temperature}")
        if r.top_k is not None and r.top_k < 0:
            raise EngineError(f"topK must be >= 0, got {r.top_k}")
        if r.top_p is not None and not 0 < r.top_p <= 1:
            raise EngineError(f"topP must be in (0, 1], got {r.top_p}")
        if r.guidance_choices is not None and (not r.guidance_choices or not all(r.guidance_choices)):
            raise EngineError("guidance choices must be a non-empty list of non-empty strings")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _load_tokenizer(model_dir: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def model_dir_of_trainer(trainer: object, slug: str) -> Path:
    """The Hugging Face folder the local trainer loads: its `model_path` when that is a folder,
    else the folder it converted the GGUF file into (`<data_dir>/base/<slug>`)."""
    model_path = getattr(trainer, "model_path", None)
    if isinstance(model_path, Path) and model_path.is_dir():
        return model_path
    data_dir: object = getattr(trainer, "data_dir", ".")
    return Path(str(data_dir)) / "base" / slug


def build_vllm_engines(options: EngineOptions) -> list[VllmEngine]:
    """One `VllmEngine` per base model of `options` (the packaged SmolLM2 when none), each with a
    `LocalEngine` as its trainer. Files: `<data_dir>/{trainer,vllm}` for the default model,
    `<data_dir>/models/<slug>/{trainer,vllm}` for `--model` ones."""
    from gradient_async.engine.local import LocalEngine

    python = options.vllm_python or default_vllm_python()
    if not options.models:
        trainer = LocalEngine(options.data_dir / "trainer")
        [spec] = trainer.base_models
        return [
            VllmEngine(
                options.data_dir / "vllm",
                trainer=trainer,
                model=spec,
                url=options.vllm_url,
                python=python,
                extra_args=options.vllm_args,
            )
        ]
    engines = []
    for source in options.models:
        root = options.data_dir / "models" / source.slug
        trainer = LocalEngine(root / "trainer", model_path=source.path, model_slug=source.slug, model_name=source.name)
        engines.append(
            VllmEngine(
                root / "vllm",
                trainer=trainer,
                model=BaseModelSpec(source.slug, source.name),
                model_dir=source.path if source.kind == "hf" else None,
                url=options.vllm_url,
                python=python,
                extra_args=options.vllm_args,
            )
        )
    return engines
