"""`evaluate` against the in-process server: several models, summary schema, rows, resume, failures apart,
and the API-backed scorers (similarity, judge)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gradient_async import InputValidationError
from gradient_async.evaluation import EvalItem, Judge, Similarity, evaluate, load_items
from gradient_async.evaluation.scorers import JUDGE_PROMPT
from gradient_async.testing import GradientServer

ITEMS: list[dict[str, Any]] = [
    {"id": f"q{i}", "query": f"Question: what is {i} + {i}?\n\nAnswer:", "expected": str(2 * i)} for i in range(8)
]


async def _tuned_adapter(server: GradientServer, *, learn: int) -> tuple[str, str]:
    """(base id, adapter id) where the adapter learned the answers of the first `learn` items."""
    base = server.base_model_ids[-1]
    adapter = await server.client.adapters.create(base_model_id=base, name="eval-test")
    samples = [f"{it['query']} {it['expected']}" for it in ITEMS[:learn]]
    await server.client.fine_tunes.create(adapter.id, samples=samples)
    return base, adapter.id


def _schema(summary: dict[str, Any]) -> None:
    assert set(summary) == {"n", "models", "pairs"}
    for model in summary["models"].values():
        assert set(model) == {"answered", "failed", "scores"}
        for score in model["scores"].values():
            assert set(score) == {"mean", "ci95"}
    for pair in summary["pairs"]:
        assert set(pair) == {"a", "b", "scorer", "wins", "losses", "ties", "p_value"}


async def test_two_models_summary_rows_and_disagreements(gradient_server: GradientServer, tmp_path: Path) -> None:
    base, adapter = await _tuned_adapter(gradient_server, learn=6)
    rows = tmp_path / "rows.jsonl"
    result = await evaluate(
        gradient_server.client, ITEMS, models=[base, adapter], scorers=["exact", "contains"], rows=rows
    )
    summary = result.summary.to_json()
    _schema(summary)
    assert summary["n"] == 8
    tuned = summary["models"][adapter]
    assert tuned["answered"] == 8 and tuned["failed"] == 0
    assert tuned["scores"]["exact"]["mean"] == pytest.approx(6 / 8)
    lo, hi = tuned["scores"]["exact"]["ci95"]
    assert 0 <= lo <= 6 / 8 <= hi <= 1
    assert summary["models"][base]["scores"]["exact"]["mean"] == 0.0
    [exact_pair, _contains_pair] = summary["pairs"]
    assert (exact_pair["a"], exact_pair["b"], exact_pair["scorer"]) == (base, adapter, "exact")
    assert (exact_pair["wins"], exact_pair["losses"], exact_pair["ties"]) == (0, 6, 2)
    assert exact_pair["p_value"] == pytest.approx(2 / 2**6)
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(lines) == 16 and {(r["model"], r["id"]) for r in lines} == {
        (m, it["id"]) for m in (base, adapter) for it in ITEMS
    }
    assert all(set(r["scores"]) == {"exact", "contains"} for r in lines)
    assert [d.id for d in result.disagreements] == [f"q{i}" for i in range(6)]
    first = result.disagreements[0]
    assert first.answer_b == "0" and first.score_a == 0.0 and first.score_b == 1.0 and first.query == ITEMS[0]["query"]
    assert result.summary.all_answered


async def test_failures_are_counted_apart_from_wrong_answers(gradient_server: GradientServer) -> None:
    base = gradient_server.base_model_ids[-1]
    result = await evaluate(gradient_server.client, ITEMS, models=[base, "no-such-model"], scorers=["exact"])
    missing = result.summary.models["no-such-model"]
    assert (missing.answered, missing.failed) == (0, 8)
    assert missing.scores["exact"].mean is None and missing.scores["exact"].ci95 is None
    assert result.summary.models[base].failed == 0 and not result.summary.all_answered
    assert result.summary.to_json()["models"]["no-such-model"]["scores"]["exact"] == {"mean": None, "ci95": None}


async def test_a_hopeless_model_stops_early(gradient_server: GradientServer) -> None:
    items = [{"query": f"q{i}", "expected": "a"} for i in range(300)]
    base = gradient_server.base_model_ids[-1]
    before = len(gradient_server.calls)
    result = await evaluate(
        gradient_server.client, items, models=["no-such-model", base], scorers=["exact"], max_concurrency=4
    )
    assert "no-such-model" in result.stopped and "5 identical failures" in result.stopped["no-such-model"]
    assert result.summary.models["no-such-model"].failed == 300  # unsent items count as failed
    assert result.summary.models[base].answered == 300  # the next model still runs
    assert len(gradient_server.calls) - before < 300 + 20


async def test_resume_runs_only_what_is_missing(gradient_server: GradientServer, tmp_path: Path) -> None:
    base, adapter = await _tuned_adapter(gradient_server, learn=8)
    rows = tmp_path / "rows.jsonl"
    first = await evaluate(gradient_server.client, ITEMS, models=[base, adapter], scorers=["exact"], rows=rows)
    lines = rows.read_text().splitlines(keepends=True)
    # keep 5 rows, a failed row and a torn line: 11 of 16 must run again
    failed = json.dumps({**json.loads(lines[5]), "error": "APIConnectionError: boom", "answer": None}) + "\n"
    rows.write_text("".join(lines[:5]) + failed + lines[6][:10])
    with pytest.raises(InputValidationError, match="--resume"):
        await evaluate(gradient_server.client, ITEMS, models=[base, adapter], scorers=["exact"], rows=rows)
    before = len(gradient_server.calls)
    again = await evaluate(
        gradient_server.client, ITEMS, models=[base, adapter], scorers=["exact"], rows=rows, resume=True
    )
    assert again.skipped == 5 and len(gradient_server.calls) - before == 11
    assert again.summary.to_json() == first.summary.to_json()
    keys = [(r["model"], r["id"]) for r in map(json.loads, rows.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 16
    with pytest.raises(InputValidationError, match="does not match this data"):
        other = [{**it, "id": f"x{i}"} for i, it in enumerate(ITEMS)]
        await evaluate(gradient_server.client, other, models=[base, adapter], scorers=["exact"], rows=rows, resume=True)


async def test_similarity_and_judge_use_the_api(gradient_server: GradientServer) -> None:
    client = gradient_server.client
    answered = [(EvalItem("q", ("same text",), 1), "same text"), (EvalItem("q", ("one",), 2), "something else")]
    assert await Similarity().score(client, answered) == [1.0, 0.0]
    raw = await Similarity(threshold=None).score(client, answered)
    assert raw[0] == pytest.approx(1.0) and 0.0 <= raw[1] < 0.8  # type: ignore[operator]
    # a judge adapter that learned one verdict for each answer
    base = gradient_server.base_model_ids[-1]
    judge = await client.adapters.create(base_model_id=base, name="judge")
    items = [(EvalItem("2+2?", ("4",), 1), "4"), (EvalItem("2+2?", ("4",), 2), "5")]
    prompts = [JUDGE_PROMPT.format(query=i.query, expected="4", answer=a) for i, a in items]
    await client.fine_tunes.create(judge.id, samples=[prompts[0] + "correct", prompts[1] + "incorrect"])
    assert await Judge(judge.id).score(client, items) == [1.0, 0.0]


def test_items_are_validated_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text('{"query": "a", "expected": "b"}\n{"query": "a", "expected": []}\n')
    with pytest.raises(InputValidationError, match=r"eval.jsonl:2: 'expected'"):
        load_items(path)
    path.write_text('{"query": "a", "expected": "b", "colour": 1}\n')
    with pytest.raises(InputValidationError, match=r"unknown field.*colour"):
        load_items(path)
    path.write_text('{"query": "a", "expected": "b", "max_generated_token_count": 0}\n')
    with pytest.raises(InputValidationError, match=r"eval.jsonl:1.*max_generated_token_count"):
        load_items(path)
    path.write_text('{"id": 1, "query": "a", "expected": "b"}\n{"id": 1, "query": "c", "expected": "d"}\n')
    with pytest.raises(InputValidationError, match="duplicate id 1"):
        load_items(path)
    path.write_text('{"query": "a", "expected": "b", "temperature": 0}\n\n{"query": "c", "expected": ["d", "e"]}\n')
    items = list(load_items(path))
    assert [i.id for i in items] == [1, 3] and items[1].expected == ("d", "e") and items[0].params == {"temperature": 0}
