"""Statistics for evaluations: mean, percentile bootstrap 95% interval, pairwise counts, exact McNemar.

The bootstrap resamples the mean `resamples` times from a seeded RNG, so a summary repeats exactly.
Scores usually take few distinct values (0/1), so a resample is drawn as multinomial counts over the
distinct values (sequential exact binomial draws): the same distribution as resampling item by item,
in time independent of the number of items. With many distinct values it resamples items directly.

Example::

    lo, hi = bootstrap_ci([1, 0, 1, 1, 0, 1])
    p = mcnemar_exact(wins=1, losses=9)      # 0.021484375
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairCounts", "binomial", "bootstrap_ci", "mcnemar_exact", "pair_counts", "quantile"]

_MAX_DISTINCT = 64


def binomial(rng: random.Random, n: int, p: float) -> int:
    """An exact Binomial(n, p) draw: geometric method for small n*p, else BTRS (Hörmann 1993),
    as CPython 3.12's `random.binomialvariate`."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    uniform = rng.random
    if n * p < 10.0:
        x = y = 0
        c = math.log(1.0 - p)
        if not c:
            return x
        while True:
            y += math.floor(math.log(1.0 - uniform()) / c) + 1
            if y > n:
                return x
            x += 1
    spq = math.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    vr = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    lpq = math.log(p / (1.0 - p))
    m = math.floor((n + 1) * p)
    h = math.lgamma(m + 1) + math.lgamma(n - m + 1)
    while True:
        u = uniform() - 0.5
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        v = uniform()
        if us >= 0.07 and v <= vr:
            return k
        v *= alpha / (a / (us * us) + b)
        if v > 0 and math.log(v) <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - m) * lpq:
            return k


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on already sorted values."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values` (None when empty).

    Example::

        bootstrap_ci([0.0, 1.0, 1.0, 1.0])   # about (0.25, 1.0)
    """
    n = len(values)
    if n == 0:
        return None
    rng = random.Random(seed)
    counts = Counter(values)
    means: list[float] = []
    if len(counts) <= _MAX_DISTINCT:
        distinct = sorted(counts)
        probs = [counts[v] / n for v in distinct]
        for _ in range(resamples):
            left, rest, total = n, 1.0, 0.0
            for value, p in zip(distinct[:-1], probs[:-1], strict=True):
                k = binomial(rng, left, min(1.0, p / rest)) if left and rest > 0 else 0
                total += value * k
                left -= k
                rest -= p
            total += distinct[-1] * left
            means.append(total / n)
    else:
        for _ in range(resamples):
            means.append(math.fsum(rng.choices(values, k=n)) / n)
    means.sort()
    tail = (1.0 - level) / 2.0
    return quantile(means, tail), quantile(means, 1.0 - tail)


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value for discordant pairs `wins` (A right, B wrong) and `losses`:
    `min(1, 2 * P(X <= min(wins, losses)))` with X ~ Binomial(wins + losses, 1/2); 1.0 when there are none.

    Example::

        mcnemar_exact(0, 5)   # 0.0625
    """
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    if n <= 1000:
        tail = sum(math.comb(n, i) for i in range(k + 1))
        return min(1.0, float(2 * tail / 2**n))
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(log_terms)
    log_tail = top + math.log(math.fsum(math.exp(t - top) for t in log_terms)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


@dataclass(frozen=True)
class PairCounts:
    """Items where A scored higher (`wins`), lower (`losses`) or the same (`ties`) as B."""

    wins: int
    losses: int
    ties: int


def pair_counts(a: Sequence[float], b: Sequence[float]) -> PairCounts:
    """Counts over items both scored (NaN = no score on either side is skipped)."""
    wins = losses = ties = 0
    for x, y in zip(a, b, strict=True):
        if x != x or y != y:
            continue
        if x > y:
            wins += 1
        elif x < y:
            losses += 1
        else:
            ties += 1
    return PairCounts(wins, losses, ties)
