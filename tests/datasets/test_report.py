"""The HTML report, rendered by real headless Chromium: what is drawn, not only what the HTML says."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from gradient_async.evaluation import (
    Disagreement,
    EvalResult,
    EvalSummary,
    ModelScores,
    PairResult,
    ScoreSummary,
    markdown_summary,
    mcnemar_exact,
    render_html,
    write_report,
)
from gradient_async.evaluation.svg import PALETTE
from gradient_async.training import EpochRecord, FineTuneRunResult, StepRecord

from ._browser import Image, dump_dom, screenshot

PLOT_H = 220  # the bar chart's plot height in px (svg.bar_chart)
BLUE, ORANGE, AXIS = (tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (PALETTE[0], PALETTE[1], "#444444"))


S = ScoreSummary


def _result() -> EvalResult:
    summary = EvalSummary(
        n=50,
        models={
            "base": ModelScores(
                50, 0, {"exact": ScoreSummary(0.2, (0.1, 0.3)), "contains": ScoreSummary(0.5, (0.35, 0.65))}
            ),
            "tuned": ModelScores(
                48, 2, {"exact": ScoreSummary(0.8, (0.7, 0.9)), "contains": ScoreSummary(0.9, (0.8, 0.97))}
            ),
        },
        pairs=[PairResult("base", "tuned", "exact", 1, 31, 16, mcnemar_exact(1, 31))],
    )
    disagreement = Disagreement(
        id="q1",
        query="What is 2+2?",
        expected=("4",),
        scorer="exact",
        a="base",
        b="tuned",
        answer_a="five <b>not bold</b>",
        answer_b="4",
        score_a=0.0,
        score_b=1.0,
    )
    return EvalResult(summary=summary, disagreements=[disagreement])


def _run(with_scores: bool) -> FineTuneRunResult:
    losses = [3.0, 2.6, 2.2, 1.6, 1.2, 0.8]
    steps = [StepRecord(i + 1, 1 if i < 3 else 2, 2, 10, 10 * loss, 0.01) for i, loss in enumerate(losses)]
    epochs = [
        EpochRecord(1, 3, 30, 78.0, {"exact": 0.3} if with_scores else None),
        EpochRecord(2, 3, 30, 36.0, {"exact": 0.9} if with_scores else None),
    ]
    return FineTuneRunResult("adapter-1", steps, epochs)


def _mask(img: Image, color: tuple[int, ...], tol: int) -> np.ndarray:
    pixels = np.frombuffer(b"".join(img.rows), dtype=np.uint8).reshape(img.height, img.width, 3).astype(int)
    return np.all(np.abs(pixels - np.array(color)) <= tol, axis=2)


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """For each column, the longest vertical run of True."""
    best = np.zeros(mask.shape[1], dtype=int)
    run = np.zeros(mask.shape[1], dtype=int)
    for row in mask:
        run = np.where(row, run + 1, 0)
        best = np.maximum(best, run)
    return best


def _vertical_runs(img: Image, color: tuple[int, ...], *, tol: int, min_len: int) -> list[tuple[int, int, int]]:
    """(first column, last column, longest vertical run) of each group of adjacent columns holding a run of
    `color` at least `min_len` pixels long."""
    best = _longest_runs(_mask(img, color, tol))
    groups: list[tuple[int, int, int]] = []
    for x in np.flatnonzero(best >= min_len).tolist():
        if groups and groups[-1][1] == x - 1:
            first, _, length = groups[-1]
            groups[-1] = (first, x, max(length, int(best[x])))
        else:
            groups.append((x, x, int(best[x])))
    return groups


def test_page_is_self_contained_and_escaped() -> None:
    page = render_html(_result(), run=_run(True))
    assert "<script" not in page and "<link" not in page and "url(" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\"' )]+", page)) == {"http://www.w3.org/2000/svg"}
    assert "five &lt;b&gt;not bold&lt;/b&gt;" in page


def test_bars_and_whiskers_are_drawn_to_scale(tmp_path: Path) -> None:
    page, _ = write_report(tmp_path / "bars.html", _result())
    img = screenshot(page, tmp_path, width=1200, height=700)
    blue = _vertical_runs(img, BLUE, tol=8, min_len=20)  # bars; legend and table swatches are smaller
    orange = _vertical_runs(img, ORANGE, tol=8, min_len=20)
    assert [h for _, _, h in blue] == pytest.approx([0.2 * PLOT_H, 0.5 * PLOT_H], abs=2)
    assert [h for _, _, h in orange] == pytest.approx([0.8 * PLOT_H, 0.9 * PLOT_H], abs=2)
    assert all(last - first + 1 >= 18 for first, last, _ in blue + orange)  # bars, not hairlines
    # bars are grouped by scorer: base then tuned within each group
    assert blue[0][0] < orange[0][0] < blue[1][0] < orange[1][0]
    whiskers = _vertical_runs(img, AXIS, tol=12, min_len=25)
    assert [h for _, _, h in whiskers] == pytest.approx(
        [0.2 * PLOT_H, 0.2 * PLOT_H, 0.3 * PLOT_H, 0.17 * PLOT_H], abs=3
    )


def _line_ends(mask: np.ndarray) -> tuple[float, float, int]:
    """Mean y of a line's pixels at its leftmost and rightmost columns, and how many columns it covers."""
    counts = mask.sum(axis=0)
    xs = np.flatnonzero((counts > 0) & (counts < 40))  # drops legend swatches (a 12 px square)
    xs = xs[xs < 24 + 56 + 520 + 6]  # the plot (page margin + left pad + width), not the legend
    assert xs.size, "the line was not drawn"
    left, right = np.flatnonzero(mask[:, xs[0]]), np.flatnonzero(mask[:, xs[-1]])
    return float(left.mean()), float(right.mean()), int(xs.size)


