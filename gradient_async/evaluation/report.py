"""Reports: one self-contained HTML page (inline CSS and SVG; no scripts, fonts, images or links to fetch)
and a Markdown summary for terminals and pull requests.

The page shows per-model scores with their 95% intervals as bars, the loss curve and per-epoch scores
of a fine-tune run, the pairwise table, and the items where models disagree, answers side by side.

Example::

    write_report("report.html", result, run=run)         # also writes report.md
    print(markdown_summary(result, run=run))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from gradient_async.evaluation.results import EvalResult, EvalSummary
from gradient_async.evaluation.svg import PALETTE, bar_chart, line_chart

if TYPE_CHECKING:
    from gradient_async.training.run import FineTuneRunResult

__all__ = ["markdown_summary", "render_html", "score_table", "write_report"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.side{display:grid;grid-template-columns:1fr 1fr;gap:8px}.answer{white-space:pre-wrap;background:#fafafa;
border:1px solid #e4e4e4;padding:6px;min-height:1.4em}.ok{color:#17803d}.bad{color:#b42318}
.muted{color:#666}.swatch{display:inline-block;width:10px;height:10px;margin-right:6px}
svg.chart{max-width:100%;height:auto}
"""


_SHOWN = 2000  # characters of a query or answer shown in the report


def _clip(text: str) -> str:
    return escape(text if len(text) <= _SHOWN else text[:_SHOWN] + f"… ({len(text) - _SHOWN} more characters)")


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def _scorers(summary: EvalSummary) -> list[str]:
    names: list[str] = []
    for model in summary.models.values():
        names.extend(n for n in model.scores if n not in names)
    return names


