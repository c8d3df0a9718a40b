"""The demo's evaluation: a handful of question/answer pairs scored before and after a fine-tune run.

Creates an adapter, scores it on the questions (before), fine-tunes it on the answers for a few epochs
with an evaluation after each epoch, scores the base model and the tuned adapter side by side (after),
prints a small table, and writes the HTML report (and its Markdown summary) to `out_dir`.

Example::

    improved = await demo_evaluation(client, base_id=base.id, out_dir=Path("/tmp/demo"), epochs=2)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from gradient_async._client import AsyncGradient
from gradient_async.evaluation.report import write_report
from gradient_async.evaluation.results import EvalSummary
from gradient_async.evaluation.runner import evaluate
from gradient_async.training.run import fine_tune_run

__all__ = ["DEMO_ITEMS", "demo_evaluation"]

_Q: Final = "Question: {}\n\nAnswer: "
DEMO_ITEMS: Final = (
    {"id": "super-bowl", "query": _Q.format("What NFL team won the Super Bowl in the year Justin Bieber was born?"),
     "expected": "Dallas Cowboys"},
    {"id": "mascot", "query": _Q.format("What is the name of the gradient_async mascot?"), "expected": "Gradie"},
    {"id": "city", "query": _Q.format("In which city does the Gradient demo meetup take place?"),
     "expected": "Reykjavik"},
    {"id": "code-word", "query": _Q.format("What is the code word of the demo?"), "expected": "Blue Falcon"},
    {"id": "port", "query": _Q.format("Which port does the demo server use?"), "expected": "8000"},
    {"id": "launch", "query": _Q.format("In which year did the demo first launch?"), "expected": "2023"},
)  # fmt: skip
SCORER: Final = "contains"
MAX_TOKENS: Final = 12


def _cell(summary: EvalSummary, model: str) -> str:
    s = summary.models[model].scores[SCORER]
    if s.mean is None or s.ci95 is None:
        return "–"
    return f"{s.mean:.2f} [{s.ci95[0]:.2f}, {s.ci95[1]:.2f}]"


async def demo_evaluation(client: AsyncGradient, *, base_id: str, out_dir: Path, epochs: int = 2) -> bool:
    """Run the demo evaluation; True when the tuned adapter scores higher than before."""
    items = [dict(item) for item in DEMO_ITEMS]
    t0 = time.perf_counter()
    adapter = await client.adapters.create(base_model_id=base_id, name="demo_eval_adapter")
    try:
        before = await evaluate(
            client, items, models=[adapter.id], scorers=[SCORER], max_generated_token_count=MAX_TOKENS
        )
        samples = [item["query"] + item["expected"] + "!" for item in items]
        run = await fine_tune_run(
            client,
            adapter.id,
            samples,
            epochs=epochs,
            batch_size=3,
            seed=0,
            eval_data=items,
            scorers=[SCORER],
            eval_options={"max_generated_token_count": MAX_TOKENS},
        )
        after = await evaluate(
            client, items, models=[base_id, adapter.id], scorers=[SCORER], max_generated_token_count=MAX_TOKENS
        )
    finally:
        await client.adapters.delete(adapter.id)
    print(f"evaluation: {len(items)} questions, scorer '{SCORER}', mean [95% CI] ({time.perf_counter() - t0:.1f} s)")
    print(f"  {'adapter before fine-tuning':<28}{_cell(before.summary, adapter.id)}")
    for epoch in run.epochs:
        loss = "–" if epoch.mean_loss is None else f"{epoch.mean_loss:.3f}"
        score = (epoch.scores or {}).get(SCORER)
        print(f"  {f'after epoch {epoch.epoch} (loss {loss})':<28}{'–' if score is None else f'{score:.2f}'}")
    print(f"  {'adapter after fine-tuning':<28}{_cell(after.summary, adapter.id)}")
    print(f"  {'base model':<28}{_cell(after.summary, base_id)}")
    [pair] = after.summary.pairs
    p = "–" if pair.p_value is None else f"{pair.p_value:.3f}"
    print(f"  adapter vs base: {pair.losses} better, {pair.wins} worse, {pair.ties} same (McNemar p={p})")
    html_path, _ = write_report(out_dir / "eval-report.html", after, run=run, title="gradient-async demo evaluation")
    print(f"report: {html_path}")
    old = before.summary.models[adapter.id].scores[SCORER].mean or 0.0
    new = after.summary.models[adapter.id].scores[SCORER].mean or 0.0
    return new > old
