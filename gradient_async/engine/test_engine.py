"""A deterministic test engine: fast, no ML dependencies, yet it visibly "learns".

What it does:

- **Tokens** are counted with a tokenizer-like rule: special-token markup such as
  ``<|im_start|>`` or ``</s>`` is one token when the segment's ``parse_special_tokens``
  is true; the rest splits into word pieces and punctuation with the regex ``\\w+|[^\\w\\s]``.
  ``"Answer: Dallas Cowboys!"`` is 5 tokens.
- **Fine-tuning** memorizes each sample (all segments joined) in the adapter's history,
  persisted as JSON under ``data_dir/test/<adapter_id>.json``. Only trainable segments count
  towards ``trainable_tokens`` and the loss. ``sum_loss`` is a deterministic per-token loss
  (from a hash of the token) times the sample's ``multiplier``, halved for every earlier
  time the same sample was trained: it decreases as training repeats, like a real run.
- **Generation** answers a prompt that starts a memorized sample with the rest of that
  sample (the most trained wins, ties go to the latest): after training on
  ``"...Answer: Dallas Cowboys!"`` the prompt ``"...Answer: "`` answers ``"Dallas Cowboys!"``.
  Any other prompt gets pseudo-text derived from a hash of (model, adapter history, prompt),
  so it changes after each fine-tune and is the same on every run. Output is limited to
  ``max_new_tokens`` tokens (default 32; finish reason ``"length"`` when cut, else ``"stop"``).
  Sampling settings are accepted and ignored. With ``guidance_choices`` the answer is the
  choice the memorized continuation starts with, else a hash-picked choice.

Example::

    engine = TestEngine(tmp_path)
    await engine.create_adapter(AdapterSpec(adapter_id="a", base_model_slug="gradient-test-model"))
    await engine.fine_tune(AdapterSpec("a", "gradient-test-model"),
                           [TrainingSample((TrainingSegment("Q: 2+2?\\nA: 4"),))])
    [out] = await engine.generate([GenerationRequest("gradient-test-model", "Q: 2+2?\\nA:", adapter_id="a")])
    assert out.text == "4"
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio

from gradient_async._crashpoints import crash_point
from gradient_async.engine.base import (
    AdapterSpec,
    BaseModelSpec,
    EngineError,
    FineTuneOutcome,
    GenerationRequest,
    GenerationResult,
    TrainingSample,
)

__all__ = ["TEST_BASE_MODELS", "TestEngine", "count_tokens", "tokenize", "write_durably"]

TEST_BASE_MODELS: Final = (
    BaseModelSpec(slug="gradient-test-model-mini", name="Gradient Test Model Mini"),
    BaseModelSpec(slug="gradient-test-model", name="Gradient Test Model"),
)
DEFAULT_MAX_NEW_TOKENS: Final = 32
EMBEDDING_DIM: Final = 32

_SPECIAL = re.compile(r"<\|[^|<>\s]{1,32}\|>|</?s>")
_PIECES = re.compile(r"\w+|[^\w\s]")
_VOCABULARY = (
    "the model answers with a short deterministic text about data training adapters and tokens "
    "it learns from samples while the loss goes down over time so tests can see what happens"
)
_WORDS: Final = tuple(_VOCABULARY.split())


def tokenize(text: str, *, parse_special_tokens: bool = True) -> list[str]:
    """Split `text` into tokens: special-token markup (when parsed), words and punctuation.

    Example::

        tokenize("<|im_start|>Hi, you!")  # ['<|im_start|>', 'Hi', ',', 'you', '!']
    """
    if not parse_special_tokens:
        return _PIECES.findall(text)
    tokens: list[str] = []
    pos = 0
    for match in _SPECIAL.finditer(text):
        tokens.extend(_PIECES.findall(text[pos : match.start()]))
        tokens.append(match.group())
        pos = match.end()
    tokens.extend(_PIECES.findall(text[pos:]))
    return tokens


def count_tokens(text: str, *, parse_special_tokens: bool = True) -> int:
    """The number of tokens `tokenize` finds in `text`."""
    return len(tokenize(text, parse_special_tokens=parse_special_tokens))


def _digest(*parts: str) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.digest()


def _token_loss(token: str) -> float:
    """A per-token loss in [1.5, 4.0), fixed for each token."""
    n = int.from_bytes(_digest("loss", token)[:4], "big")
    return 1.5 + 2.5 * (n / 2**32)


def _truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut after `max_tokens` tokens (by the tokenize rule); True when it was cut."""
    for count, match in enumerate(_PIECES.finditer(text), start=1):
        if count == max_tokens:
            rest = text[match.end() :]
            if _PIECES.search(rest):
                return text[: match.end()], True
            return text, False
    return text, False


