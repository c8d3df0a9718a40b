"""Bring-your-own base models: `--model PATH[=NAME]` checked once, at start-up.

A model is a Hugging Face folder (``config.json``, safetensors or ``pytorch_model*.bin``
weights, a tokenizer) or one GGUF file. Nothing is downloaded: a path that is missing,
unreadable or incomplete is a `ValueError` naming the path and what is wrong.

The slug (and so the base model id in ``GET /models``) comes from NAME, else from the
file or folder name, so it stays the same across restarts and machines.

Example::

    source = parse_model_arg("/models/tiny-llama=Tiny Llama")
    source.slug, source.kind        # ("tiny-llama", "hf")
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ModelSource", "check_unique", "parse_model_arg", "slugify"]

_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ModelSource:
    """A checked local base model: `path`, display `name`, stable `slug`, `kind` hf|gguf."""

    path: Path
    name: str
    slug: str
    kind: Literal["hf", "gguf"]


def slugify(text: str) -> str:
    """Lower-case letters, digits, `.`, `_` and `-`; other runs become one `-`.

    Example::

        slugify("My Llama 3.2 (1B)")   # "my-llama-3.2-1b"
    """
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-.")
    return slug[:64]


def _readable(path: Path) -> None:
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ValueError(f"--model {path}: cannot read {path.name} ({exc.strerror or exc})") from None


def _check_folder(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"--model {path}: no config.json; expected a Hugging Face model folder or a .gguf file")
    _readable(config)
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"--model {path}: config.json is not valid JSON ({exc})") from None
    weights = [w for pattern in _WEIGHTS for w in sorted(path.glob(pattern))]
    if not weights:
        raise ValueError(f"--model {path}: no weights (*.safetensors or pytorch_model*.bin)")
    for w in weights:
        _readable(w)
    tokenizer = [path / t for t in _TOKENIZER if (path / t).is_file()]
    if not tokenizer:
        raise ValueError(f"--model {path}: no tokenizer (tokenizer.json, tokenizer.model or tokenizer_config.json)")
    for t in tokenizer:
        _readable(t)


def _check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ValueError(f"--model {path}: cannot read the file ({exc.strerror or exc})") from None
    if magic != b"GGUF":
        raise ValueError(f"--model {path}: not a GGUF file (it does not start with the GGUF magic bytes)")


def parse_model_arg(text: str) -> ModelSource:
    """`PATH` or `PATH=NAME` -> a checked `ModelSource`; ValueError says what to fix.

    Example::

        parse_model_arg("./SmolLM2-360M-Instruct.Q8_0.gguf=SmolLM2 360M")
    """
    raw, name = text, ""
    if "=" in text and not Path(text).exists():
        raw, _, name = text.rpartition("=")
        name = name.strip()
    if not raw.strip():
        raise ValueError(f"--model {text!r}: give a path (PATH or PATH=NAME)")
    path = Path(raw).expanduser()
    if not path.exists():
        raise ValueError(f"--model {path}: no such file or folder")
    path = path.resolve()
    if path.is_dir():
        _check_folder(path)
        kind: Literal["hf", "gguf"] = "hf"
    elif path.suffix.lower() == ".gguf":
        _check_gguf(path)
        kind = "gguf"
    else:
        raise ValueError(f"--model {path}: expected a Hugging Face model folder or a .gguf file")
    display = name or (path.stem if kind == "gguf" else path.name)
    slug = slugify(display)
    if not slug:
        raise ValueError(f"--model {text!r}: the name {display!r} has no letters or digits; use PATH=NAME")
    return ModelSource(path=path, name=display, slug=slug, kind=kind)


def check_unique(sources: Iterable[ModelSource]) -> tuple[ModelSource, ...]:
    """The sources as a tuple; ValueError when two share a slug (name one with PATH=NAME)."""
    seen: dict[str, ModelSource] = {}
    for source in sources:
        other = seen.get(source.slug)
        if other is not None:
            raise ValueError(
                f"--model {source.path} and --model {other.path} both get the id slug {source.slug!r}; "
                "give one a different name with PATH=NAME"
            )
        seen[source.slug] = source
    return tuple(seen.values())
