"""`gradient-async batch`: complete every prompt of a JSONL file, resumably.

INPUT lines are JSON: `{"id": ..., "query": ..., **completion params}` or a bare JSON string; a line
without an id (or with a null one) gets its 1-based line number as id. OUTPUT gets one row per item
as it completes, flushed at once: `{"id", "line", "output", "finish_reason", "error"}`. An OUTPUT that
already has rows needs `--resume` (keep its successes, run the rest, so each id ends up exactly once)
or `--overwrite`. The run stops early after 5 identical hopeless failures in a row (bad token, unknown
model, nothing listening), or at the first failure with `--fail-fast`, and prints the `--resume`
command; Ctrl-C or SIGTERM does the same (exit 130 / 143). Exit code 0 only if every item succeeded.

Example::

    gradient-async batch prompts.jsonl -o answers.jsonl --model ADAPTER_ID --concurrency 32 --rpm 600
    gradient-async batch prompts.jsonl -o answers.jsonl --model ADAPTER_ID --resume
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio

from gradient_async._client import AsyncGradient
from gradient_async.cli._args import float_at_least, int_range, positive_float
from gradient_async.cli._batch_file import STOP_AFTER, BatchFileError, BatchFileSummary, run_file

__all__ = ["BatchFileError", "BatchFileSummary", "add_arguments", "resume_command", "run", "run_file"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradient-async batch`."""
    parser.add_argument("input", type=Path, help="JSONL file: {'id', 'query', ...params} objects or JSON strings")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSONL file the answers are written to")
    parser.add_argument("--model", required=True, help="base model id or adapter id")
    parser.add_argument("--concurrency", type=int_range(1), default=None, help="requests in flight (default 64)")
    parser.add_argument("--rpm", type=positive_float, default=None, help="requests per minute (smooth)")
    parser.add_argument(
        "--tpm", type=positive_float, default=None, help="tokens per minute (estimate: len/4 + max tokens)"
    )
    parser.add_argument(
        "--max-tokens", type=int_range(1, 511), default=None, help="max_generated_token_count for every prompt"
    )
    parser.add_argument(
        "--temperature", type=float_at_least(0.0), default=None, help="sampling temperature for every prompt"
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="keep OUTPUT's successes and run everything else")
    again.add_argument("--overwrite", action="store_true", help="start OUTPUT over (its rows are lost)")
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help=f"stop at the first failed item (default: stop after {STOP_AFTER} identical hopeless failures in a row)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues the run of `argv` (the arguments after `gradient-async`)."""
    kept = [a for a in argv if a not in ("--resume", "--overwrite")]
    return shlex.join(["gradient-async", *kept, "--resume"])


_STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_cancel(scope: anyio.CancelScope) -> Iterator[list[signal.Signals]]:
    """While inside, Ctrl-C (SIGINT) or SIGTERM cancels `scope` once and is recorded; a second one
    acts as usual (interrupts at once)."""
    caught: list[signal.Signals] = []
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        caught.append(sig)
        scope.cancel()
        for one in installed:
            loop.remove_signal_handler(one)
        installed.clear()

    try:
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        pass
    try:
        yield caught
    finally:
        for one in installed:
            loop.remove_signal_handler(one)


async def _main(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_generated_token_count"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    progress: Literal["tqdm"] | None = None
    if not args.no_progress and sys.stderr.isatty():
        progress = "tqdm"
    client_kwargs: dict[str, Any] = {}
    if args.concurrency is not None:
        client_kwargs["max_concurrency"] = args.concurrency
    summary = BatchFileSummary()
    again = resume_command(getattr(args, "argv", None) or sys.argv[1:])
    try:
        async with AsyncGradient(**client_kwargs) as client:
            with anyio.CancelScope() as scope, _signals_cancel(scope) as caught:
                await run_file(
                    client,
                    args.input,
                    args.output,
                    model_id=args.model,
                    resume=args.resume,
                    overwrite=args.overwrite,
                    concurrency=args.concurrency,
                    rpm=args.rpm,
                    tpm=args.tpm,
                    params=params,
                    progress=progress,
                    fail_fast=args.fail_fast,
                    summary=summary,
                    stderr=sys.stderr,
                )
    except BatchFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if summary.ok or summary.failed:  # a write failed mid-run: what is written stays
            print(summary.line(args.output), file=sys.stderr)
            print(f"fix that (free space, permissions), then continue with: {again}", file=sys.stderr)
        return 1
    if caught:
        print(f"interrupted; {summary.line(args.output)}", file=sys.stderr)
        print(f"continue with: {again}", file=sys.stderr)
        return 128 + caught[0].value  # 130 after Ctrl-C, 143 after SIGTERM
    if summary.stopped is not None:
        print(f"error: {summary.stopped}", file=sys.stderr)
    print(summary.line(args.output), file=sys.stderr)
    if summary.stopped is not None:
        print(f"fix the cause, then continue with: {again}", file=sys.stderr)
    elif summary.failed:
        print(f"to run the {summary.failed} failed items again: {again}", file=sys.stderr)
    return summary.exit_code


def run(args: argparse.Namespace) -> int:
    """Entry point used by `gradient-async batch`."""
    return asyncio.run(_main(args))
