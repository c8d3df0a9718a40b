"""What an evaluation returns: per model and scorer the mean and 95% interval, per pair the comparison,
and a few items where models disagree (for the report).

`EvalSummary.to_json()` is the `summary.json` of `gradient-async eval`::

    {"n": int, "models": {MODEL_ID: {"answered": int, "failed": int,
                                     "scores": {SCORER: {"mean": float, "ci95": [lo, hi]}}}},
     "pairs": [{"a": MODEL_ID, "b": MODEL_ID, "scorer": SCORER, "wins": int, "losses": int, "ties": int,
                "p_value": float | null}]}

`mean` and `ci95` are null when no item of that model got a score; `p_value` (exact McNemar) is null
unless every score of the pair is 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Disagreement", "EvalResult", "EvalSummary", "ModelScores", "PairResult", "ScoreSummary"]


@dataclass(frozen=True)
class ScoreSummary:
    mean: float | None
    ci95: tuple[float, float] | None
    scored: int = 0
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": None if self.ci95 is None else [self.ci95[0], self.ci95[1]]}


@dataclass(frozen=True)
class ModelScores:
    """`answered` items, `failed` items (no answer after retries), and each scorer's summary."""

    answered: int
    failed: int
    scores: dict[str, ScoreSummary]

    def to_json(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "failed": self.failed,
            "scores": {name: s.to_json() for name, s in self.scores.items()},
        }


@dataclass(frozen=True)
class PairResult:
    a: str
    b: str
    scorer: str
    wins: int
    losses: int
    ties: int
    p_value: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "scorer": self.scorer,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class EvalSummary:
    n: int
    models: dict[str, ModelScores]
    pairs: list[PairResult]

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "models": {model: m.to_json() for model, m in self.models.items()},
            "pairs": [p.to_json() for p in self.pairs],
        }

    @property
    def all_answered(self) -> bool:
        return all(m.failed == 0 for m in self.models.values())


@dataclass(frozen=True)
class Disagreement:
    """An item where model `a` and `b` scored differently on `scorer`, with both answers."""

    id: Any
    query: str
    expected: tuple[str, ...]
    scorer: str
    a: str
    b: str
    answer_a: str
    answer_b: str
    score_a: float
    score_b: float


@dataclass
class EvalResult:
    """`summary`, up to a few `disagreements` per pair, `scorer_errors` (items a scorer could not score),
    the `rows` file when one was kept, and `stopped` models."""

    summary: EvalSummary
    disagreements: list[Disagreement] = field(default_factory=list)
    scorer_errors: int = 0
    skipped: int = 0
    elapsed: float = 0.0
    rows: Any = None
    stopped: dict[str, str] = field(default_factory=dict)
    """Models stopped early (identical hopeless failures in a row), with why; their unsent items count as failed."""
