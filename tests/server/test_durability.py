"""Issue 11 §3 (server, catalogue, test engine): a full disk is a 507 that changes nothing, temp files
never outlive a failure or a restart, a server that cannot start says so in one line.

The disk fills up through the test engine's one write seam (`_write_file`) and a catalogue connection
that answers like a full SQLite database; kill -9 tests are in test_kill.py."""

from __future__ import annotations

import argparse
import errno
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from gradient_async.demo import ANSWER, QUESTION
from gradient_async.engine import test_engine
from gradient_async.server import ServerSettings, create_app
from gradient_async.server.cli import add_arguments, run
from gradient_async.testing import TEST_TOKEN, TEST_WORKSPACE, GradientServer

HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}", "x-gradient-workspace-id": TEST_WORKSPACE}


def http(srv: GradientServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=srv.app), base_url="http://local", headers=HEADERS)


def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every engine write gets half its bytes out, then ENOSPC (like a full tmpfs)."""

    def full(path: Path, text: str) -> None:
        path.write_text(text[: len(text) // 2], encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(test_engine, "_write_file", full)


def leftovers(srv: GradientServer) -> list[Path]:
    return sorted(srv.state.settings.data_dir.rglob("*.tmp"))


async def test_fine_tune_on_a_full_disk_is_507_and_changes_nothing(
    gradient_server: GradientServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = gradient_server
    async with http(srv) as client:
        aid = await client.post("/api/models", json={"model": {"baseModelId": srv.base_model_ids[-1], "name": "a"}})
        adapter = aid.json()["id"]
        before = (await client.post(f"/api/models/{adapter}/complete", json={"query": QUESTION})).json()
        fill_the_disk(monkeypatch)
        r = await client.post(f"/api/models/{adapter}/fine-tune", json={"samples": [{"inputs": QUESTION + ANSWER}]})
        assert r.status_code == 507 and "no space left in the data dir" in r.json()["message"]
        assert r.json()["type"] == "failed"
        # Memory was not changed: the answer is the untrained one (the old server served the trained one).
        after = (await client.post(f"/api/models/{adapter}/complete", json={"query": QUESTION})).json()
        assert after == before
        assert leftovers(srv) == []  # the half-written temp file is gone
        monkeypatch.undo()  # space again: the same fine-tune now applies, once
        r = await client.post(f"/api/models/{adapter}/fine-tune", json={"samples": [{"inputs": QUESTION + ANSWER}]})
        assert r.status_code == 200
        tuned = (await client.post(f"/api/models/{adapter}/complete", json={"query": QUESTION})).json()
        assert tuned["generatedOutput"] == "Dallas Cowboys!"


async def test_create_on_a_full_disk_leaves_no_adapter_and_no_temp_file(
    gradient_server: GradientServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = gradient_server
    fill_the_disk(monkeypatch)
    async with http(srv) as client:
        r = await client.post("/api/models", json={"model": {"baseModelId": srv.base_model_ids[-1], "name": "a"}})
        assert r.status_code == 507
        assert (await client.get("/api/models")).json()["models"][-1]["type"] == "baseModel"
    assert leftovers(srv) == [] and list((srv.state.settings.data_dir / "engine" / "test").iterdir()) == []


class FullDatabase:
    """A catalogue connection that answers writes like SQLite on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def close(self) -> None:
        self._db.close()


async def test_catalogue_full_is_507_and_the_engine_adapter_is_undone(gradient_server: GradientServer) -> None:
    srv = gradient_server
    store: Any = srv.state.store
    store._db = FullDatabase(store._db)
    async with http(srv) as client:
        r = await client.post("/api/models", json={"model": {"baseModelId": srv.base_model_ids[-1], "name": "a"}})
        assert r.status_code == 507 and "no space left in --data-dir" in r.json()["message"]
    assert list((srv.state.settings.data_dir / "engine" / "test").iterdir()) == []


async def test_a_full_catalogue_after_the_engine_committed_still_reports_the_fine_tune(
    gradient_server: GradientServer,
) -> None:
    srv = gradient_server
    async with http(srv) as client:
        r = await client.post("/api/models", json={"model": {"baseModelId": srv.base_model_ids[-1], "name": "a"}})
        adapter = r.json()["id"]
        store: Any = srv.state.store
        store._db = FullDatabase(store._db)
        r = await client.post(f"/api/models/{adapter}/fine-tune", json={"samples": [{"inputs": QUESTION + ANSWER}]})
        # Applied by the engine: a 200, not an error a caller would retry (and train twice).
        assert r.status_code == 200 and r.json()["numberOfTrainableTokens"] == 22


def test_temp_files_are_removed_at_start_up(tmp_path: Path) -> None:
    engine_dir = tmp_path / "engine" / "test"
    engine_dir.mkdir(parents=True)
    (engine_dir / "x_model_adapter.json.tmp").write_text('{"half": ', encoding="utf-8")
    app = create_app(ServerSettings(data_dir=tmp_path, credentials={"t": {"w"}}))
    app.state.gradient.store.close()
    assert list(engine_dir.iterdir()) == []


def serve_args(data_dir: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--engine", "test", "--data-dir", str(data_dir), "--token", "t"])


def test_a_broken_catalogue_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gradient.sqlite3").write_bytes(b"this is not a database" * 100)
    assert run(serve_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot start: --data-dir")
    assert "gradient.sqlite3 cannot be opened" in err[0] and "Traceback" not in err[0]


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    assert run(serve_args(blocker)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot start: --data-dir")


def test_a_full_disk_at_start_up_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradient_async.server import state as state_module

    def full(path: Path) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(state_module, "Store", full)
    assert run(serve_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0]
