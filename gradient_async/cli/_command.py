"""What a subcommand is: a way to add its options and a way to run it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Command", "Subcommand"]


class Command(Protocol):
    """A subcommand: a module or a `Subcommand` with these two functions."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


@dataclass(frozen=True)
class Subcommand:
    """One subcommand of a module that holds several (a family), e.g. `models` in `cli/api.py`."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
