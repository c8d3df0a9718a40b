"""Scorers: each gives every answered item a value in [0, 1].

By name (CLI `--scorer`, or a string in Python):

- `exact`: the answer equals an expected string (surrounding whitespace ignored).
- `normalized`: equal after case folding, dropping punctuation and collapsing whitespace.
- `contains`: an expected string appears in the answer, case-insensitively.
- `regex`: an expected string, taken as a regular expression, matches (search) the answer;
  `regex:PATTERN` uses PATTERN for every item instead.
- `number`, `number:TOL`: the first number in the answer is within TOL (default 1e-6, absolute, or
  relative to the expected value when that is larger) of an expected number. `1,234.5` and `-3e2` parse.
- `similarity`, `similarity:THRESHOLD`: cosine of the answer's and the expected text's embeddings (the API's
  embeddings endpoint, model `bge-large`), 1 when at least THRESHOLD (default 0.8) for some expected string.
  `Similarity(threshold=None)` gives the raw cosine clipped to [0, 1] instead.
- `judge:MODEL_ID`: asks MODEL_ID whether the answer is correct, constrained with
  `guidance: {"type": "choice", "value": ["correct", "incorrect"]}`; 1 for "correct".

Any Python callable `fn(answer, item) -> float | bool` is a scorer too (named after the function).
A scorer that fails on an item (an exception, a value outside [0, 1], a failed API call) gives that
item no score; the failure is reported with the row, never counted as a wrong answer.

Example::

    scorers = resolve_scorers(["contains", "number:0.5", Judge("judge-model-id"), lambda a, item: len(a) < 80])
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias, runtime_checkable

from gradient_async._errors import GradientError, InputValidationError
from gradient_async.evaluation.dataset import EvalItem

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient

__all__ = [
    "Answered",
    "Contains",
    "Exact",
    "FunctionScorer",
    "Judge",
    "Normalized",
    "Number",
    "Regex",
    "Score",
    "Scorer",
    "ScorerArg",
    "Similarity",
    "normalize_text",
    "parse_number",
    "resolve_scorer",
    "resolve_scorers",
]

Answered: TypeAlias = "tuple[EvalItem, str]"
"""An item and the model's answer to it."""

Score: TypeAlias = "float | GradientError"
"""A value in [0, 1], or why the scorer could not score the item."""


@runtime_checkable
class Scorer(Protocol):
    """`name` (the key in summaries) and `score`, called with chunks of answered items."""

    name: str

    async def score(self, client: AsyncGradient, answered: Sequence[Answered]) -> list[Score]: ...


ScorerArg: TypeAlias = "str | Scorer | Callable[[str, EvalItem], float | bool]"


def _checked(name: str, value: object) -> Score:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    return GradientError(f"scorer {name!r} returned {value!r:.40}, not a number in [0, 1]")


class FunctionScorer:
    """A scorer from a plain function `fn(answer, item) -> float | bool`.

    Example::

        short = FunctionScorer("short", lambda answer, item: len(answer) < 80)
    """

    def __init__(self, name: str, fn: Callable[[str, EvalItem], float | bool]) -> None:
        self.name = name
        self._fn = fn

    async def score(self, client: AsyncGradient, answered: Sequence[Answered]) -> list[Score]:
        out: list[Score] = []
        for item, answer in answered:
            try:
                out.append(_checked(self.name, self._fn(answer, item)))
            except Exception as exc:  # a user's scorer: its failure is this item's, not the run's
                out.append(GradientError(f"scorer {self.name!r} raised {type(exc).__name__}: {exc}"))
        return out


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case-folded, punctuation dropped, whitespace collapsed: `" Dallas  Cowboys!"` -> `"dallas cowboys"`."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


class Exact(FunctionScorer):
    def __init__(self) -> None:
        super().__init__("exact", lambda answer, item: any(answer.strip() == e.strip() for e in item.expected))


