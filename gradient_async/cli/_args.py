"""argparse value types that name the flag and the accepted range in their error."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["float_at_least", "int_range", "positive_float"]


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer from `low` to `high` (inclusive; no upper bound when None)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


def _finite(text: str, wanted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def float_at_least(low: float) -> Callable[[str], float]:
    """A finite number >= `low`."""

    def parse(text: str) -> float:
        value = _finite(text, f"a number >= {low:g}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a number >= {low:g}, got {text!r}")
        return value

    return parse
