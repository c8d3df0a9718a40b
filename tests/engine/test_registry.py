"""The engine registry: one place for names, factories, availability and `auto`; `--model` checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import MappingProxyType

import pytest

from gradient_async.engine import BatchedEngine, Engine, GenerationRequest, registry
from gradient_async.engine.models import ModelSource, check_unique, parse_model_arg, slugify
from gradient_async.engine.registry import (
    ENGINES,
    EngineEntry,
    EngineOptions,
    EngineUnavailable,
    availability,
    create_engine,
    engine_choices,
    resolve_engine,
)


def test_choices_come_from_the_registry() -> None:
    assert engine_choices() == ("auto", *ENGINES)
    assert {"test", "local"} <= set(ENGINES)
    assert availability("test") is None


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, test, local"):
        resolve_engine("gpt")
    with pytest.raises(ValueError, match="got 'gpt'"):
        create_engine("gpt", EngineOptions(data_dir=Path(".")))


def _fake(name: str, reason: str | None, rank: int | None) -> EngineEntry:
    return EngineEntry(name, name, lambda o: create_engine("test", o), lambda options: reason, rank)


def test_auto_picks_the_best_available_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = {e.name: e for e in (_fake("a", None, 0), _fake("b", "install b", 2), _fake("c", None, None))}
    monkeypatch.setattr(registry, "ENGINES", MappingProxyType(entries))
    assert resolve_engine("auto") == ("a", "b: install b")
    entries["a"] = _fake("a", "install a", 0)
    monkeypatch.setattr(registry, "ENGINES", MappingProxyType(entries))
    with pytest.raises(EngineUnavailable, match="install b; a: install a"):
        resolve_engine("auto")
    with pytest.raises(EngineUnavailable, match="install b"):
        create_engine("b", EngineOptions(data_dir=Path(".")))


async def test_test_engine_is_batched_and_ready(tmp_path: Path) -> None:
    engine = create_engine("test", EngineOptions(data_dir=tmp_path, batch_max_size=4))
    assert isinstance(engine, BatchedEngine) and isinstance(engine, Engine)
    assert engine.batcher.max_batch_size == 4
    await engine.warm_up()
    assert engine.readiness() is None
    result = await engine.complete(GenerationRequest("gradient-test-model", "Hi"))
    assert result.text and engine.batcher.batches_run == 1
    await engine.aclose()


def test_test_engine_refuses_models(tmp_path: Path) -> None:
    source = ModelSource(tmp_path, "x", "x", "hf")
    with pytest.raises(EngineUnavailable, match="--model needs a real engine"):
        create_engine("test", EngineOptions(data_dir=tmp_path, models=(source,)))


def test_settings_accept_only_registered_engines(tmp_path: Path) -> None:
    from gradient_async.server.settings import ServerSettings

    with pytest.raises(ValueError, match="resolve 'auto' first"):
        ServerSettings(data_dir=tmp_path, engine="auto")
    settings = ServerSettings(data_dir=tmp_path, engine="test", batch_max_size=3)
    options = settings.engine_options()
    assert (options.data_dir, options.batch_max_size) == (tmp_path / "engine", 3)


# ------------------------------------------------------------------ --model


def hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"x")
    (path / "tokenizer.json").write_text("{}")
    return path


def test_model_arg_folder_and_name(tmp_path: Path) -> None:
    folder = hf_folder(tmp_path / "Tiny-Llama")
    source = parse_model_arg(str(folder))
    assert (source.kind, source.name, source.slug, source.path) == ("hf", "Tiny-Llama", "tiny-llama", folder)
    named = parse_model_arg(f"{folder}=My Llama 3 (1B)")
    assert (named.name, named.slug) == ("My Llama 3 (1B)", "my-llama-3-1b")
    assert slugify("  ..Odd//Name..  ") == "odd-name"


def test_model_arg_gguf(tmp_path: Path) -> None:
    good = tmp_path / "Small.Q8_0.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert parse_model_arg(str(good)).kind == "gguf"
    assert parse_model_arg(str(good)).slug == "small.q8_0"
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a GGUF file"):
        parse_model_arg(str(bad))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing", "no such file or folder"),
        ("no-config", "no config.json"),
        ("bad-config", "config.json is not valid JSON"),
        ("no-weights", r"no weights \(\*.safetensors"),
        ("unreadable-weights", "cannot read model.safetensors"),
        ("no-tokenizer", "no tokenizer"),
        ("plain-file", "expected a Hugging Face model folder or a .gguf file"),
    ],
)
def test_model_arg_errors_name_what_to_fix(tmp_path: Path, breakage: str, message: str) -> None:
    folder = hf_folder(tmp_path / "m")
    target = str(folder)
    if breakage == "missing":
        target = str(tmp_path / "nope")
    elif breakage == "no-config":
        (folder / "config.json").unlink()
    elif breakage == "bad-config":
        (folder / "config.json").write_text("{")
    elif breakage == "no-weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "unreadable-weights":  # a folder where the file should be: open() fails even for root
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors").mkdir()
    elif breakage == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif breakage == "plain-file":
        target = str(folder / "config.json")
    with pytest.raises(ValueError, match=message):
        parse_model_arg(target)


def test_model_slugs_must_be_unique(tmp_path: Path) -> None:
    a = parse_model_arg(str(hf_folder(tmp_path / "a" / "llama")))
    b = parse_model_arg(str(hf_folder(tmp_path / "b" / "llama")))
    with pytest.raises(ValueError, match="PATH=NAME"):
        check_unique([a, b])
    renamed = parse_model_arg(f"{b.path}=llama-b")
    assert [s.slug for s in check_unique([a, renamed])] == ["llama", "llama-b"]


def test_serve_model_flag_is_checked_at_start_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradient_async.server.cli import add_arguments, build_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--model", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "no such file or folder" in err
    folder = hf_folder(tmp_path / "llama")
    args = parser.parse_args(["--engine", "local", "--model", f"{folder}=Llama", "--data-dir", str(tmp_path)])
    settings, _ = build_settings(args)
    assert [m.slug for m in settings.models] == ["llama"]
    assert settings.engine_options().models == settings.models


def test_serve_refuses_model_with_the_test_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradient_async.cli import main

    folder = hf_folder(tmp_path / "llama")
    code = main(["serve", "--engine", "test", "--model", str(folder), "--data-dir", str(tmp_path / "d")])
    assert code == 2
    assert "--model needs a real engine" in capsys.readouterr().err


async def test_health_reports_readiness(tmp_path: Path) -> None:
    import httpx

    from gradient_async.server import ServerSettings, create_app

    app = create_app(ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
            body = (await http.get("/health")).json()
        assert body["ready"] is True and "notReady" not in body
    finally:
        await app.state.gradient.aclose()


def test_vllm_availability_says_what_to_build(tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="the vllm engine trains with the [local] extra", exc_type=ImportError)
    options = EngineOptions(data_dir=tmp_path, vllm_python=tmp_path / "missing" / "python")
    reason = availability("vllm", options)
    assert reason is not None and "make vllm-venv" in reason and "--vllm-url" in reason
    with pytest.raises(EngineUnavailable, match="make vllm-venv"):
        create_engine("vllm", options)
    assert availability("vllm", EngineOptions(data_dir=tmp_path, vllm_url="http://127.0.0.1:1")) is None


def test_vllm_flags_need_the_vllm_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradient_async.cli import main

    assert main(["serve", "--engine", "test", "--vllm-url", "http://x", "--data-dir", str(tmp_path)]) == 2
    assert "need --engine vllm" in capsys.readouterr().err
    missing = tmp_path / "no-python"
    assert main(["serve", "--engine", "vllm", "--vllm-python", str(missing), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "make vllm-venv" in err


async def test_batched_engine_passes_optional_hooks_through(tmp_path: Path) -> None:
    from gradient_async.engine.test_engine import TestEngine

    inner = TestEngine(tmp_path)
    engine = BatchedEngine(inner)
    assert engine.fine_tune_calls == 0  # an attribute only the inner engine has
    with pytest.raises(AttributeError):
        _ = engine.no_such_hook
