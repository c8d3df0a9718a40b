"""One call each: `models`, `create-adapter`, `delete-adapter`, `complete`, `fine-tune`.

Example::

    gradient-async models --only-base
    gradient-async complete MODEL_ID "Question: ...\\n\\nAnswer: " --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from gradient_async._client import AsyncGradient
from gradient_async.cli._command import Subcommand

__all__ = ["complete", "create_adapter", "delete_adapter", "models"]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _sync(handler: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def main() -> int:
            return await handler(args)

        return asyncio.run(main())

    return run


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only-base", action="store_true", help="only base models")


async def _models(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        found = await client.models.list(only_base=args.only_base)
        _print_json([m.to_wire() for m in found])
    return 0


def _create_adapter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base_model_id")
    p.add_argument("name")
    p.add_argument("--rank", type=int)
    p.add_argument("--learning-rate", type=float)


async def _create_adapter(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        adapter = await client.adapters.create(
            base_model_id=args.base_model_id, name=args.name, rank=args.rank, learning_rate=args.learning_rate
        )
        _print_json(adapter.to_wire())
    return 0


def _delete_adapter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter_id")


async def _delete_adapter(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        await client.adapters.delete(args.adapter_id)
    print(f"deleted adapter {args.adapter_id}")
    return 0


def _complete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_id")
    p.add_argument("query")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)


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


models = Subcommand(_models_arguments, _sync(_models))
create_adapter = Subcommand(_create_adapter_arguments, _sync(_create_adapter))
delete_adapter = Subcommand(_delete_adapter_arguments, _sync(_delete_adapter))
complete = Subcommand(_complete_arguments, _sync(_complete))