class Normalized(FunctionScorer):
    def __init__(self) -> None:
        def fn(answer: str, item: EvalItem) -> bool:
            norm = normalize_text(answer)
            return any(norm == normalize_text(e) for e in item.expected)

        super().__init__("normalized", fn)


class Contains(FunctionScorer):
    def __init__(self) -> None:
        def fn(answer: str, item: EvalItem) -> bool:
            folded = answer.casefold()
            return any(e.casefold() in folded for e in item.expected)

        super().__init__("contains", fn)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputValidationError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None


class Regex(FunctionScorer):
    """`Regex()` searches each item's expected strings as patterns; `Regex(pattern)` one pattern for all."""

    def __init__(self, pattern: str | None = None) -> None:
        fixed = None if pattern is None else _compile(pattern, "regex scorer")
        cache: dict[str, re.Pattern[str]] = {}

        def fn(answer: str, item: EvalItem) -> bool:
            if fixed is not None:
                return fixed.search(answer) is not None
            for expected in item.expected:
                compiled = cache.get(expected)
                if compiled is None:
                    if len(cache) > 1024:
                        cache.clear()
                    compiled = cache[expected] = _compile(expected, f"item {item.id!r}")
                if compiled.search(answer):
                    return True
            return False

        super().__init__("regex" if pattern is None else f"regex:{pattern}", fn)


_NUMBER: Final = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """The first number in `text` (`"about 1,234.5 km"` -> 1234.5), or None."""
    for match in _NUMBER.finditer(text):
        token = match.group()
        if not any(ch.isdigit() for ch in token.split("e")[0].split("E")[0]):
            continue
        try:
            value = float(token.replace(",", ""))
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    return None


class Number(FunctionScorer):
    """The first number of the answer within `tolerance` of an expected number (absolute, or relative
    to the expected value's size when that is larger)."""

    def __init__(self, tolerance: float = 1e-6) -> None:
        if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
            raise InputValidationError(f"number scorer: tolerance must be a number >= 0, got {tolerance!r}")

        def fn(answer: str, item: EvalItem) -> bool:
            got = parse_number(answer)
            if got is None:
                return False
            for expected in item.expected:
                want = parse_number(expected)
                if want is None:
                    raise InputValidationError(f"expected {expected!r} is not a number")
                if abs(got - want) <= max(tolerance, tolerance * abs(want)):
                    return True
            return False

        super().__init__("number" if tolerance == 1e-6 else f"number:{tolerance:g}", fn)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return 0.0 if na == 0 or nb == 0 else dot / (na * nb)


@dataclass
class Similarity:
    """Cosine similarity of embeddings (API embeddings endpoint `model`), 1 when >= `threshold`
    for some expected string; with `threshold=None` the cosine itself, clipped to [0, 1]."""

    threshold: float | None = 0.8
    model: str = "bge-large"

    def __post_init__(self) -> None:
        t = self.threshold
        if t is not None and not (isinstance(t, (int, float)) and -1.0 <= t <= 1.0):
            raise InputValidationError(f"similarity scorer: threshold must be between -1 and 1, got {t!r}")
        self.name = "similarity" if t == 0.8 else f"similarity:{t}"

    async def score(self, client: AsyncGradient, answered: Sequence[Answered]) -> list[Score]:
        texts: list[str] = []
        for item, answer in answered:
            texts.append(answer if answer.strip() else " ")
            texts.extend(e if e.strip() else " " for e in item.expected)
        result = await client.embeddings.batch(self.model, texts)
        out: list[Score] = []
        pos = 0
        for item, _answer in answered:
            group = result.items[pos : pos + 1 + len(item.expected)]
            pos += 1 + len(item.expected)
            failed = next((g.error for g in group if g.error is not None), None)
            if failed is not None:
                out.append(GradientError(f"similarity: embeddings failed: {failed}"))
                continue
            vectors = [g.unwrap() for g in group]
            best = max(_cosine(vectors[0], v) for v in vectors[1:])
            if self.threshold is None:
                out.append(min(1.0, max(0.0, best)))
            else:
                out.append(1.0 if best >= self.threshold else 0.0)
        return out


