"""`evaluate`: answer every item with every model through the batch engine, score, summarize.

Each model streams the dataset through `stream_complete_batch` (the client's rate limits, retries and
concurrency cap; flat memory). Answers are scored in chunks as they arrive and written to the rows file
(one JSON line per item and model, flushed per chunk). Memory per item is a few bytes per model and scorer
(the scores themselves), so 10^5-10^6 items fit. `resume=True` keeps the rows file's complete rows (answered
and scored by every scorer), drops the rest and runs what is missing, so each item and model ends up once.

Row: `{"id", "index" (0-based item position), "model", "answer", "finish_reason", "error", "scores": {SCORER:
value | null}, "score_errors"?: {SCORER: message}}`.

Example::

    result = await evaluate(client, "eval.jsonl", models=[base_id, adapter_id], scorers=["contains", "exact"])
    print(result.summary.to_json())
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import zlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gradient_async._batch.progress import ProgressArg
from gradient_async._errors import (
    STOP_AFTER,
    GradientError,
    HopelessStreak,
    InputValidationError,
)
from gradient_async.batch import stream_complete_batch
from gradient_async.evaluation.dataset import EvalItem, EvalItems, EvalSource, load_items
from gradient_async.evaluation.results import (
    Disagreement,
    EvalResult,
    EvalSummary,
    ModelScores,
    PairResult,
    ScoreSummary,
)
from gradient_async.evaluation.scorers import Scorer, ScorerArg, resolve_scorers
from gradient_async.evaluation.stats import bootstrap_ci, mcnemar_exact, pair_counts
from gradient_async.types._base import validate_input
from gradient_async.types.completions import CompleteBody

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient
    from gradient_async.types.completions import Completion

__all__ = ["evaluate"]

_PENDING, _ANSWERED, _FAILED = 0, 1, 2
_NAN = math.nan


def _id_hash(item_id: Any) -> int:
    return zlib.crc32(json.dumps(item_id).encode("utf-8"))


class _Table:
    """Per model: item status, id hash, and one float array per scorer (NaN = no score)."""

    def __init__(self, n: int, models: Sequence[str], scorers: Sequence[Scorer]) -> None:
        self.n = n
        self.status = {m: bytearray(n) for m in models}
        self.ids = {m: array("I", bytes(4 * n)) for m in models}
        self.scores = {m: {s.name: array("d", [_NAN]) * n for s in scorers} for m in models}
        self.scorer_errors = 0

    def set(self, model: str, index: int, item_id: Any, status: int, scores: Mapping[str, float | None]) -> None:
        self.status[model][index] = status
        self.ids[model][index] = _id_hash(item_id)
        for name, value in scores.items():
            self.scores[model][name][index] = _NAN if value is None else value


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def _load_rows(path: Path, table: _Table, models: Sequence[str], scorers: Sequence[Scorer]) -> int:
    """Keep the complete rows of `path` (rewritten atomically without the rest); returns how many."""
    names = [s.name for s in scorers]
    kept = 0
    tmp = path.with_name(path.name + ".tmp")
    with path.open(encoding="utf-8", errors="replace") as src, tmp.open("w", encoding="utf-8") as dst:
        for raw in src:
            try:
                row = json.loads(raw)
            except ValueError:
                continue  # torn by a crash: that item runs again
            if not isinstance(row, dict) or row.get("error") is not None or row.get("model") not in models:
                continue
            index, scores = row.get("index"), row.get("scores")
            if not isinstance(index, int) or not 0 <= index < table.n or not isinstance(scores, dict):
                continue
            values = [scores.get(name) for name in names]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                continue  # a scorer is new or failed on it: answer and score it again
            model = row["model"]
            if table.status[model][index] == _ANSWERED:
                continue
            table.set(model, index, row.get("id"), _ANSWERED, dict(zip(names, values, strict=True)))
            dst.write(_dump(row))
            kept += 1
    os.replace(tmp, path)
    return kept


def _check_ids(items: EvalItems, table: _Table) -> None:
    for index, item in enumerate(items):
        want = _id_hash(item.id)
        for model, status in table.status.items():
            if status[index] == _ANSWERED and table.ids[model][index] != want:
                raise InputValidationError(
                    f"the rows file does not match this data (item {index} has id {item.id!r}); "
                    "use the same data to resume, or a new rows file"
                )


async def _score_chunk(
    client: AsyncGradient,
    model: str,
    chunk: list[tuple[int, EvalItem, Completion]],
    scorers: Sequence[Scorer],
    table: _Table,
    out: IO[str],
) -> None:
    answered = [(item, completion.generated_output) for _, item, completion in chunk]
    columns = [await scorer.score(client, answered) for scorer in scorers]
    for row_no, (index, item, completion) in enumerate(chunk):
        scores: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for scorer, column in zip(scorers, columns, strict=True):
            value = column[row_no]
            if isinstance(value, GradientError):
                scores[scorer.name] = None
                errors[scorer.name] = str(value)
                table.scorer_errors += 1
            else:
                scores[scorer.name] = value
        table.set(model, index, item.id, _ANSWERED, scores)
        row: dict[str, Any] = {
            "id": item.id,
            "index": index,
            "model": model,
            "answer": completion.generated_output,
            "finish_reason": completion.finish_reason,
            "error": None,
            "scores": scores,
        }
        if errors:
            row["score_errors"] = errors
        out.write(_dump(row))
    out.flush()


async def _run_model(
    client: AsyncGradient,
    model: str,
    items: EvalItems,
    scorers: Sequence[Scorer],
    table: _Table,
    out: IO[str],
    *,
    chunk_size: int,
    batch_options: Mapping[str, Any],
    completion_params: Mapping[str, Any],
) -> str | None:
    """Answer and score `model`'s missing items; the reason when it stopped early (hopeless failures)."""
    status = table.status[model]
    streak = HopelessStreak(STOP_AFTER)
    pending: dict[int, tuple[int, EvalItem]] = {}

    def prompts() -> Iterator[dict[str, Any]]:
        ordinal = 0
        for index, item in enumerate(items):
            if status[index] == _ANSWERED:
                continue
            pending[ordinal] = (index, item)
            ordinal += 1
            yield item.prompt()

    chunk: list[tuple[int, EvalItem, Completion]] = []
    stream = stream_complete_batch(client, model, prompts(), **batch_options, **completion_params)
    async with stream:
        async for result in stream:
            index, item = pending.pop(result.index)
            if result.error is not None or result.value is None:
                table.set(model, index, item.id, _FAILED, {})
                error = f"{type(result.error).__name__}: {result.error}"
                row = {"id": item.id, "index": index, "model": model, "answer": None, "error": error, "scores": {}}
                out.write(_dump(row))
                if streak.add(result.error):
                    out.flush()
                    return f"stopped after {STOP_AFTER} identical failures in a row: {error}"
                continue
            streak.add(None)
            chunk.append((index, item, result.value))
            if len(chunk) >= chunk_size:
                await _score_chunk(client, model, chunk, scorers, table, out)
                chunk = []
    if chunk:
        await _score_chunk(client, model, chunk, scorers, table, out)
    out.flush()
    return None


