"""The `gradient-async` command line against the real local server on a loopback port."""

from __future__ import annotations

import json

import pytest

from gradient_async.cli import main
from gradient_async.testing import GradientServerURL

QUERY = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "


@pytest.fixture
def env(gradient_server_url: GradientServerURL, monkeypatch: pytest.MonkeyPatch) -> GradientServerURL:
    for name, value in gradient_server_url.env.items():
        monkeypatch.setenv(name, value)
    return gradient_server_url


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_seed_story_from_the_command_line(env: GradientServerURL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--only-base"]) == 0
    bases = _json(capsys)
    assert isinstance(bases, list) and bases and all(m["type"] == "baseModel" for m in bases)
    base_id = bases[-1]["id"]

    assert main(["create-adapter", base_id, "my_model_adapter", "--rank", "4"]) == 0
    adapter = _json(capsys)
    assert isinstance(adapter, dict) and adapter["name"] == "my_model_adapter"
    adapter_id = adapter["id"]

    assert main(["complete", adapter_id, QUERY, "--max-tokens", "16"]) == 0
    assert "Dallas Cowboys" not in capsys.readouterr().out

    assert main(["fine-tune", adapter_id, QUERY + " Dallas Cowboys!"]) == 0
    tuned = _json(capsys)
    assert isinstance(tuned, dict) and tuned["numberOfTrainableTokens"] > 0

    assert main(["complete", adapter_id, QUERY, "--max-tokens", "16"]) == 0
    assert "Dallas Cowboys" in capsys.readouterr().out

    assert main(["delete-adapter", adapter_id]) == 0
    assert capsys.readouterr().out == f"deleted adapter {adapter_id}\n"
    assert main(["models"]) == 0
    assert adapter_id not in capsys.readouterr().out


def test_errors_are_one_line_and_exit_1(env: GradientServerURL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complete", "nope", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 404") and "Traceback" not in err


def test_missing_credentials_are_explained(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GRADIENT_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("GRADIENT_WORKSPACE_ID", raising=False)
    assert main(["models"]) == 1
    assert "GRADIENT_ACCESS_TOKEN" in capsys.readouterr().err


def test_bad_input_is_caught_before_sending(env: GradientServerURL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complete", "some-model", "hi", "--max-tokens", "512"]) == 1
    assert "max_generated_token_count" in capsys.readouterr().err
    assert not [c for c in env.calls if "/complete" in c.path]


def test_every_registered_subcommand_loads_and_parses() -> None:
    import argparse

    from gradient_async.cli import COMMANDS, _load

    for name, (target, _help) in COMMANDS.items():
        command = _load(target)
        parser = argparse.ArgumentParser(prog=f"gradient-async {name}")
        command.add_arguments(parser)
        assert callable(command.run), name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from gradient_async import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"gradient-async {__version__}\n"


def test_a_closed_stdout_ends_quietly(env: GradientServerURL) -> None:
    """`gradient-async models | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "gradient_async.cli", "models"],
        env={**os.environ, **env.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `head` exiting before the answer is printed
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
