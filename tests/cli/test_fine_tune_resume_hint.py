"""The --resume line `gradient-async fine-tune` prints repeats the command it was given (not sys.argv)."""

from __future__ import annotations

import argparse

import pytest

from gradient_async.cli import fine_tune


def test_the_hint_repeats_the_given_command_with_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["pytest", "-q"])  # the process's own argv must not leak in
    given = ["fine-tune", "ad 1", "--data", "train.jsonl", "--checkpoint", "run.ckpt", "--resume"]
    hint = fine_tune._resume_hint(argparse.Namespace(argv=given))
    assert hint == "gradient-async fine-tune 'ad 1' --data train.jsonl --checkpoint run.ckpt --resume"


def test_without_the_command_the_hint_says_so() -> None:
    assert fine_tune._resume_hint(argparse.Namespace()) == "the same command with --resume"