def test_loss_curve_goes_down_and_epoch_scores_go_up(tmp_path: Path) -> None:
    page, _ = write_report(tmp_path / "run.html", run=_run(True))
    blue = _mask(screenshot(page, tmp_path, width=1000, height=800), BLUE, 10)
    rows = np.flatnonzero(blue[:, : 24 + 56 + 520 + 6].any(axis=1))
    split = int(rows[np.argmax(np.diff(rows))] + 1)  # the gap between the two charts
    loss, scores = blue.copy(), blue.copy()
    loss[split:], scores[:split] = False, False
    top, bottom, width = _line_ends(loss)
    assert bottom - top > 150 and width > 400  # from the top-left to the bottom-right of the plot
    low, high, width = _line_ends(scores)
    assert low - high > 100 and width > 400  # 0.3 -> 0.9 on a 220 px plot: up by 132 px


def test_disagreements_are_side_by_side_and_nothing_overflows(tmp_path: Path) -> None:
    page, _ = write_report(tmp_path / "report.html", _result(), run=_run(True))
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<pre id=layout></pre><script>"
            "const s=document.querySelector('.side').children;"
            "const a=s[0].getBoundingClientRect(),b=s[1].getBoundingClientRect();"
            "const bars=[...document.querySelectorAll('rect.bar')].map(r=>r.getBoundingClientRect().height);"
            "document.getElementById('layout').textContent=JSON.stringify({a:[a.left,a.top,a.right],"
            "b:[b.left,b.top,b.right],bars,answer:document.querySelector('.answer').textContent,"
            "overflow:document.documentElement.scrollWidth-innerWidth,svgs:document.querySelectorAll('svg').length})"
            "</script></body>",
        )
    )
    dom = dump_dom(probe, tmp_path)
    found = re.search(r"<pre id=\"layout\">(.*?)</pre>", dom, re.S)
    assert found, dom[-2000:]
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["b"][0] >= layout["a"][2] - 1 and abs(layout["a"][1] - layout["b"][1]) < 1
    assert layout["answer"] == "five <b>not bold</b>"
    assert layout["bars"] == pytest.approx([0.2 * PLOT_H, 0.8 * PLOT_H, 0.5 * PLOT_H, 0.9 * PLOT_H], abs=0.5)
    assert layout["overflow"] <= 0 and layout["svgs"] == 3


def test_markdown_summary() -> None:
    text = markdown_summary(_result(), run=_run(True))
    assert "| base | 50 | 0 | 0.200 [0.100, 0.300] | 0.500 [0.350, 0.650] |" in text
    assert "| base | tuned | exact | 1 | 31 | 16 | 1.54e-08 |" in text
    assert "| 2 | 3 | 30 | 1.2000 | 0.900 |" in text


def test_huge_answers_are_clipped_in_the_page() -> None:
    result = _result()
    huge = Disagreement("q2", "x" * 10, ("4",), "exact", "base", "tuned", "y" * 50_000, "4", 0.0, 1.0)
    result.disagreements.append(huge)
    page = render_html(result)
    assert "y" * 2000 + "… (48000 more characters)" in page and "y" * 2001 not in page
