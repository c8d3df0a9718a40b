"""`run_file`: complete every line of a JSONL file into another, resumably (what `gradient-async batch` runs).

Numbering is one thing everywhere: the 1-based line of INPUT. It is the `line` field of each output
row, the id of a line that has no id (or a null one), and the number in every message.

Example::

    async with AsyncGradient() as client:
        summary = await run_file(client, Path("in.jsonl"), Path("out.jsonl"), model_id=adapter_id, resume=True)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from gradient_async._batch.progress import ProgressCallback
from gradient_async._client import AsyncGradient
from gradient_async._errors import STOP_AFTER, GradientError, HopelessStreak, InputValidationError
from gradient_async.batch import BatchItem, stream_complete_batch
from gradient_async.cli._errors import describe, os_reason
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody, Completion

__all__ = ["STOP_AFTER", "BatchFileError", "BatchFileSummary", "run_file"]


class BatchFileError(GradientError):
    """INPUT or OUTPUT cannot be used; the message says what to do."""


@dataclass
class BatchFileSummary:
    """What one run did: items ok/failed, lines skipped (already done) or bad, HTTP requests,
    and why it stopped early (`stopped`), if it did. Filled in as the run goes, so it is
    complete even when the run is cancelled."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    bad_lines: int = 0
    requests: int = 0
    retried: int = 0
    elapsed: float = 0.0
    stopped: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 and self.bad_lines == 0 and self.stopped is None else 1

    def line(self, output: Path) -> str:
        return (
            f"batch: {self.ok} ok, {self.failed} failed, {self.skipped} already done, {self.bad_lines} bad lines; "
            f"{self.requests} requests ({self.retried} retried) in {self.elapsed:.1f}s -> {output}"
        )


def _key(item_id: Any) -> str:
    return json.dumps(item_id, sort_keys=True)


def _cannot_write(output: Path, exc: OSError) -> BatchFileError:
    return BatchFileError(f"cannot write {output}: {os_reason(exc)}")


def _load_done(output: Path) -> dict[str, str]:
    """id key -> the success line already in OUTPUT (failures and torn lines are dropped)."""
    done: dict[str, str] = {}
    if not output.exists():
        return done
    with output.open("rb") as fh:
        for data in fh:
            try:
                raw = data.decode("utf-8")
                record = json.loads(raw)
            except ValueError:
                continue  # a line torn by a crash (maybe inside a character): its item runs again
            if isinstance(record, dict) and record.get("id") is not None and record.get("error") is None:
                done[_key(record["id"])] = raw if raw.endswith("\n") else raw + "\n"
    return done


def _prepare(input_path: Path, output: Path, *, resume: bool, overwrite: bool) -> tuple[dict[str, str], IO[str]]:
    """Check INPUT and OUTPUT before anything is sent; returns OUTPUT's successes (on resume) and OUTPUT open."""
    if input_path.is_dir():
        raise BatchFileError(f"input {input_path} is a directory (pass a JSONL file of prompts)")
    if not input_path.is_file():
        raise BatchFileError(f"input file not found: {input_path} (pass a JSONL file of prompts)")
    if output.exists() and output.resolve() == input_path.resolve():
        raise BatchFileError(f"the output {output} is the input file: write the answers to another file")
    if resume and overwrite:
        raise BatchFileError("--resume and --overwrite exclude each other: continue OUTPUT, or start it over")
    try:
        if output.is_dir():
            raise BatchFileError(f"cannot write {output}: it is a directory")
        has_rows = output.exists() and output.stat().st_size > 0
        if has_rows and not resume and not overwrite:
            raise BatchFileError(
                f"{output} already has results: pass --resume to continue it, or --overwrite to start over"
            )
        done: dict[str, str] = {}
        if resume:
            done = _load_done(output)
            tmp = output.with_name(output.name + ".tmp")
            try:
                with tmp.open("w", encoding="utf-8") as fh:  # keep only the successes, atomically
                    fh.writelines(done.values())
                os.replace(tmp, output)
            except OSError:
                tmp.unlink(missing_ok=True)  # OUTPUT itself is untouched
                raise
        return done, output.open("a" if resume else "w", encoding="utf-8")
    except OSError as exc:
        raise _cannot_write(output, exc) from None


def _parse_line(number: int, raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if isinstance(data, str):
        return {"id": number, "query": data}
    if isinstance(data, dict):
        record = dict(data)
        if record.get("id") is None:  # missing or null: the line number, in output and on resume alike
            record["id"] = number
        return record
    raise ValueError(f"expected a JSON object or string, got {type(data).__name__}")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start + 1} of the line)") from None


def _check(number: int, record: dict[str, Any], params: dict[str, Any]) -> None:
    """Raise InputValidationError (naming the line) when this item would be refused before sending."""
    fields = {k: v for k, v in record.items() if k != "id"}
    query = fields.pop("query", None)
    if query is None:
        query = fields.pop("prompt", None)
    if not isinstance(query, str):
        raise InputValidationError(f"line {number}: expected a string 'query' (or 'prompt'), got {query!r}")
    validate_input(CompleteBody, f"completion request on line {number}", {"query": query, **params, **fields})


@dataclass
class _Line:
    number: int
    record: dict[str, Any] | None = None
    invalid: str | None = None  # the row's error: this line is written as failed without being sent


