"""The catalogue: base models and adapters (with their workspace) in SQLite.

One `sqlite3` connection guarded by a lock; every call runs in a worker thread
(`anyio.to_thread`), so the event loop never waits on the disk.

Example::

    store = Store(data_dir / "gradient.sqlite3")
    await store.add_adapter(AdapterRecord(...))
    record = await store.get_adapter(adapter_id, workspace="ws")
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import anyio

from gradient_async.engine.base import BaseModelSpec
from gradient_async.server.errors import ApiError, disk_full

__all__ = ["AdapterRecord", "BaseModelRecord", "Store", "base_model_id", "new_adapter_id", "utc_now"]

T = TypeVar("T")

# Fixed namespace so a slug always maps to the same base model id, on every machine.
BASE_MODEL_NAMESPACE: Final = uuid.UUID("6f1c2a3e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS base_models (
    id TEXT PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    capabilities TEXT NOT NULL, position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS adapters (
    id TEXT PRIMARY KEY, workspace TEXT NOT NULL, name TEXT NOT NULL,
    base_model_id TEXT NOT NULL, base_model_slug TEXT NOT NULL,
    rank INTEGER, learning_rate REAL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS adapters_workspace ON adapters (workspace, created_at);
"""


def base_model_id(slug: str) -> str:
    """The id of the base model `slug`: a UUID5 of the slug plus `_base_ml_model` (50 characters)."""
    return f"{uuid.uuid5(BASE_MODEL_NAMESPACE, slug)}_base_ml_model"


def new_adapter_id() -> str:
    """A fresh adapter id: a UUID4 plus `_model_adapter` (50 characters)."""
    return f"{uuid.uuid4()}_model_adapter"


def utc_now() -> str:
    """Now as the API writes times: ISO-8601 with milliseconds and a Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class BaseModelRecord:
    id: str
    slug: str
    name: str
    capabilities: tuple[str, ...]

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "type": "baseModel",
            "capabilities": list(self.capabilities),
        }


@dataclass(frozen=True)
class AdapterRecord:
    id: str
    workspace: str
    name: str
    base_model_id: str
    base_model_slug: str
    rank: int | None
    learning_rate: float | None
    created_at: str
    updated_at: str

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "baseModelId": self.base_model_id,
            "latestUpdateTime": self.updated_at,
            "type": "modelAdapter",
        }


class Store:
    """SQLite catalogue of base models and adapters. Adapters belong to one workspace."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._db = self._connect()
        self.closed = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        return db

    def reopen(self) -> None:
        """Connect again after `close()` (an app can go through several lifespans)."""
        with self._lock:
            if self.closed:
                self._db = self._connect()
                self.closed = False

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        try:
            return await anyio.to_thread.run_sync(locked)
        except (sqlite3.OperationalError, OSError) as exc:
            if disk_full(exc):
                raise ApiError(
                    507,
                    "no space left in --data-dir: the catalogue was not changed; retry once there is space",
                    type="failed",
                ) from exc
            raise

    def sync_base_models(self, specs: Sequence[BaseModelSpec]) -> list[BaseModelRecord]:
        """Register the engine's base models (at start-up, before serving)."""
        records = [BaseModelRecord(base_model_id(s.slug), s.slug, s.name, tuple(s.capabilities)) for s in specs]
        with self._lock:
            self._db.execute("DELETE FROM base_models")
            self._db.executemany(
                "INSERT INTO base_models VALUES (?, ?, ?, ?, ?)",
                [(r.id, r.slug, r.name, ",".join(r.capabilities), i) for i, r in enumerate(records)],
            )
        return records

    async def add_adapter(self, record: AdapterRecord) -> None:
        row = (
            record.id,
            record.workspace,
            record.name,
            record.base_model_id,
            record.base_model_slug,
            record.rank,
            record.learning_rate,
            record.created_at,
            record.updated_at,
        )
        await self._run(lambda db: db.execute("INSERT INTO adapters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row))

    async def get_adapter(self, adapter_id: str, *, workspace: str) -> AdapterRecord | None:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT * FROM adapters WHERE id = ? AND workspace = ?", (adapter_id, workspace)
            ).fetchall()
        )
        return AdapterRecord(*rows[0]) if rows else None

    async def list_adapters(self, *, workspace: str) -> list[AdapterRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT * FROM adapters WHERE workspace = ? ORDER BY created_at, rowid", (workspace,)
            ).fetchall()
        )
        return [AdapterRecord(*row) for row in rows]

    async def touch_adapter(self, adapter_id: str) -> None:
        now = utc_now()
        await self._run(lambda db: db.execute("UPDATE adapters SET updated_at = ? WHERE id = ?", (now, adapter_id)))

    async def delete_adapter(self, adapter_id: str, *, workspace: str) -> bool:
        cursor = await self._run(
            lambda db: db.execute("DELETE FROM adapters WHERE id = ? AND workspace = ?", (adapter_id, workspace))
        )
        return cursor.rowcount > 0

    async def adapter_counts(self) -> dict[str, int]:
        """Adapters per workspace (for the `/metrics` gauge)."""
        rows = await self._run(
            lambda db: db.execute("SELECT workspace, COUNT(*) FROM adapters GROUP BY workspace").fetchall()
        )
        return {str(w): int(n) for w, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self.closed = True