def _summarize(
    table: _Table, models: Sequence[str], scorers: Sequence[Scorer], *, resamples: int, seed: int
) -> EvalSummary:
    per_model: dict[str, ModelScores] = {}
    for model in models:
        status = table.status[model]
        answered = status.count(_ANSWERED)
        failed = table.n - answered  # failed, or never sent (a model stopped early)
        scores: dict[str, ScoreSummary] = {}
        for scorer in scorers:
            values = [v for v in table.scores[model][scorer.name] if v == v]
            mean = math.fsum(values) / len(values) if values else None
            ci = bootstrap_ci(values, resamples=resamples, seed=seed)
            scores[scorer.name] = ScoreSummary(mean, ci, scored=len(values), errors=answered - len(values))
        per_model[model] = ModelScores(answered, failed, scores)
    pairs: list[PairResult] = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            for scorer in scorers:
                xs, ys = table.scores[a][scorer.name], table.scores[b][scorer.name]
                counts = pair_counts(xs, ys)
                binary = all(v in (0.0, 1.0) for v in xs if v == v) and all(v in (0.0, 1.0) for v in ys if v == v)
                p_value = mcnemar_exact(counts.wins, counts.losses) if binary else None
                pairs.append(PairResult(a, b, scorer.name, counts.wins, counts.losses, counts.ties, p_value))
    return EvalSummary(table.n, per_model, pairs)