@dataclass
class _Memory:
    """One memorized sample: its full text and how often it was trained."""

    text: str
    count: int
    last_step: int


@dataclass
class _AdapterState:
    base_model_slug: str
    rank: int | None = None
    learning_rate: float | None = None
    step: int = 0
    memories: dict[str, _Memory] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_model_slug": self.base_model_slug,
            "rank": self.rank,
            "learning_rate": self.learning_rate,
            "step": self.step,
            "history": [{"text": m.text, "count": m.count, "last_step": m.last_step} for m in self.memories.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _AdapterState:
        state = cls(
            base_model_slug=str(data["base_model_slug"]),
            rank=data.get("rank"),
            learning_rate=data.get("learning_rate"),
            step=int(data.get("step", 0)),
        )
        for item in data.get("history", []):
            mem = _Memory(text=str(item["text"]), count=int(item["count"]), last_step=int(item["last_step"]))
            state.memories[mem.text] = mem
        return state

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json()["history"], sort_keys=True).encode()).hexdigest()


class TestEngine:
    """The deterministic engine behind `--engine test` (see the module docstring for its rules).

    Durability: an adapter's JSON is written to a temporary file, flushed to disk, then renamed over
    the old one, and the in-memory state changes only after the rename: a crash or a full disk leaves
    the previous version, never half of one. Temporary files are removed on failure and at start-up;
    a full disk is an `EngineError` with status 507. Tokenizing, training, generating and JSON
    writing run in worker threads, so a large fine-tune never stalls the event loop.

    Args:
        data_dir: where adapter histories live (``data_dir/test/<adapter_id>.json``).

    Example::

        engine = TestEngine(Path("/tmp/engine"))
        print([m.slug for m in engine.base_models])
    """

    __test__ = False  # not a pytest test class

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self._dir = Path(data_dir) / "test"
        self._dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._dir.glob("*.tmp"):  # a crash mid-write: the previous version stands
            leftover.unlink(missing_ok=True)
        self._states: dict[str, _AdapterState] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.fine_tune_calls = 0

    @property
    def base_models(self) -> Sequence[BaseModelSpec]:
        return TEST_BASE_MODELS

    async def warm_up(self) -> None:
        """Nothing to load."""

    def readiness(self) -> str | None:
        """Always ready."""
        return None

    def count_tokens(self, model_slug: str, text: str) -> int:
        """Tokens of `text` by the tokenize rule (the server's limit hook; thread-safe)."""
        return count_tokens(text)

    def context_tokens(self, model_slug: str) -> int | None:
        """No context window of its own: the server's `context_tokens` limit applies."""
        return None

    def _path(self, adapter_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", adapter_id)
        return self._dir / f"{safe}.json"

    def _lock(self, adapter_id: str) -> anyio.Lock:
        lock = self._locks.get(adapter_id)
        if lock is None:
            lock = self._locks[adapter_id] = anyio.Lock()
        return lock

    def _check_slug(self, slug: str) -> None:
        if slug not in {m.slug for m in TEST_BASE_MODELS}:
            raise EngineError(f"unknown base model {slug!r}", type="unknownBaseModel", status_code=404)

    async def _load(self, adapter_id: str) -> _AdapterState:
        state = self._states.get(adapter_id)
        if state is not None:
            return state
        path = self._path(adapter_id)

        def read() -> _AdapterState | None:
            try:
                raw = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            return _AdapterState.from_json(json.loads(raw))

        loaded = await anyio.to_thread.run_sync(read)
        if loaded is None:
            raise EngineError(f"unknown model adapter {adapter_id!r}", type="unknownModelAdapter", status_code=404)
        return self._states.setdefault(adapter_id, loaded)

    async def _save(self, adapter_id: str, state: _AdapterState, text: str | None = None) -> None:
        """Write `state` durably, then (only then) make it the one served from memory."""
        path = self._path(adapter_id)

        def write() -> None:
            data = text if text is not None else json.dumps(state.to_json(), ensure_ascii=False)
            write_durably(path, data)

        await anyio.to_thread.run_sync(write)
        self._states[adapter_id] = state

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        self._check_slug(adapter.base_model_slug)
        state = _AdapterState(adapter.base_model_slug, rank=adapter.rank, learning_rate=adapter.learning_rate)
        async with self._lock(adapter.adapter_id):
            await self._save(adapter.adapter_id, state)

    async def delete_adapter(self, adapter_id: str) -> None:
        async with self._lock(adapter_id):
            self._states.pop(adapter_id, None)
            path = self._path(adapter_id)
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        states: list[_AdapterState | None] = []
        for request in requests:
            self._check_slug(request.model_slug)
            states.append(None if request.adapter_id is None else await self._load(request.adapter_id))
        pairs = list(zip(requests, states, strict=True))
        return await anyio.to_thread.run_sync(lambda: [self._generate_one(r, st) for r, st in pairs])

    def _generate_one(self, request: GenerationRequest, state: _AdapterState | None) -> GenerationResult:
        max_tokens = request.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if max_tokens < 1:
            raise EngineError("max_new_tokens must be at least 1", type="unprocessableContent", status_code=422)
        recalled = _recall(state, request.prompt)
        seed = _digest(request.model_slug, state.fingerprint() if state else "", request.prompt)
        if request.guidance_choices:
            choices = request.guidance_choices
            if recalled is not None:
                for choice in choices:
                    if recalled.lower().startswith(choice.lower()):
                        return GenerationResult(choice, "stop", len(tokenize(choice)))
            choice = choices[seed[0] % len(choices)]
            return GenerationResult(choice, "stop", len(tokenize(choice)))
        text = recalled if recalled is not None else _pseudo_text(seed)
        cut, truncated = _truncate(text, max_tokens)
        return GenerationResult(cut, "length" if truncated else "stop", len(tokenize(cut)))

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        async with self._lock(adapter.adapter_id):
            self.fine_tune_calls += 1
            current = await self._load(adapter.adapter_id)
            trained, outcome = await anyio.to_thread.run_sync(_train, current, samples)
            if not math.isfinite(outcome.sum_loss):
                raise EngineError("the loss of this fine-tune is not a finite number; nothing was applied", "nanLoss")
            text = await anyio.to_thread.run_sync(lambda: json.dumps(trained.to_json(), ensure_ascii=False))
            await self._save(adapter.adapter_id, trained, text)
            return outcome

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await anyio.to_thread.run_sync(lambda: [_embed_one(text) for text in texts])

    async def aclose(self) -> None:
        self._states.clear()


def _train(current: _AdapterState, samples: Sequence[TrainingSample]) -> tuple[_AdapterState, FineTuneOutcome]:
    """A trained copy of `current` (which is left as it was) and the outcome; runs in a worker thread."""
    state = dataclasses.replace(current, memories=dict(current.memories), step=current.step + 1)
    tokens = 0
    loss = 0.0
    for sample in samples:
        text = "".join(seg.value for seg in sample.segments)
        previous = state.memories.get(text)
        seen = previous.count if previous else 0
        sample_loss = 0.0
        for seg in sample.segments:
            if not seg.trainable:
                continue
            pieces = tokenize(seg.value, parse_special_tokens=seg.parse_special_tokens)
            tokens += len(pieces)
            sample_loss += sum(_token_loss(t) for t in pieces)
        loss += sample_loss * sample.multiplier * 0.5**seen
        state.memories[text] = _Memory(text=text, count=seen + 1, last_step=state.step)
    return state, FineTuneOutcome(trainable_tokens=tokens, sum_loss=round(loss, 6), steps=1)


def _embed_one(text: str) -> list[float]:
    raw = hashlib.shake_256(text.encode("utf-8")).digest(EMBEDDING_DIM * 2)
    values = [(int.from_bytes(raw[i : i + 2], "big") / 65535.0) * 2 - 1 for i in range(0, len(raw), 2)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def write_durably(path: Path, text: str) -> None:
    """Write `text` to `path` as one step: temp file, fsync, rename, fsync the folder.

    On any failure the temp file is removed and `path` keeps its previous content; a full disk
    raises `EngineError` (507, type `failed`).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_file(tmp, text)
        crash_point("test_engine.before_rename")
        os.replace(tmp, path)
        crash_point("test_engine.after_rename")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EngineError(
                f"no space left in the data dir ({path.parent}); nothing was changed",
                type="failed",
                status_code=507,
            ) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_file(path: Path, text: str) -> None:
    """Write and flush `text` to disk (the one place bytes reach the disk; tests make it fail)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the rename itself is atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _recall(state: _AdapterState | None, prompt: str) -> str | None:
    """The rest of the best memorized sample that `prompt` starts, without leading whitespace."""
    if state is None:
        return None
    key = prompt.rstrip()
    if not key:
        return None
    best: _Memory | None = None
    for mem in state.memories.values():
        matches = mem.text.startswith(key) and bool(mem.text[len(key) :].strip())
        if matches and (best is None or (mem.count, mem.last_step) > (best.count, best.last_step)):
            best = mem
    if best is None:
        return None
    return best.text[len(key) :].lstrip()


def _pseudo_text(seed: bytes) -> str:
    """8–40 words picked by a hash stream from `seed`, ending with a full stop."""
    stream = hashlib.shake_256(seed).digest(64)
    length = 8 + stream[0] % 33
    words = [_WORDS[stream[1 + i] % len(_WORDS)] for i in range(length)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."
