"""`gradient-async fine-tune --data ...` and `gradient-async eval ...` against the loopback server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradient_async.cli import main
from gradient_async.testing import GradientServerURL

QUESTIONS = [(f"Question: what is {i} + {i}?\n\nAnswer:", str(2 * i)) for i in range(6)]


@pytest.fixture
def env(gradient_server_url: GradientServerURL, monkeypatch: pytest.MonkeyPatch) -> GradientServerURL:
    for name, value in gradient_server_url.env.items():
        monkeypatch.setenv(name, value)
    return gradient_server_url


def _adapter(capsys: pytest.CaptureFixture[str], base: str) -> str:
    assert main(["create-adapter", base, "cli_adapter"]) == 0
    return str(json.loads(capsys.readouterr().out)["id"])


def _files(tmp_path: Path) -> tuple[Path, Path]:
    train, evalset = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps({"inputs": f"{q} {a}"}) + "\n" for q, a in QUESTIONS[:4]))
    evalset.write_text(
        "".join(json.dumps({"id": i, "query": q, "expected": a}) + "\n" for i, (q, a) in enumerate(QUESTIONS))
    )
    return train, evalset


def test_fine_tune_run_then_eval_from_the_command_line(
    env: GradientServerURL, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = env.base_model_ids[-1]
    adapter = _adapter(capsys, base)
    train, evalset = _files(tmp_path)
    ckpt, run_report = tmp_path / "run.ckpt.jsonl", tmp_path / "run.html"
    args = ["fine-tune", adapter, "--data", str(train), "--epochs", "2", "--batch-size", "3", "--checkpoint", str(ckpt)]
    code = main([*args, "--eval-data", str(evalset), "--scorer", "exact", "--report", str(run_report)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].startswith("epoch 1: 2 steps, ") and ", exact 0.667" in out.splitlines()[0]
    assert "fine-tune: 4 requests sent, 0 steps already confirmed" in err and run_report.exists()
    assert main([*args, "--resume"]) == 0  # everything confirmed: nothing is sent again
    assert "fine-tune: 0 requests sent, 4 steps already confirmed" in capsys.readouterr().err
    assert main(args) == 1  # an existing checkpoint without --resume
    assert "--resume" in capsys.readouterr().err

    rows, summary_json, report = tmp_path / "rows.jsonl", tmp_path / "summary.json", tmp_path / "report.html"
    eval_args = ["eval", "--data", str(evalset), "--model", base, "--model", adapter, "--scorer", "exact"]
    eval_args += ["--scorer", "contains", "--rows", str(rows), "--summary-json", str(summary_json)]
    assert main([*eval_args, "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    assert f"| {adapter} | 6 | 0 | 0.667 [" in out and "| a | b | scorer |" in out
    summary = json.loads(summary_json.read_text())
    assert summary["n"] == 6 and summary["models"][adapter]["scores"]["exact"]["mean"] == pytest.approx(4 / 6)
    assert summary["pairs"][0] == {
        "a": base,
        "b": adapter,
        "scorer": "exact",
        "wins": 0,
        "losses": 4,
        "ties": 2,
        "p_value": 0.125,
    }
    assert len(rows.read_text().splitlines()) == 12 and report.exists() and report.with_suffix(".md").exists()
    assert main([*eval_args, "--resume"]) == 0
    assert "12 already done" in capsys.readouterr().err


def test_failures_exit_1_and_bad_input_is_named(
    env: GradientServerURL, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, evalset = _files(tmp_path)
    assert main(["eval", "--data", str(evalset), "--model", "no-such-model"]) == 1
    out, err = capsys.readouterr()
    assert "| no-such-model | 0 | 6 |" in out and "6 failed" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "expected": "a"}\n{"query": "q"}\n')
    assert main(["eval", "--data", str(bad), "--model", "m"]) == 1
    assert "bad.jsonl:2: 'expected'" in capsys.readouterr().err
    assert main(["eval", "--data", str(evalset), "--model", "m", "--scorer", "bleu"]) == 1
    assert "unknown scorer 'bleu'" in capsys.readouterr().err
    assert main(["fine-tune", "adapter", "--data", str(tmp_path / "missing.jsonl")]) == 1
    assert "training data not found" in capsys.readouterr().err
    assert main(["fine-tune", "adapter", "--resume", "--data", str(evalset)]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err


def test_outputs_are_checked_before_anything_is_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, evalset = _files(tmp_path)
    base = ["eval", "--data", str(evalset), "--model", "m"]
    assert main([*base, "--summary-json", str(tmp_path / "missing" / "s.json")]) == 2
    assert "cannot write --summary-json: folder" in capsys.readouterr().err
    assert main([*base, "--report", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main([*base, "--resume"]) == 2
    assert "--resume needs --rows" in capsys.readouterr().err
    assert main([*base, "--max-tokens", "0"]) == 1
    assert "max_generated_token_count" in capsys.readouterr().err


def test_outputs_never_overwrite_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, evalset = _files(tmp_path)
    before = evalset.read_text()
    base = ["eval", "--data", str(evalset), "--model", "m"]
    assert main([*base, "--rows", str(evalset), "--overwrite"]) == 2
    assert "would overwrite --data" in capsys.readouterr().err
    assert main([*base, "--report", str(tmp_path / "eval.md")]) == 2  # the HTML and its .md summary: one file
    assert main([*base, "--summary-json", str(tmp_path / "x.json"), "--rows", str(tmp_path / "x.json")]) == 2
    assert evalset.read_text() == before
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + evalset.read_bytes())
    from gradient_async.evaluation import load_items

    assert len(load_items(bom)) == 6
