"""The one place that knows the engines: name -> factory + availability check.

The server's `--engine` choices, `auto`, `ServerSettings` and the demo all read
`ENGINES`. Adding an engine is one module in `engine/` and one entry here.

Example::

    availability("local")            # None when it can run, else what to install
    name, why = resolve_engine("auto")
    engine = create_engine(name, EngineOptions(data_dir=Path("data/engine")))
    await engine.warm_up()
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gradient_async.engine.base import Engine
from gradient_async.engine.models import ModelSource, check_unique

__all__ = [
    "ENGINES",
    "EngineEntry",
    "EngineOptions",
    "EngineUnavailable",
    "availability",
    "create_engine",
    "engine_choices",
    "resolve_engine",
]


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says what to install or pass."""


@dataclass(frozen=True)
class EngineOptions:
    """What a factory gets. `models` empty means the engine's default base model(s).

    Args:
        data_dir: the engine's own files (adapters, converted models, logs).
        models: checked `--model` sources (see `gradient_async.engine.models`).
        batch_max_size / batch_wait_ms: dynamic batching, for engines that batch in-process.
        vllm_url: an already running vLLM OpenAI-compatible server (else a child is started).
        vllm_python: the Python of the vLLM virtualenv for the child (default: `default_vllm_python()`).
        vllm_args: extra command-line arguments for the vLLM child (e.g. `--tensor-parallel-size=2`).
    """

    data_dir: Path
    models: tuple[ModelSource, ...] = ()
    batch_max_size: int = 32
    batch_wait_ms: float = 2.0
    vllm_url: str | None = None
    vllm_python: Path | None = None
    vllm_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", check_unique(self.models))


@dataclass(frozen=True)
class EngineEntry:
    """One engine: `factory(options)` builds it; `available(options)` is None or what to install
    (None options: the defaults). `auto_rank`: `auto` picks the available engine with the highest
    rank (None: never)."""

    name: str
    summary: str
    factory: Callable[[EngineOptions], Engine]
    available: Callable[[EngineOptions | None], str | None]
    auto_rank: int | None = None


def _batched(inner: Any, options: EngineOptions) -> Engine:
    from gradient_async.engine.batched import BatchedEngine

    return BatchedEngine(inner, max_batch_size=options.batch_max_size, max_wait_s=options.batch_wait_ms / 1000.0)


def _test_factory(options: EngineOptions) -> Engine:
    if options.models:
        raise EngineUnavailable(
            "--model needs a real engine (--engine local or vllm); the test engine has fixed models"
        )
    from gradient_async.engine.test_engine import TestEngine

    return _batched(TestEngine(options.data_dir), options)


def _local_available(options: EngineOptions | None) -> str | None:
    missing = [m for m in ("torch", "transformers", "peft", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        return f"the local engine needs {', '.join(missing)}: pip install 'gradient-async[local]'"
    if options is not None and options.models:
        return None
    try:
        from gradient_async.engine._local_model import locate_gguf

        locate_gguf()
    except ImportError as exc:
        return f"the local engine does not import ({exc}); pip install 'gradient-async[local]'"
    except FileNotFoundError as exc:
        return f"the packaged model is missing ({exc}); or give one with --model PATH"
    return None


def _local_factory(options: EngineOptions) -> Engine:
    try:
        module: Any = importlib.import_module("gradient_async.engine.local")
    except ImportError as exc:
        raise EngineUnavailable(
            f"the local engine needs the [local] extra: pip install 'gradient-async[local]' ({exc})"
        ) from exc
    if not options.models:
        try:
            return _batched(module.LocalEngine(options.data_dir), options)
        except FileNotFoundError as exc:
            raise EngineUnavailable(f"{exc}; or give a model with --model PATH") from None
    engines = [
        _batched(
            module.LocalEngine(
                options.data_dir / "models" / m.slug, model_path=m.path, model_slug=m.slug, model_name=m.name
            ),
            options,
        )
        for m in options.models
    ]
    if len(engines) == 1:
        return engines[0]
    from gradient_async.engine.router import ModelRouter

    return ModelRouter(engines)


def _vllm_available(options: EngineOptions | None) -> str | None:
    local = _local_available(options)
    if local is not None:
        return f"the vllm engine trains adapters with the local engine's peft trainer: {local}"
    if options is not None and options.vllm_url:
        return None
    from gradient_async.engine.vllm import default_vllm_python

    python = options.vllm_python if options is not None and options.vllm_python else default_vllm_python()
    if not python.is_file():
        return (
            f"the vllm engine starts vLLM with {python}, which does not exist: build that virtualenv with "
            "`make vllm-venv`, or pass --vllm-python PATH (or set GRADIENT_VLLM_PYTHON), "
            "or --vllm-url URL for a running vLLM server"
        )
    return None


def _vllm_factory(options: EngineOptions) -> Engine:
    from gradient_async.engine.vllm import build_vllm_engines

    engines = build_vllm_engines(options)
    if len(engines) == 1:
        return engines[0]
    from gradient_async.engine.router import ModelRouter

    return ModelRouter(engines)


_ENTRIES = (
    EngineEntry("test", "deterministic, no ML packages (tests, demos)", _test_factory, lambda options: None, 0),
    EngineEntry("local", "SmolLM2-135M or --model, peft LoRA, on this machine", _local_factory, _local_available, 1),
    EngineEntry("vllm", "vLLM (a child process or --vllm-url), peft LoRA", _vllm_factory, _vllm_available),
)

ENGINES: Mapping[str, EngineEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def engine_choices() -> tuple[str, ...]:
    """What `--engine` accepts: `auto` and every registered name."""
    return ("auto", *ENGINES)


def _entry(name: str) -> EngineEntry:
    entry = ENGINES.get(name)
    if entry is None:
        raise ValueError(f"engine must be one of {', '.join(engine_choices())}; got {name!r}")
    return entry


def availability(name: str, options: EngineOptions | None = None) -> str | None:
    """None when engine `name` can run here (with `options`, else its defaults); otherwise
    what to install or pass (a message to show)."""
    return _entry(name).available(options)


def resolve_engine(name: str) -> tuple[str, str | None]:
    """(engine name, why better engines were skipped). `auto` picks the available engine of
    highest `auto_rank`; any other name is checked and returned as it is.

    Example::

        resolve_engine("auto")   # ("local", None) with the [local] extra, else ("test", "...")
    """
    if name != "auto":
        _entry(name)
        return name, None
    skipped: list[str] = []
    for entry in sorted(ENGINES.values(), key=lambda e: -(e.auto_rank if e.auto_rank is not None else -1)):
        if entry.auto_rank is None:
            continue
        reason = entry.available(None)
        if reason is None:
            return entry.name, "; ".join(skipped) or None
        skipped.append(f"{entry.name}: {reason}")
    raise EngineUnavailable("no engine is available: " + "; ".join(skipped))


def create_engine(name: str, options: EngineOptions) -> Engine:
    """Build engine `name` (not `auto`: resolve it first); EngineUnavailable says what is missing."""
    entry = _entry(name)
    reason = entry.available(options)
    if reason is not None:
        raise EngineUnavailable(reason)
    return entry.factory(options)
