"""`gradient-async`: the command line.

Subcommands live in their own modules and are imported only when used, so
`gradient-async models` starts fast and needs no server or ML extras.

Example::

    gradient-async models --only-base
    gradient-async complete MODEL_ID "Question: ...\\n\\nAnswer: " --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from gradient_async._client import AsyncGradient
from gradient_async._errors import GradientError

__all__ = ["main"]

# name -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
_EXTERNAL_COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("gradient_async.batch_cli", "complete every prompt of a JSONL file (resumable)"),
    "serve": ("gradient_async.server.cli", "run the Gradient-compatible local server"),
    "demo": ("gradient_async.demo", "run the offline end-to-end demo on the embedded server"),
}


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


async def _models(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        models = await client.models.list(only_base=args.only_base)
        _print_json([m.to_wire() for m in models])
    return 0


async def _create_adapter(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        adapter = await client.adapters.create(
            base_model_id=args.base_model_id, name=args.name, rank=args.rank, learning_rate=args.learning_rate
        )
        _print_json(adapter.to_wire())
    return 0


async def _delete_adapter(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        await client.adapters.delete(args.adapter_id)
    return 0


async def _complete(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        out = await client.completions.create(
            args.model_id,
            query=args.query,
            max_generated_token_count=args.max_tokens,
            temperature=args.temperature,
        )
        print(out.generated_output)
    return 0


async def _fine_tune(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        result = await client.fine_tunes.create(args.adapter_id, samples=list(args.samples))
        _print_json(result.to_wire())
    return 0


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradient-async",
        description="Gradient AI from the command line. Reads GRADIENT_ACCESS_TOKEN, "
        "GRADIENT_WORKSPACE_ID and GRADIENT_API_URL.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list models")
    p.add_argument("--only-base", action="store_true", help="only base models")
    p.set_defaults(handler=_models)

    p = sub.add_parser("create-adapter", help="create an adapter over a base model")
    p.add_argument("base_model_id")
    p.add_argument("name")
    p.add_argument("--rank", type=int)
    p.add_argument("--learning-rate", type=float)
    p.set_defaults(handler=_create_adapter)

    p = sub.add_parser("delete-adapter", help="delete an adapter")
    p.add_argument("adapter_id")
    p.set_defaults(handler=_delete_adapter)

    p = sub.add_parser("complete", help="complete one prompt")
    p.add_argument("model_id")
    p.add_argument("query")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.set_defaults(handler=_complete)

    p = sub.add_parser("fine-tune", help="fine-tune an adapter on samples given as arguments")
    p.add_argument("adapter_id")
    p.add_argument("samples", nargs="+")
    p.set_defaults(handler=_fine_tune)

    for name, (module, help_text) in _EXTERNAL_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(external=module)
        if name in argv[:1]:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gradient-async` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser(argv).parse_args(argv)
    try:
        module = getattr(args, "external", None)
        if module is not None:
            code: int = importlib.import_module(module).run(args)
            return code
        result: int = asyncio.run(args.handler(args))
        return result
    except GradientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
