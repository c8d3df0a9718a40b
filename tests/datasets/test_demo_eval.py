"""`gradient-async demo` ends with the evaluation: a before/after table and a report in the data dir."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_demo_prints_the_evaluation_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradient_async.cli import main

    code = main(["demo", "--engine", "test", "--prompts", "0", "--data-dir", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "evaluation: 6 questions, scorer 'contains'" in out
    assert "adapter before fine-tuning  0.00 [0.00, 0.00]" in out
    assert "after epoch 2 (loss " in out
    assert "adapter after fine-tuning   1.00 [1.00, 1.00]" in out
    assert "adapter vs base: 6 better, 0 worse, 0 same (McNemar p=0.031)" in out
    report = tmp_path / "eval-report.html"
    assert f"report: {report}" in out
    page = report.read_text()
    assert "Super Bowl" in page and "<svg" in page and "training loss" in page
    assert "| epoch | steps |" in (tmp_path / "eval-report.md").read_text()