JUDGE_PROMPT: Final = (
    "You grade answers. Reply with one word: correct or incorrect.\n\n"
    "Question: {query}\nReference answer: {expected}\nCandidate answer: {answer}\n\n"
    "Is the candidate answer correct?\nGrade: "
)


@dataclass
class Judge:
    """Another model on the same API grades each answer, constrained to "correct" / "incorrect"
    (the API's `guidance` choice decoding). `prompt` is formatted with query, expected and answer."""

    model: str
    prompt: str = JUDGE_PROMPT

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise InputValidationError("judge scorer: name the judge model, e.g. judge:MODEL_ID")
        self.name = f"judge:{self.model}"

    async def score(self, client: AsyncGradient, answered: Sequence[Answered]) -> list[Score]:
        prompts = [
            self.prompt.format(query=item.query, expected=" | ".join(item.expected), answer=answer.strip())
            for item, answer in answered
        ]
        result = await client.completions.batch(
            self.model,
            prompts,
            guidance={"type": "choice", "value": ["correct", "incorrect"]},
            max_generated_token_count=4,
            temperature=0.0,
        )
        out: list[Score] = []
        for entry in result.items:
            if entry.error is not None:
                out.append(GradientError(f"judge {self.model}: {entry.error}"))
                continue
            verdict = entry.unwrap().generated_output.strip().casefold()
            if verdict not in ("correct", "incorrect"):
                out.append(GradientError(f"judge {self.model} answered {verdict!r:.40}, not correct/incorrect"))
            else:
                out.append(1.0 if verdict == "correct" else 0.0)
        return out


_SIMPLE: Final[dict[str, Callable[[], Scorer]]] = {
    "exact": Exact,
    "normalized": Normalized,
    "contains": Contains,
    "regex": Regex,
    "number": Number,
    "similarity": Similarity,
}
NAMES: Final = (*_SIMPLE, "judge")


def _from_spec(spec: str) -> Scorer:
    name, sep, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in NAMES:
        raise InputValidationError(
            f"unknown scorer {spec!r}; choose from {', '.join(NAMES)} (e.g. number:0.01, judge:MODEL)"
        )
    if not sep:
        if name == "judge":
            raise InputValidationError("the judge scorer needs a model: --scorer judge:MODEL_ID")
        return _SIMPLE[name]()
    if name in ("exact", "normalized", "contains"):
        raise InputValidationError(f"scorer {name!r} takes no argument, got {spec!r}")
    if name == "regex":
        return Regex(arg)
    if name == "judge":
        return Judge(arg)
    try:
        value = float(arg)
    except ValueError:
        raise InputValidationError(f"scorer {spec!r}: {arg!r} is not a number") from None
    return Number(value) if name == "number" else Similarity(threshold=value)


def resolve_scorer(arg: ScorerArg) -> Scorer:
    """A Scorer from a name/spec string, a Scorer, or a callable `fn(answer, item)`."""
    if isinstance(arg, str):
        return _from_spec(arg)
    if isinstance(arg, Scorer):
        return arg
    if callable(arg):
        return FunctionScorer(getattr(arg, "__name__", "callable"), arg)
    raise InputValidationError(f"a scorer is a name like 'contains', a Scorer or a callable, got {arg!r:.60}")


def resolve_scorers(args: Sequence[ScorerArg] | ScorerArg) -> list[Scorer]:
    """Scorers for `args`; InputValidationError on an unknown name or two scorers with the same name.

    Example::

        resolve_scorers(["exact", "number:0.5"])
    """
    if isinstance(args, str) or not isinstance(args, Sequence):
        args = [args]
    scorers = [resolve_scorer(a) for a in args]
    if not scorers:
        raise InputValidationError("give at least one scorer, e.g. ['contains']")
    names = [s.name for s in scorers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputValidationError(f"two scorers are named {dupes[0]!r}; give each a distinct name")
    return scorers
