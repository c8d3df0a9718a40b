"""What one running server holds: settings, catalogue, engine, locks and the call log.

Example::

    state = ServerState.build(settings)          # opens SQLite, starts the engine
    target = await state.resolve(model_id, workspace="ws")
    await state.aclose()
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

import anyio

from gradient_async._crashpoints import crash_point
from gradient_async.engine.base import AdapterSpec, Engine
from gradient_async.engine.registry import create_engine
from gradient_async.server.admission import Admission
from gradient_async.server.errors import ApiError
from gradient_async.server.faults import FaultInjector
from gradient_async.server.metrics import ServerMetrics
from gradient_async.server.settings import ServerSettings
from gradient_async.server.store import AdapterRecord, BaseModelRecord, Store

__all__ = ["CallRecord", "ModelTarget", "ServerState", "make_engine"]

logger = logging.getLogger("gradient_async.server")


@dataclass(frozen=True)
class CallRecord:
    """One request the server answered: method, path (no query), status, workspace header."""

    method: str
    path: str
    status: int
    workspace: str | None = None


@dataclass(frozen=True)
class ModelTarget:
    """What a model id resolved to: a base model, or an adapter (with its base model)."""

    base: BaseModelRecord
    adapter: AdapterRecord | None = None


def make_engine(settings: ServerSettings) -> Engine:
    """The engine `settings.engine` names (from the registry), files under `data_dir/engine`.

    Engines import their packages only when asked for, so the test engine needs no ML packages.
    Raises `EngineUnavailable` (a RuntimeError) saying what to install.
    """
    return create_engine(settings.engine, settings.engine_options())


class ServerState:
    """Shared by every request of one app. Build it with `ServerState.build(settings)`."""

    def __init__(self, settings: ServerSettings, store: Store, engine: Engine) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.base_models = store.sync_base_models(engine.base_models)
        self._by_id = {b.id: b for b in self.base_models}
        self.injector = FaultInjector(settings.faults)
        self.admission = Admission(lambda: self.settings.limits)
        self.calls: list[CallRecord] = []
        self.requests_in_flight = 0  # HTTP requests being answered (the call-log middleware counts them)
        self.metrics = ServerMetrics()  # Prometheus instruments of this app (server/metrics.py)
        self._locks: dict[str, anyio.Lock] = {}
        self.closed = False
        self.warm_up_error: str | None = None

    @classmethod
    def build(cls, settings: ServerSettings, engine: Engine | None = None) -> ServerState:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.data_dir / "gradient.sqlite3")
        return cls(settings, store, engine if engine is not None else make_engine(settings))

    def base_model(self, model_id: str) -> BaseModelRecord | None:
        return self._by_id.get(model_id)

    async def resolve(self, model_id: str, *, workspace: str) -> ModelTarget:
        """The base model or adapter `model_id` names in `workspace`, or a 404 ApiError."""
        base = self._by_id.get(model_id)
        if base is not None:
            return ModelTarget(base)
        adapter = await self.store.get_adapter(model_id, workspace=workspace)
        if adapter is None:
            kind = "unknownBaseModel" if model_id.endswith("_base_ml_model") else "unknownModelAdapter"
            raise ApiError(
                404,
                f"no model {model_id[:64]!r} in workspace {workspace!r}; list the models with GET /models",
                type=kind,
            )
        return ModelTarget(self._by_id[adapter.base_model_id], adapter)

    async def create_adapter(self, record: AdapterRecord, spec: AdapterSpec) -> None:
        """Create the engine's adapter, then its catalogue row; if the row cannot be written the engine's
        adapter is removed again, so a failed create leaves nothing behind."""
        await self.engine.create_adapter(spec)
        crash_point("server.create_adapter.after_engine")
        try:
            await self.store.add_adapter(record)
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await self.engine.delete_adapter(spec.adapter_id)
                except Exception as exc:  # the original error matters more
                    logger.warning("could not undo the engine adapter %s: %s", spec.adapter_id, exc)
            raise

    async def touch_adapter(self, adapter_id: str) -> None:
        """Record a fine-tune's time in the catalogue. The engine already committed the new version, so
        a failed write (disk full) is logged and the answer stays a success: the fine-tune was applied."""
        try:
            await self.store.touch_adapter(adapter_id)
        except (OSError, sqlite3.Error, ApiError) as exc:
            logger.warning("could not record the update time of %s: %s", adapter_id, exc)

    def adapter_lock(self, adapter_id: str) -> anyio.Lock:
        """The lock that serializes fine-tunes (and deletion) of one adapter."""
        lock = self._locks.get(adapter_id)
        if lock is None:
            lock = self._locks[adapter_id] = anyio.Lock()
        return lock

    async def warm_up(self) -> None:
        """Load the engine now (the app's start-up runs this in the background). A failure is kept
        for `readiness()`; requests then report the engine's own error."""
        try:
            await self.engine.warm_up()
        except Exception as exc:
            self.warm_up_error = f"the engine failed to start: {exc}"

    def readiness(self) -> str | None:
        """None when the engine can serve; otherwise why not (for /health)."""
        return self.engine.readiness() or self.warm_up_error

    def reopen(self) -> None:
        """Ready to serve again after `aclose()` (each ASGI lifespan startup calls this)."""
        self.store.reopen()
        self.closed = False
        self.admission.closing = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.engine.aclose()
        finally:
            self.store.close()
