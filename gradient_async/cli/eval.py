"""`gradient-async eval`: answer an evaluation set with one or more models, score, summarize, report.

Prints a table (mean and 95% bootstrap interval per model and scorer, then the pairwise comparison) and
exits 0 when every item was answered and scored: wrong answers are results, not errors. Exit 1 when an
item failed (no answer after retries) or a scorer could not score one; `--resume` then runs only those.

Example::

    gradient-async eval --data eval.jsonl --model BASE_ID --model ADAPTER_ID --scorer contains --scorer exact \\
        --rows rows.jsonl --summary-json summary.json --report report.html
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from gradient_async._client import AsyncGradient
from gradient_async.evaluation import evaluate, write_report
from gradient_async.evaluation.report import markdown_summary
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody

__all__ = ["add_arguments", "run"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradient-async eval`."""
    parser.add_argument("--data", type=Path, required=True, help="JSONL file: {'id'?, 'query', 'expected', ...}")
    parser.add_argument("--model", action="append", required=True, help="model or adapter id (repeat to compare)")
    parser.add_argument(
        "--scorer",
        action="append",
        default=None,
        help="exact, normalized, contains (default), regex[:PATTERN], number[:TOL], similarity[:THRESHOLD], "
        "judge:MODEL_ID (repeatable)",
    )
    parser.add_argument("--concurrency", type=_positive_int, default=None, help="requests in flight (default 64)")
    parser.add_argument("--rpm", type=_positive_float, default=None, help="requests per minute (smooth)")
    parser.add_argument("--max-tokens", type=int, default=None, help="max_generated_token_count for every item")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature for every item")
    parser.add_argument("--rows", type=Path, default=None, help="JSONL file: one row per item and model")
    parser.add_argument("--summary-json", type=Path, default=None, help="write the summary as JSON here")
    parser.add_argument("--report", type=Path, default=None, help="write the HTML report here (and a .md beside it)")
    parser.add_argument("--resume", action="store_true", help="keep --rows' complete rows, run the rest")
    parser.add_argument("--overwrite", action="store_true", help="start --rows over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """--max-tokens / --temperature as completion params, checked before anything is sent."""
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_generated_token_count"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    validate_input(CompleteBody, "--max-tokens / --temperature", {"query": "?", **params})
    return params


async def _main(args: argparse.Namespace) -> int:
    params = _params(args)
    progress: Literal["tqdm"] | None = "tqdm" if not args.no_progress and sys.stderr.isatty() else None
    client_kwargs: dict[str, Any] = {}
    if args.concurrency is not None:
        client_kwargs["max_concurrency"] = args.concurrency
    async with AsyncGradient(**client_kwargs) as client:
        result = await evaluate(
            client,
            args.data,
            models=args.model,
            scorers=args.scorer or ["contains"],
            max_concurrency=args.concurrency,
            requests_per_minute=args.rpm,
            progress=progress,
            rows=args.rows,
            resume=args.resume,
            overwrite=args.overwrite,
            **params,
        )
    summary = result.summary
    print(markdown_summary(result).rstrip())
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    if args.report is not None:
        html_path, md_path = write_report(args.report, result, title=f"Evaluation of {args.data.name}")
        print(f"report: {html_path} (summary: {md_path})", file=sys.stderr)
    for model, reason in result.stopped.items():
        print(f"eval: {model}: {reason}", file=sys.stderr)
    failed = sum(m.failed for m in summary.models.values())
    line = f"eval: {summary.n} items x {len(summary.models)} models, {failed} failed"
    line += f", {result.scorer_errors} not scored, {result.skipped} already done in {result.elapsed:.1f}s"
    print(line, file=sys.stderr)
    if failed or result.scorer_errors:
        if args.rows is not None:
            print("rerun the missing ones with --resume", file=sys.stderr)
        return 1
    return 0


def _unwritable(path: Path | None) -> str | None:
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return f"{path} is a directory"
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} is not writable"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point used by `gradient-async eval`."""
    if args.resume and args.rows is None:
        print("error: --resume needs --rows FILE (the rows of the run to continue)", file=sys.stderr)
        return 2
    outputs = {"--rows": args.rows, "--summary-json": args.summary_json, "--report": args.report}
    if args.report is not None:
        outputs["--report (its .md)"] = args.report.with_suffix(".md")
    given = {flag: path.resolve() for flag, path in outputs.items() if path is not None}
    for flag, path in given.items():
        clash = [other for other, p in given.items() if p == path and other != flag]
        if path == args.data.resolve() or clash:
            print(f"error: {flag} {outputs[flag]} would overwrite {clash[0] if clash else '--data'}", file=sys.stderr)
            return 2
    for flag, path in outputs.items():
        problem = _unwritable(path)
        if problem:
            print(f"error: cannot write {flag}: {problem}", file=sys.stderr)
            return 2
    _params(args)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        hint = " (rows so far are kept: add --resume to continue)" if args.rows is not None else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
