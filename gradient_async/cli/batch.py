"""`gradient-async batch`: complete every prompt of a JSONL file, resumably.

INPUT lines are JSON: `{"id": ..., "query": ..., **completion params}` or a bare JSON string
(id = its line number). OUTPUT gets one line per item as it completes, flushed at once:
`{"id", "index", "output", "finish_reason", "error"}` (index = 0-based line of INPUT).
`--resume` keeps OUTPUT's successes, drops its failures and runs everything else, so each id
ends up exactly once. Exit code 0 only if every item succeeded.

Example::

    gradient-async batch prompts.jsonl -o answers.jsonl --model ADAPTER_ID --concurrency 32 --rpm 600
    gradient-async batch prompts.jsonl -o answers.jsonl --model ADAPTER_ID --resume
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from gradient_async._batch.progress import ProgressCallback
from gradient_async._client import AsyncGradient
from gradient_async._errors import GradientError
from gradient_async.batch import BatchItem, stream_complete_batch
from gradient_async.types.completions import Completion

__all__ = ["BatchFileSummary", "add_arguments", "run", "run_file"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradient-async batch`."""
    parser.add_argument("input", type=Path, help="JSONL file: {'id', 'query', ...params} objects or JSON strings")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSONL file the answers are appended to")
    parser.add_argument("--model", required=True, help="base model id or adapter id")
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 64)")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute (smooth)")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute (estimate: len/4 + max tokens)")
    parser.add_argument("--max-tokens", type=int, default=None, help="max_generated_token_count for every prompt")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature for every prompt")
    parser.add_argument("--resume", action="store_true", help="skip ids OUTPUT already has a success for")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")


@dataclass
class BatchFileSummary:
    """What one run did: items ok/failed, lines skipped (already done) or bad, HTTP requests."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    bad_lines: int = 0
    requests: int = 0
    retried: int = 0
    elapsed: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 and self.bad_lines == 0 else 1

    def line(self, output: Path) -> str:
        return (
            f"batch: {self.ok} ok, {self.failed} failed, {self.skipped} already done, {self.bad_lines} bad lines; "
            f"{self.requests} requests ({self.retried} retried) in {self.elapsed:.1f}s -> {output}"
        )


def _key(item_id: Any) -> str:
    return json.dumps(item_id, sort_keys=True)


def _load_done(output: Path) -> dict[str, str]:
    """id key -> the success line already in OUTPUT (failures and torn lines are dropped)."""
    done: dict[str, str] = {}
    if not output.exists():
        return done
    with output.open(encoding="utf-8") as fh:
        for raw in fh:
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a line torn by a crash: its item runs again
            if isinstance(record, dict) and "id" in record and record.get("error") is None:
                done[_key(record["id"])] = raw if raw.endswith("\n") else raw + "\n"
    return done


def _rewrite_keeping(output: Path, done: dict[str, str]) -> None:
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.writelines(done.values())
    os.replace(tmp, output)


def _prepare(input_path: Path, output_path: Path, *, resume: bool) -> dict[str, str]:
    """Check INPUT exists; on resume, keep only OUTPUT's successes (rewritten atomically) and return them."""
    if not input_path.is_file():
        raise GradientError(f"input file not found: {input_path} (pass a JSONL file of prompts)")
    if not resume:
        return {}
    done = _load_done(output_path)
    _rewrite_keeping(output_path, done)
    return done


def _parse_line(number: int, raw: str) -> dict[str, Any]:
    data = json.loads(raw)
    if isinstance(data, str):
        return {"id": number, "query": data}
    if isinstance(data, dict):
        return {"id": number, **data}
    raise ValueError(f"expected a JSON object or string, got {type(data).__name__}")


@dataclass
class _Writer:
    fh: IO[str]

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.fh.flush()


async def run_file(
    client: AsyncGradient,
    input_path: Path,
    output_path: Path,
    *,
    model_id: str,
    resume: bool = False,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    params: dict[str, Any] | None = None,
    progress: ProgressCallback | Literal["tqdm"] | None = None,
    stderr: IO[str] | None = None,
) -> BatchFileSummary:
    """Complete every line of `input_path` into `output_path` (what `gradient-async batch` runs).

    Example::

        async with AsyncGradient() as client:
            summary = await run_file(client, Path("in.jsonl"), Path("out.jsonl"), model_id=adapter_id, resume=True)
    """
    err = stderr or sys.stderr
    done = _prepare(input_path, output_path, resume=resume)
    summary = BatchFileSummary()
    line_of: dict[int, int] = {}  # batch index -> 0-based INPUT line, only for items not written yet
    seen: set[str] = set()

    def prompts() -> Iterator[dict[str, Any]]:
        ordinal = 0
        with input_path.open(encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    record = _parse_line(number, raw)
                    key = _key(record["id"])
                    if key in seen:
                        raise ValueError(f"duplicate id {record['id']!r}")
                except ValueError as exc:
                    summary.bad_lines += 1
                    print(f"{input_path}:{number}: skipped bad line: {exc}", file=err)
                    continue
                seen.add(key)
                if key in done:
                    summary.skipped += 1
                    continue
                line_of[ordinal] = number - 1
                ordinal += 1
                yield record

    stream = stream_complete_batch(
        client,
        model_id,
        prompts(),
        max_concurrency=concurrency,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        progress=progress,
        **(params or {}),
    )
    mode = "a" if resume else "w"
    with output_path.open(mode, encoding="utf-8") as fh:
        writer = _Writer(fh)
        async with stream:
            async for item in stream:
                writer.write(_record(item, line_of.pop(item.index)))
    stats = stream.stats
    summary.ok, summary.failed = stats.ok, stats.failed
    summary.requests, summary.retried, summary.elapsed = stats.requests, stats.retried, stats.elapsed
    return summary


def _record(item: BatchItem[Completion], line: int) -> dict[str, Any]:
    item_id = item.id
    if item_id is None:  # a line whose dict failed validation before its id was read
        item_id = item.prompt.get("id", line + 1) if isinstance(item.prompt, dict) else line + 1
    value = item.value
    return {
        "id": item_id,
        "index": line,
        "output": None if value is None else value.generated_output,
        "finish_reason": None if value is None else value.finish_reason,
        "error": None if item.error is None else f"{type(item.error).__name__}: {item.error}",
    }


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
    async with AsyncGradient(**client_kwargs) as client:
        summary = await run_file(
            client,
            args.input,
            args.output,
            model_id=args.model,
            resume=args.resume,
            concurrency=args.concurrency,
            rpm=args.rpm,
            tpm=args.tpm,
            params=params,
            progress=progress,
        )
    print(summary.line(args.output), file=sys.stderr)
    return summary.exit_code


def run(args: argparse.Namespace) -> int:
    """Entry point used by `gradient-async batch`."""
    return asyncio.run(_main(args))
