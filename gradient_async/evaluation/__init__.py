"""Evaluate models on a dataset: scorers, several models through the batch engine, mean and 95% bootstrap
interval per model and scorer, pairwise wins/losses/ties with an exact McNemar test, and reports.

Example::

    from gradient_async.evaluation import evaluate, write_report

    result = await evaluate(client, "eval.jsonl", models=[base_id, adapter_id], scorers=["contains", "exact"])
    print(result.summary.to_json())
    write_report("report.html", result)
"""

from gradient_async.evaluation.dataset import EvalItem, EvalItems, load_items
from gradient_async.evaluation.report import markdown_summary, render_html, write_report
from gradient_async.evaluation.results import (
    Disagreement,
    EvalResult,
    EvalSummary,
    ModelScores,
    PairResult,
    ScoreSummary,
)
from gradient_async.evaluation.runner import evaluate
from gradient_async.evaluation.scorers import (
    Contains,
    Exact,
    FunctionScorer,
    Judge,
    Normalized,
    Number,
    Regex,
    Scorer,
    Similarity,
    resolve_scorers,
)
from gradient_async.evaluation.stats import bootstrap_ci, mcnemar_exact

__all__ = [
    "Contains",
    "Disagreement",
    "EvalItem",
    "EvalItems",
    "EvalResult",
    "EvalSummary",
    "Exact",
    "FunctionScorer",
    "Judge",
    "ModelScores",
    "Normalized",
    "Number",
    "PairResult",
    "Regex",
    "ScoreSummary",
    "Scorer",
    "Similarity",
    "bootstrap_ci",
    "evaluate",
    "load_items",
    "markdown_summary",
    "mcnemar_exact",
    "render_html",
    "resolve_scorers",
    "write_report",
]