def _disagreements(
    table: _Table, items: EvalItems, rows_path: Path, models: Sequence[str], scorers: Sequence[Scorer], limit: int
) -> list[Disagreement]:
    if limit <= 0 or len(models) < 2:
        return []
    wanted: list[tuple[str, str, str, int]] = []  # (a, b, scorer, index)
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            for scorer in scorers:
                xs, ys = table.scores[a][scorer.name], table.scores[b][scorer.name]
                found = [k for k in range(table.n) if xs[k] == xs[k] and ys[k] == ys[k] and xs[k] != ys[k]]
                if found:
                    wanted.extend((a, b, scorer.name, k) for k in found[:limit])
                    break
    if not wanted:
        return []
    need = {(m, k) for a, b, _, k in wanted for m in (a, b)}
    indices = {k for _, _, _, k in wanted}
    answers: dict[tuple[str, int], str] = {}
    with rows_path.open(encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            key = (row.get("model"), row.get("index"))
            if key in need and row.get("error") is None:
                answers[key] = str(row.get("answer"))
    by_index = {k: item for k, item in enumerate(items) if k in indices}
    out = []
    for a, b, name, k in wanted:
        item = by_index[k]
        out.append(
            Disagreement(
                id=item.id,
                query=item.query,
                expected=item.expected,
                scorer=name,
                a=a,
                b=b,
                answer_a=answers.get((a, k), ""),
                answer_b=answers.get((b, k), ""),
                score_a=table.scores[a][name][k],
                score_b=table.scores[b][name][k],
            )
        )
    return out


def _check_models(models: Sequence[str]) -> list[str]:
    if isinstance(models, str) or not isinstance(models, Sequence) or not models:
        raise InputValidationError("models must be a non-empty list of model ids, e.g. [base_id, adapter_id]")
    out = list(models)
    for model in out:
        if not isinstance(model, str) or not model.strip():
            raise InputValidationError(f"a model id must be a non-empty string, got {model!r}")
    if len(set(out)) != len(out):
        raise InputValidationError("the same model is listed twice; list each model once")
    return out


async def evaluate(
    client: AsyncGradient,
    data: EvalSource,
    *,
    models: Sequence[str],
    scorers: Sequence[ScorerArg] | ScorerArg = ("contains",),
    max_concurrency: int | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    progress: ProgressArg = None,
    rows: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_size: int = 256,
    resamples: int = 2000,
    seed: int = 0,
    max_disagreements: int = 20,
    **completion_params: Any,
) -> EvalResult:
    """Answer every item of `data` with each of `models`, score the answers, and summarize.

    Args:
        data: a JSONL path or a list of `{"id"?, "query", "expected", ...completion params}` items.
        models: base model ids and/or adapter ids, compared pairwise in this order.
        scorers: names (`"contains"`, `"number:0.5"`, `"judge:MODEL"`...), Scorer objects or callables.
        max_concurrency, requests_per_minute, tokens_per_minute, progress: as for `client.completions.batch`.
        rows: JSONL file of one row per item and model (kept; a temporary file otherwise).
        resume: keep `rows`' complete rows and run only the rest. overwrite: start `rows` over.
        resamples, seed: the bootstrap interval's resamples and RNG seed.
        **completion_params: defaults for every item (an item's own params win).

    Failed items (no answer after the batch engine's retries) are counted in `failed`, never scored.

    Example::

        result = await evaluate(client, items, models=[base.id, adapter.id], scorers=["contains"])
        for model, m in result.summary.models.items():
            print(model, m.scores["contains"].mean, m.scores["contains"].ci95)
    """
    started = time.monotonic()
    model_ids = _check_models(models)
    scorer_list = resolve_scorers(scorers)
    items = load_items(data)
    if completion_params:  # checked once here, not once per item by the batch engine
        validate_input(CompleteBody, "completion params", {"query": "?", **completion_params})
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputValidationError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise InputValidationError(f"resamples must be an integer >= 100, got {resamples!r}")
    if resume and rows is None:
        raise InputValidationError("resume=True needs the rows file of the earlier run (rows=...)")
    table = _Table(len(items), model_ids, scorer_list)
    temp_dir = None
    skipped = 0
    if rows is None:
        temp_dir = tempfile.TemporaryDirectory(prefix="gradient-eval-")
        rows_path = Path(temp_dir.name) / "rows.jsonl"
    else:
        rows_path = Path(rows)
        if items.path is not None and rows_path.resolve() == items.path.resolve():
            raise InputValidationError(f"rows file {rows_path} is the evaluation data itself; write rows elsewhere")
        if rows_path.is_dir():
            raise InputValidationError(f"rows must be a file, and {rows_path} is a directory")
        exists = rows_path.is_file() and rows_path.stat().st_size > 0
        if exists and resume:
            skipped = _load_rows(rows_path, table, model_ids, scorer_list)
            _check_ids(items, table)
        elif exists and not overwrite:
            raise InputValidationError(
                f"rows file {rows_path} already has rows: resume=True (--resume) continues that run, "
                "overwrite=True (--overwrite) starts it over"
            )
    batch_options = {
        "max_concurrency": max_concurrency,
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "progress": progress,
    }
    try:
        try:
            out = rows_path.open("a" if resume else "w", encoding="utf-8")  # noqa: ASYNC230
        except OSError as exc:
            raise InputValidationError(f"cannot write rows file {rows_path}: {exc.strerror or exc}") from None
        stopped: dict[str, str] = {}
        with out:
            for model in model_ids:
                reason = await _run_model(
                    client,
                    model,
                    items,
                    scorer_list,
                    table,
                    out,
                    chunk_size=chunk_size,
                    batch_options=batch_options,
                    completion_params=completion_params,
                )
                if reason is not None:
                    stopped[model] = reason
        summary = _summarize(table, model_ids, scorer_list, resamples=resamples, seed=seed)
        disagreements = _disagreements(table, items, rows_path, model_ids, scorer_list, max_disagreements)
    finally:
        if temp_dir is not None:
            temp_dir.cleanup()
    return EvalResult(
        summary=summary,
        disagreements=disagreements,
        scorer_errors=table.scorer_errors,
        skipped=skipped,
        elapsed=time.monotonic() - started,
        rows=None if rows is None else rows_path,
        stopped=stopped,
    )
