"""`gradient-async`: the command line.

Each subcommand family lives in its own module and is imported only when used, so
`gradient-async models` starts fast and needs no server or ML extras.

Adding a subcommand: write a module with `add_arguments(parser)` and `run(args) -> int`
(or, for a family of several, one `Subcommand(add_arguments, run)` per command) and add one line
to `COMMANDS` below: `"name": ("module[:attribute]", "one-line help")`.

Example::

    gradient-async models --only-base
    gradient-async complete MODEL_ID "Question: ...\\n\\nAnswer: " --max-tokens 32
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import cast

from gradient_async._errors import GradientError
from gradient_async._version import __version__
from gradient_async.cli._command import Command, Subcommand
from gradient_async.cli._errors import describe

__all__ = ["COMMANDS", "Command", "Subcommand", "main"]

# subcommand -> ("module" or "module:attribute", help). The target has add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("gradient_async.cli.api:models", "list models"),
    "create-adapter": ("gradient_async.cli.api:create_adapter", "create an adapter over a base model"),
    "delete-adapter": ("gradient_async.cli.api:delete_adapter", "delete an adapter"),
    "complete": ("gradient_async.cli.api:complete", "complete one prompt"),
    "fine-tune": ("gradient_async.cli.fine_tune", "fine-tune an adapter: samples as arguments, or a run over --data"),
    "eval": ("gradient_async.cli.eval", "evaluate models on a JSONL dataset: scores, intervals, report"),
    "batch": ("gradient_async.cli.batch", "complete every prompt of a JSONL file (resumable)"),
    "serve": ("gradient_async.server.cli", "run the Gradient-compatible local server"),
    "demo": ("gradient_async.demo", "run the offline end-to-end demo on the embedded server"),
}


def _load(target: str) -> Command:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return cast(Command, getattr(module, attribute) if attribute else module)


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradient-async",
        description="Gradient AI from the command line. Reads GRADIENT_ACCESS_TOKEN, "
        "GRADIENT_WORKSPACE_ID and GRADIENT_API_URL.",
    )
    parser.add_argument("--version", action="version", version=f"gradient-async {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (target, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(target=target)
        if name == chosen:  # only the chosen subcommand's module is imported
            _load(target).add_arguments(p)
    return parser


def _stdout_gone() -> int:
    """The reader of stdout left (`gradient-async models | head -1`): end quietly, as if by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush has nowhere to fail
    os.close(devnull)
    return 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gradient-async` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser(argv).parse_args(argv)
    args.argv = argv  # for messages that repeat the command (`batch` prints its --resume line)
    try:
        code = _load(args.target).run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except GradientError as exc:
        print(f"error: {describe(exc, with_class=False)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
