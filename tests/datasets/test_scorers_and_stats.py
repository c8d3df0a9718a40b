"""Every scorer on hand-made cases; the bootstrap interval against a direct computation; McNemar against
known values."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest

from gradient_async import AsyncGradient, InputValidationError
from gradient_async.evaluation import EvalItem, bootstrap_ci, mcnemar_exact, resolve_scorers
from gradient_async.evaluation.scorers import Score, Scorer, normalize_text, parse_number
from gradient_async.evaluation.stats import binomial, pair_counts


def item(*expected: str, query: str = "q") -> EvalItem:
    return EvalItem(query=query, expected=expected, id=1)


async def run(scorer: str | Scorer, answer: str, *expected: str, client: AsyncGradient | None = None) -> Score:
    [resolved] = resolve_scorers([scorer])
    [value] = await resolved.score(client, [(item(*expected), answer)])  # type: ignore[arg-type]
    return value


@pytest.mark.parametrize(
    ("scorer", "answer", "expected", "score"),
    [
        ("exact", "Paris", ("Paris",), 1.0),
        ("exact", "  Paris\n", ("Paris",), 1.0),
        ("exact", "paris", ("Paris",), 0.0),
        ("exact", "Lyon", ("Paris", "Lyon"), 1.0),
        ("normalized", "  the DALLAS cowboys!! ", ("The Dallas Cowboys",), 1.0),
        ("normalized", "Dallas-Cowboys", ("dallas cowboys",), 1.0),
        ("normalized", "Dallas Cowboys won", ("dallas cowboys",), 0.0),
        ("contains", "I think it was the Dallas Cowboys.", ("dallas cowboys",), 1.0),
        ("contains", "The Cowboys", ("Dallas Cowboys",), 0.0),
        ("regex", "answer: 42 units", (r"\b42\b",), 1.0),
        ("regex", "answer: 420", (r"\b42\b",), 0.0),
        (r"regex:^\d+$", "123", ("ignored",), 1.0),
        (r"regex:^\d+$", "12a", ("ignored",), 0.0),
        ("number", "The total is 1,234.5 dollars", ("1234.5",), 1.0),
        ("number", "-3e2", ("-300",), 1.0),
        ("number", "It is 41.", ("42",), 0.0),
        ("number:1", "It is 41.", ("42",), 1.0),
        ("number:0.1", "1050", ("1000",), 1.0),  # relative: 10% of 1000
        ("number", "no digits here", ("1",), 0.0),
    ],
)
async def test_text_scorers(scorer: str, answer: str, expected: tuple[str, ...], score: float) -> None:
    assert await run(scorer, answer, *expected) == score


async def test_callable_scorers_and_their_failures() -> None:
    def short(answer: str, item: EvalItem) -> bool:
        return len(answer) < 5

    def broken(answer: str, item: EvalItem) -> float:
        raise RuntimeError("boom")

    assert await run(short, "abc") == 1.0  # type: ignore[arg-type]
    assert await run(short, "abcdef") == 0.0  # type: ignore[arg-type]
    assert [s.name for s in resolve_scorers([short])] == ["short"]  # type: ignore[list-item]
    failed = await run(broken, "x")  # type: ignore[arg-type]
    assert isinstance(failed, Exception) and "boom" in str(failed)
    out_of_range = await run(lambda a, i: 2.0, "x")  # type: ignore[arg-type]
    assert isinstance(out_of_range, Exception) and "not a number in [0, 1]" in str(out_of_range)
    not_numeric = await run("number", "5", "five")
    assert isinstance(not_numeric, Exception) and "not a number" in str(not_numeric)


def test_scorer_specs_are_checked() -> None:
    with pytest.raises(InputValidationError, match="unknown scorer 'bleu'"):
        resolve_scorers(["bleu"])
    with pytest.raises(InputValidationError, match="judge:MODEL_ID"):
        resolve_scorers(["judge"])
    with pytest.raises(InputValidationError, match="invalid regular expression"):
        resolve_scorers(["regex:("])
    with pytest.raises(InputValidationError, match="not a number"):
        resolve_scorers(["number:abc"])
    with pytest.raises(InputValidationError, match="named 'exact'"):
        resolve_scorers(["exact", "exact"])
    assert [s.name for s in resolve_scorers(["number:0.5", "similarity:0.9", "judge:m1"])] == [
        "number:0.5",
        "similarity:0.9",
        "judge:m1",
    ]


def test_helpers() -> None:
    assert normalize_text(" Hello,   WORLD! ") == "hello world"
    assert parse_number("about 1,234.5 km") == 1234.5
    assert parse_number("e5 and 7") == 7.0
    assert parse_number("none") is None


def _direct_bootstrap(values: Sequence[float], resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    arr = np.asarray(values)
    means = arr[rng.integers(0, len(arr), size=(resamples, len(arr)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


@pytest.mark.parametrize(
    "values",
    [
        [1.0] * 140 + [0.0] * 60,
        [1.0] * 9 + [0.0] * 1,
        [0.0, 0.25, 0.5, 0.75, 1.0] * 40,
        [random.Random(3).random() for _ in range(300)],  # many distinct values: direct resampling path
    ],
)
def test_bootstrap_interval_matches_a_direct_computation(values: list[float]) -> None:
    lo, hi = bootstrap_ci(values, resamples=4000, seed=1)  # type: ignore[misc]
    dlo, dhi = _direct_bootstrap(values, 4000, seed=2)
    assert lo == pytest.approx(dlo, abs=0.02) and hi == pytest.approx(dhi, abs=0.02)
    assert lo <= statistics.fmean(values) <= hi
    assert bootstrap_ci(values, resamples=4000, seed=1) == (lo, hi)  # seeded: repeats exactly


def test_bootstrap_on_many_items_agrees_with_the_normal_interval() -> None:
    n, p = 100_000, 0.7
    values = [1.0] * int(n * p) + [0.0] * int(n * (1 - p))
    lo, hi = bootstrap_ci(values)  # type: ignore[misc]
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.0015) and hi == pytest.approx(p + half, abs=0.0015)
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)


def test_binomial_sampler_has_the_right_moments() -> None:
    rng = random.Random(5)
    for n, p in [(20, 0.1), (1000, 0.3), (100_000, 0.7), (50, 0.5)]:
        draws = [binomial(rng, n, p) for _ in range(4000)]
        assert all(0 <= d <= n for d in draws)
        assert statistics.fmean(draws) == pytest.approx(n * p, rel=0.02, abs=0.1)
        assert statistics.pvariance(draws) == pytest.approx(n * p * (1 - p), rel=0.1)


def _exact(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return float(min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)))


def test_mcnemar_exact_known_values() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == 0.0625
    assert mcnemar_exact(1, 9) == 0.021484375
    assert mcnemar_exact(9, 1) == 0.021484375
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(3, 11) == pytest.approx(0.057373046875)  # scipy.stats.binomtest(3, 14).pvalue
    assert mcnemar_exact(0, 10) == pytest.approx(0.001953125)
    for b, c in [(400, 520), (700, 640), (1200, 1050)]:  # the log-space path (n > 1000) vs exact fractions
        assert mcnemar_exact(b, c) == pytest.approx(_exact(b, c), rel=1e-9)


def test_pair_counts_skip_unscored_items() -> None:
    nan = math.nan
    counts = pair_counts([1.0, 0.0, 1.0, nan, 0.5], [0.0, 0.0, 1.0, 1.0, 1.0])
    assert (counts.wins, counts.losses, counts.ties) == (1, 1, 2)
