"""The test kit imports without FastAPI; `gradient-async serve` settings; the demo."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradient_async.server.cli import add_arguments, build_settings
from gradient_async.server.settings import load_credentials


def test_testing_module_imports_without_fastapi() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "import gradient_async.testing as t; print(t.TEST_WORKSPACE)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "test-workspace"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_settings(tmp_path: Path) -> None:
    settings, generated = build_settings(parse("--engine", "test", "--data-dir", str(tmp_path)))
    assert generated is not None and settings.credentials == {generated: {"local-workspace"}}
    assert (settings.engine, settings.data_dir) == ("test", tmp_path)
    settings, generated = build_settings(
        parse("--engine", "test", "--token", "T", "--workspace", "W", "--fail-rate", "0.25", "--rate-limit-rps", "5")
    )
    assert generated is None and settings.credentials == {"T": {"W"}}
    assert (settings.faults.fail_rate, settings.faults.rate_limit_rps) == (0.25, 5)
    with pytest.raises(ValueError, match="fail_rate"):
        build_settings(parse("--engine", "test", "--fail-rate", "3"))


def test_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"credentials": [{"token": "a", "workspaces": ["w1", "w2"]}]}))
    assert load_credentials(path) == {"a": {"w1", "w2"}}
    settings, generated = build_settings(parse("--engine", "test", "--config", str(path)))
    assert generated is None and settings.credentials == {"a": {"w1", "w2"}}
    path.write_text(json.dumps({"credentials": [{"token": "", "workspaces": ["w"]}]}))
    with pytest.raises(ValueError, match=r"credentials\[0\].token"):
        load_credentials(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_credentials(tmp_path / "missing.json")


def test_demo_runs_the_seed_story(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradient_async.cli import main

    code = main(["demo", "--engine", "test", "--prompts", "20", "--data-dir", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "after fine-tuning" in out and "'Dallas Cowboys!'" in out
    assert "trainable tokens=22" in out
    assert "batch: 20/20 ok" in out
    assert "demo-token" not in out


def test_demo_no_progress_draws_no_bar_at_all(tmp_path: Path) -> None:
    """Libraries draw bars of their own (transformers converts the GGUF behind one): none may show,
    and tqdm works again once the demo returns."""
    code = (
        "import io, sys\n"
        "import gradient_async.demo as demo\n"
        "from tqdm.auto import tqdm\n"
        "built = demo._build_app\n"
        "def build_with_a_library_bar(*args):\n"
        "    bar = tqdm(range(3), desc='a library bar', file=sys.stderr)\n"
        "    list(bar); bar.close()\n"
        "    return built(*args)\n"
        "demo._build_app = build_with_a_library_bar\n"
        "from gradient_async.cli import main\n"
        f"rc = main(['demo', '--engine', 'test', '--prompts', '3', '--data-dir', {str(tmp_path)!r}, '--no-progress'])\n"
        "buf = io.StringIO()\n"
        "after = tqdm(range(3), file=buf)\n"
        "list(after); after.close()\n"
        "print('RC', rc, 'AFTER', bool(buf.getvalue()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "RC 0 AFTER True" in out.stdout, out.stdout + out.stderr
    assert "a library bar" not in out.stderr and "it/s" not in out.stderr, out.stderr
