"""A training set, and the plan of steps (requests) a run sends for it.

A sample is what `client.fine_tunes.create` takes: a string, `{"inputs": str | [segments], "multiplier"?: float}`
or the wire shape (`fineTuningParameters`). A dataset is a list or iterable of them, or a JSONL file path
(one sample per line; blank lines ignored). Every sample is validated before anything is sent; errors name the
line (files) or the index (lists).

The plan is a pure function of the samples and the settings, so a resumed run recomputes the same steps:
each epoch shuffles the sample order with `random.Random(f"{seed}:{epoch}")`, then cuts it into requests of
at most `batch_size` samples, closing a request early when the next sample would pass the byte or token cap.

Example::

    samples = load_samples("train.jsonl")
    steps = plan_steps(samples, epochs=2, batch_size=8, seed=0)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from gradient_async._errors import InputValidationError
from gradient_async.resources.fine_tunes import normalize_samples
from gradient_async.types.fine_tunes import Sample

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "SampleSource",
    "Step",
    "TrainingSet",
    "load_samples",
    "plan_digest",
    "plan_steps",
]

DEFAULT_MAX_REQUEST_BYTES: Final = 1_000_000
"""Default cap on one fine-tune request body (compact JSON), well under common server body limits."""

_ENVELOPE: Final = len(b'{"samples":[]}')

SampleSource: TypeAlias = "str | os.PathLike[str] | Iterable[str | Sample | Mapping[str, Any]]"


@dataclass(frozen=True)
class TrainingSet:
    """Validated samples, kept only as their compact wire JSON (bytes) with a token estimate each,
    so a large training set costs little more memory than its file."""

    encoded: list[bytes]
    tokens: list[int]

    def __len__(self) -> int:
        return len(self.encoded)

    def sample(self, index: int) -> dict[str, Any]:
        """Sample `index` in wire shape."""
        value: dict[str, Any] = json.loads(self.encoded[index])
        return value


@dataclass(frozen=True)
class Step:
    """One fine-tune request of a run: `number` (1-based over the run), `epoch` (1-based),
    the indices of its samples, its body size and a digest that identifies its content."""

    number: int
    epoch: int
    indices: tuple[int, ...]
    body_bytes: int
    tokens: int
    digest: str


def _sample_text(sample: Mapping[str, Any]) -> str:
    inputs = sample["inputs"]
    if isinstance(inputs, str):
        return inputs
    return "".join(str(seg["value"]) for seg in inputs if seg.get("trainable", True))


def _default_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _iter_source(data: SampleSource) -> Iterable[tuple[str, Any]]:
    """(where, raw sample) pairs; `where` names the line or index for error messages."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise InputValidationError(f"training data not found: {path} (pass a JSONL file, one sample per line)")
        try:
            with path.open(encoding="utf-8-sig") as fh:
                for number, raw in enumerate(fh, start=1):
                    if not raw.strip():
                        continue
                    try:
                        yield f"{path}:{number}", json.loads(raw)
                    except json.JSONDecodeError as exc:
                        raise InputValidationError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise InputValidationError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise InputValidationError(f"cannot read training data {path}: {exc.strerror or exc}") from None
        return
    if isinstance(data, (bytes, Mapping)):
        raise InputValidationError("training data must be a JSONL path or a list of samples, e.g. [{'inputs': 'text'}]")
    for index, sample in enumerate(data):
        yield f"sample {index}", sample


def load_samples(data: SampleSource, *, tokenizer: Callable[[str], int] | None = None) -> TrainingSet:
    """Read and validate every sample of `data` (InputValidationError names the bad line or index).

    Example::

        train = load_samples([{"inputs": "Q: 2+2?\\nA: 4"}, "plain text sample"])
        print(len(train), train.tokens)
    """
    count = tokenizer or _default_tokens
    encoded: list[bytes] = []
    tokens: list[int] = []
    for where, raw in _iter_source(data):
        if not isinstance(raw, (str, Mapping, Sample)):
            raise InputValidationError(
                f"{where}: a sample must be a string or an object with 'inputs', got {raw!r:.80}"
            )
        try:
            [wire] = normalize_samples([raw])["samples"]
        except InputValidationError as exc:
            raise InputValidationError(f"{where}: {exc}") from None
        encoded.append(json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        tokens.append(int(count(_sample_text(wire))))
    if not encoded:
        raise InputValidationError("the training data has no samples")
    return TrainingSet(encoded, tokens)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputValidationError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def plan_steps(
    train: TrainingSet,
    *,
    epochs: int = 1,
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_request_tokens: int | None = None,
) -> list[Step]:
    """Every request of the run in order (deterministic for the same samples and settings).

    A sample that alone exceeds a cap is a InputValidationError naming it and the cap, raised before
    anything is sent.

    Example::

        steps = plan_steps(train, epochs=3, batch_size=4, max_request_tokens=2048)
        print(len(steps), steps[0].indices)
    """
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("max_request_bytes", max_request_bytes, _ENVELOPE + 2)
    if max_request_tokens is not None:
        _check_int("max_request_tokens", max_request_tokens, 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputValidationError(f"seed must be an integer, got {seed!r}")
    token_cap = max_request_tokens if max_request_tokens is not None else math.inf
    for index, (data, tokens) in enumerate(zip(train.encoded, train.tokens, strict=True)):
        if _ENVELOPE + len(data) > max_request_bytes:
            raise InputValidationError(
                f"sample {index} is {len(data)} bytes, over max_request_bytes={max_request_bytes}: "
                "shorten or split it, or raise the cap (up to the server's body limit)"
            )
        if tokens > token_cap:
            raise InputValidationError(
                f"sample {index} has about {tokens} tokens, over max_request_tokens={max_request_tokens}: "
                "shorten or split it, or raise the cap"
            )
    steps: list[Step] = []
    for epoch in range(1, epochs + 1):
        order = list(range(len(train)))
        if shuffle:
            random.Random(f"{seed}:{epoch}").shuffle(order)
        current: list[int] = []
        size = _ENVELOPE
        tokens = 0

        def close(epoch: int = epoch) -> None:
            nonlocal current, size, tokens
            digest = hashlib.sha256()
            for i in current:
                digest.update(hashlib.sha256(train.encoded[i]).digest())
            steps.append(Step(len(steps) + 1, epoch, tuple(current), size, tokens, digest.hexdigest()[:32]))
            current, size, tokens = [], _ENVELOPE, 0

        for i in order:
            extra = len(train.encoded[i]) + (1 if current else 0)
            if current and (
                len(current) >= batch_size or size + extra > max_request_bytes or tokens + train.tokens[i] > token_cap
            ):
                close()
                extra = len(train.encoded[i])
            current.append(i)
            size += extra
            tokens += train.tokens[i]
        if current:
            close()
    return steps


def plan_digest(adapter_id: str, steps: Iterable[Step]) -> str:
    """One digest for the whole plan: a checkpoint only resumes the run it was written for."""
    h = hashlib.sha256(adapter_id.encode("utf-8"))
    for step in steps:
        h.update(f"{step.number}:{step.epoch}:{step.digest};".encode())
    return h.hexdigest()[:32]