def score_table(summary: EvalSummary) -> str:
    """Markdown table: one row per model, `mean [lo, hi]` per scorer, answered and failed counts."""
    scorers = _scorers(summary)
    lines = [
        "| model | answered | failed | " + " | ".join(scorers) + " |",
        "|---|---:|---:|" + "---|" * len(scorers),
    ]
    for model, scores in summary.models.items():
        cells = []
        for name in scorers:
            s = scores.scores.get(name)
            cells.append("–" if s is None else f"{_num(s.mean)} {_ci(s.ci95)}")
        lines.append(f"| {model} | {scores.answered} | {scores.failed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pairs_markdown(summary: EvalSummary) -> str:
    lines = ["| a | b | scorer | wins | losses | ties | p (McNemar) |", "|---|---|---|---:|---:|---:|---:|"]
    for p in summary.pairs:
        lines.append(f"| {p.a} | {p.b} | {p.scorer} | {p.wins} | {p.losses} | {p.ties} | {_p(p.p_value)} |")
    return "\n".join(lines)


def _epochs_markdown(run: FineTuneRunResult) -> str:
    scorers = sorted({name for e in run.epochs for name in (e.scores or {})})
    lines = [
        "| epoch | steps | trainable tokens | mean loss | " + " | ".join(scorers) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(scorers),
    ]
    for e in run.epochs:
        cells = [_num((e.scores or {}).get(name)) for name in scorers]
        lines.append(
            f"| {e.epoch} | {e.steps} | {e.trainable_tokens} | {_num(e.mean_loss, 4)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def markdown_summary(result: EvalResult | None = None, *, run: FineTuneRunResult | None = None) -> str:
    """The report as Markdown: scores with intervals, pairwise comparison, the fine-tune run's epochs."""
    parts: list[str] = []
    if result is not None:
        summary = result.summary
        parts += [f"## Evaluation ({summary.n} items)", "", score_table(summary), ""]
        if summary.pairs:
            parts += ["### Pairwise", "", _pairs_markdown(summary), ""]
    if run is not None:
        parts += [f"## Fine-tune run ({len(run.steps)} steps, adapter {run.adapter_id})", "", _epochs_markdown(run), ""]
    return "\n".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _eval_sections(result: EvalResult) -> list[str]:
    summary = result.summary
    scorers = _scorers(summary)
    models = list(summary.models)
    groups = [
        (name, [(m, summary.models[m].scores[name].mean, summary.models[m].scores[name].ci95) for m in models])
        for name in scorers
    ]
    out = [f"<h2>Scores ({summary.n} items)</h2>", bar_chart(groups, title="mean score with 95% bootstrap interval")]
    rows = []
    for i, (model, m) in enumerate(summary.models.items()):
        swatch = f'<span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        cells = [f"{swatch}{escape(model)}", str(m.answered), str(m.failed)]
        for name in scorers:
            s = m.scores[name]
            cells.append(f"{_num(s.mean)} <span class=muted>{_ci(s.ci95)}</span>")
        rows.append(cells)
    out.append(_table(["model", "answered", "failed", *scorers], rows, numeric={1, 2}))
    if summary.pairs:
        out.append("<h2>Pairwise comparison</h2>")
        pair_rows = [
            [escape(p.a), escape(p.b), escape(p.scorer), str(p.wins), str(p.losses), str(p.ties), _p(p.p_value)]
            for p in summary.pairs
        ]
        out.append(
            _table(["a", "b", "scorer", "a wins", "b wins", "ties", "p (exact McNemar)"], pair_rows, {3, 4, 5, 6})
        )
        out.append("<p class=muted>p is shown for scorers whose scores are all 0 or 1.</p>")
    if result.disagreements:
        out.append(f"<h2>Where models disagree ({len(result.disagreements)} shown)</h2>")
        for d in result.disagreements:
            mark_a = "ok" if d.score_a > d.score_b else "bad"
            mark_b = "ok" if d.score_b > d.score_a else "bad"
            out.append(
                '<div class="item"><p><b>'
                + escape(str(d.id))
                + "</b> "
                + _clip(d.query)
                + "<br><span class=muted>expected: "
                + escape(" | ".join(d.expected))
                + f" · scorer: {escape(d.scorer)}</span></p><div class=side>"
                + f'<div><div class="{mark_a}">{escape(d.a)}: {d.score_a:g}</div>'
                + f'<div class="answer">{_clip(d.answer_a)}</div></div>'
                + f'<div><div class="{mark_b}">{escape(d.b)}: {d.score_b:g}</div>'
                + f'<div class="answer">{_clip(d.answer_b)}</div></div></div></div>'
            )
    return out


def _run_sections(run: FineTuneRunResult) -> list[str]:
    out = [f"<h2>Fine-tune run: {escape(run.adapter_id)}</h2>"]
    step_loss = [(float(s.step), s.mean_loss) for s in run.steps if s.mean_loss is not None]
    epoch_loss = []
    for e in run.epochs:
        last = max((s.step for s in run.steps if s.epoch == e.epoch), default=0)
        if e.mean_loss is not None:
            epoch_loss.append((float(last), e.mean_loss))
    series = [("loss per step (mean per token)", step_loss), ("epoch mean", epoch_loss)]
    out.append(line_chart(series, title="training loss", x_label="step", markers=False))
    scorers = sorted({name for e in run.epochs for name in (e.scores or {})})
    if scorers:
        score_series = [
            (name, [(float(e.epoch), v) for e in run.epochs if (v := (e.scores or {}).get(name)) is not None])
            for name in scorers
        ]
        out.append(line_chart(score_series, title="score per epoch", x_label="epoch", y_range=(0, 1), markers=True))
    rows = [
        [str(e.epoch), str(e.steps), str(e.trainable_tokens), _num(e.mean_loss, 4)]
        + [_num((e.scores or {}).get(name)) for name in scorers]
        for e in run.epochs
    ]
    out.append(
        _table(["epoch", "steps", "trainable tokens", "mean loss", *scorers], rows, set(range(4 + len(scorers))))
    )
    return out


def render_html(
    result: EvalResult | None = None, *, run: FineTuneRunResult | None = None, title: str = "Evaluation report"
) -> str:
    """The whole report as one HTML document (UTF-8, self-contained)."""
    body: list[str] = [f"<h1>{escape(title)}</h1>"]
    if result is not None:
        body += _eval_sections(result)
    if run is not None:
        body += _run_sections(run)
    if result is None and run is None:
        body.append("<p>Nothing to report.</p>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )


def write_report(
    path: str | os.PathLike[str],
    result: EvalResult | None = None,
    *,
    run: FineTuneRunResult | None = None,
    title: str = "Evaluation report",
) -> tuple[Path, Path]:
    """Write the HTML report to `path` and its Markdown summary beside it (`.md`); returns both paths.

    Example::

        html_path, md_path = write_report("out/report.html", result, run=run)
    """
    html_path = Path(path)
    md_path = html_path.with_suffix(".md")
    if md_path == html_path:
        md_path = html_path.with_name(html_path.name + ".summary.md")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(result, run=run, title=title), encoding="utf-8")
    md_path.write_text(f"# {title}\n\n" + markdown_summary(result, run=run), encoding="utf-8")
    return html_path, md_path