@dataclass
class _Input:
    """INPUT's lines to run, re-read lazily on each pass; `len()` is the number that will be sent."""

    path: Path
    done: dict[str, str]
    params: dict[str, Any]
    err: IO[str] | None = None  # where bad lines are reported (default: stderr)
    summary: BatchFileSummary = field(default_factory=BatchFileSummary)
    counting: bool = False  # a pass that only counts: reports and counts nothing

    def lines(self) -> Iterator[_Line]:
        seen: set[str] = set()
        with self.path.open("rb") as fh:
            for number, data in enumerate(fh, start=1):
                if not data.strip():
                    continue
                try:
                    record = _parse_line(number, _decode(data))
                    key = _key(record["id"])
                    if key in seen:
                        raise ValueError(f"duplicate id {record['id']!r}")
                except ValueError as exc:
                    if not self.counting:
                        self.summary.bad_lines += 1
                        print(f"{self.path}:{number}: skipped bad line: {exc}", file=self.err or sys.stderr)
                    continue
                seen.add(key)
                if key in self.done:
                    if not self.counting:
                        self.summary.skipped += 1
                    continue
                try:
                    _check(number, record, self.params)
                except InputValidationError as exc:
                    yield _Line(number, record, invalid=f"{type(exc).__name__}: {exc}")
                    continue
                yield _Line(number, record)

    def __len__(self) -> int:
        counting = _Input(self.path, self.done, self.params, counting=True)
        return sum(1 for line in counting.lines() if line.invalid is None)


class _Output:
    """OUTPUT rows, one JSON line each, flushed at once; counts what was written."""

    def __init__(self, path: Path, fh: IO[str], summary: BatchFileSummary) -> None:
        self.path, self.fh, self.summary = path, fh, summary

    def write(self, row: dict[str, Any]) -> None:
        try:
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.fh.flush()
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None
        if row["error"] is None:
            self.summary.ok += 1
        else:
            self.summary.failed += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the write that failed already said why
            self.fh.close()


def _row(item_id: Any, line: int, value: Completion | None, error: str | None) -> dict[str, Any]:
    return {
        "id": item_id,
        "line": line,
        "output": None if value is None else value.generated_output,
        "finish_reason": None if value is None else value.finish_reason,
        "error": error,
    }


async def run_file(
    client: AsyncGradient,
    input_path: Path,
    output_path: Path,
    *,
    model_id: str,
    resume: bool = False,
    overwrite: bool = False,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    params: dict[str, Any] | None = None,
    progress: ProgressCallback | Literal["tqdm"] | None = None,
    fail_fast: bool = False,
    stop_after: int = STOP_AFTER,
    stderr: IO[str] | None = None,
    summary: BatchFileSummary | None = None,
) -> BatchFileSummary:
    """Complete every line of `input_path` into `output_path`, one row per item as it completes.

    A non-empty OUTPUT needs `resume=True` (keep its successes, run the rest) or `overwrite=True`.
    The run stops early after `stop_after` identical hopeless failures in a row (bad token, unknown
    model, nothing listening), or at the first failure with `fail_fast`; `summary.stopped` says why.
    Raises BatchFileError when INPUT or OUTPUT cannot be used (before anything is sent, or when a
    write fails). Pass `summary` to read the counts even if the run is cancelled.

    Example::

        async with AsyncGradient() as client:
            summary = await run_file(client, Path("in.jsonl"), Path("out.jsonl"), model_id=adapter_id, resume=True)
    """
    if summary is None:
        summary = BatchFileSummary()
    counts = summary
    params = dict(params or {})
    done, fh = _prepare(input_path, output_path, resume=resume, overwrite=overwrite)
    out = _Output(output_path, fh, summary)
    source = _Input(input_path, done, params, err=stderr, summary=counts)
    streak = HopelessStreak(1 if fail_fast else stop_after)
    lines: dict[str, int] = {}  # id key -> INPUT line, for items sent and not written yet

    class _Prompts:
        def __iter__(self) -> Iterator[dict[str, Any]]:
            for line in source.lines():
                assert line.record is not None
                if line.invalid is not None:
                    out.write(_row(line.record["id"], line.number, None, line.invalid))
                    if fail_fast:
                        counts.stopped = f"stopped at the first failure (--fail-fast): {line.invalid}"
                        return
                    continue
                lines[_key(line.record["id"])] = line.number
                yield line.record

    class _CountedPrompts(_Prompts):  # a length gives the progress bar its total (one extra read of INPUT)
        def __len__(self) -> int:
            return len(source)

    stream = stream_complete_batch(
        client,
        model_id,
        _Prompts() if progress is None else _CountedPrompts(),
        max_concurrency=concurrency,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        progress=progress,
        **params,
    )
    try:
        async with stream:
            async for item in stream:
                _write_item(out, item, lines)
                if streak.add(item.error):
                    assert item.error is not None
                    how = (
                        "at the first failure (--fail-fast)"
                        if fail_fast
                        else f"after {streak.count} identical failures in a row"
                    )
                    summary.stopped = f"stopped {how}: {describe(item.error)}"
                    break
                if fail_fast and item.error is not None:
                    summary.stopped = f"stopped at the first failure (--fail-fast): {describe(item.error)}"
                    break
                if summary.stopped is not None:
                    break
    finally:
        out.close()
        stats = stream.stats
        summary.requests, summary.retried, summary.elapsed = stats.requests, stats.retried, stats.elapsed
    return summary


def _write_item(out: _Output, item: BatchItem[Completion], lines: dict[str, int]) -> None:
    item_id = item.id
    if item_id is None and isinstance(item.prompt, dict):
        item_id = item.prompt.get("id")
    line = lines.pop(_key(item_id), 0)
    error = None if item.error is None else describe(item.error)
    out.write(_row(item_id, line, item.value, error))
