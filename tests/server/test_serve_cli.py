"""Issue 11 §4: safe defaults of `gradient-async serve` (token sources, loopback, what is printed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from gradient_async.server import serving
from gradient_async.server.cli import TOKEN_ENV, add_arguments, build_settings, is_loopback, run


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--engine", "test", *argv])


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`serve` replaced by a recorder: run() goes as far as starting uvicorn, no further."""
    calls: list[dict[str, Any]] = []

    def fake_serve(app: Any, **kw: Any) -> None:
        calls.append(kw)
        app.state.gradient.store.close()

    monkeypatch.setattr(serving, "serve", fake_serve)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return calls


def test_beyond_loopback_without_a_token_refuses_to_start(
    tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parse("--host", "0.0.0.0", "--data-dir", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "reachable from other machines" in err and TOKEN_ENV in err and "--token-file" in err
    assert served == []


def test_generated_token_is_printed_on_loopback_only(
    tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parse("--data-dir", str(tmp_path))) == 0
    out = capsys.readouterr().out
    assert "GRADIENT_ACCESS_TOKEN=gsk-local-" in out
    assert served[0]["host"] == "127.0.0.1" and served[0]["shutdown_timeout"] == 30.0


def test_token_from_the_environment_binds_anywhere_and_is_never_printed(
    tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "env-secret-token")
    assert run(parse("--host", "0.0.0.0", "--data-dir", str(tmp_path), "--shutdown-timeout", "3")) == 0
    captured = capsys.readouterr()
    assert "env-secret-token" not in captured.out + captured.err and "<your token>" in captured.out
    assert served[0]["host"] == "0.0.0.0" and served[0]["shutdown_timeout"] == 3.0


def test_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    secret = tmp_path / "token"
    secret.write_text("file-token\n", encoding="utf-8")
    settings, generated = build_settings(parse("--host", "::", "--token-file", str(secret), "--data-dir", "d"))
    assert generated is None and settings.credentials == {"file-token": {"local-workspace"}}
    with pytest.raises(ValueError, match="--token-file"):
        build_settings(parse("--token-file", str(tmp_path / "missing")))
    secret.write_text("two tokens", encoding="utf-8")
    with pytest.raises(ValueError, match="one token"):
        build_settings(parse("--token-file", str(secret)))


def test_token_flag_works_but_warns_about_ps(
    tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parse("--token", "flag-token", "--data-dir", str(tmp_path))) == 0
    captured = capsys.readouterr()
    assert "flag-token" not in captured.out and "--token shows in ps" in captured.err


def test_config_file_counts_as_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = tmp_path / "server.json"
    config.write_text('{"credentials": [{"token": "c", "workspaces": ["w"]}]}', encoding="utf-8")
    settings, generated = build_settings(parse("--host", "0.0.0.0", "--config", str(config)))
    assert generated is None and settings.credentials == {"c": {"w"}}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
