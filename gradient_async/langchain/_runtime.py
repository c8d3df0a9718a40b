"""Which `AsyncGradient` a LangChain object talks through, on which event loop.

An `AsyncGradient` (its aiohttp pool, its limiter) belongs to the event loop it is used on.
A LangChain object is used from async code (`ainvoke`, `abatch`) and from sync code
(`invoke`, `batch`, `embed_documents`), so a `ClientRuntime` keeps:

- for async calls, one long-lived client per running loop (normally exactly one), closed
  when that loop shuts down (`asyncio.run` / pytest's runner call `shutdown_asyncgens`,
  which runs our closer) or by `await aclose()`;
- for sync calls, one private loop thread (`LoopThread`) with its own client, closed by `close()`.

A client you pass in (`client=`) is never closed by us. Sync calls then run on the loop it
lives on (when that loop runs in another thread) or on the private loop.

Example::

    runtime = ClientRuntime(ClientSettings(access_token="...", workspace_id="..."))
    client = await runtime.client()              # inside a coroutine
    out = runtime.run_sync(lambda: some_coroutine_function())  # from blocking code
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gradient_async._client import AsyncGradient
from gradient_async._config import NOT_GIVEN
from gradient_async.langchain._sync import LoopThread, run_on_loop

__all__ = ["ClientRuntime", "ClientSettings"]

T = TypeVar("T")


@dataclass(frozen=True)
class ClientSettings:
    """What a LangChain object needs to build its own client (the token is only read here)."""

    access_token: str
    workspace_id: str
    base_url: str
    max_retries: int = 2
    max_concurrency: int | None = None
    timeout: float | None = None

    def __repr__(self) -> str:
        return f"ClientSettings(base_url={self.base_url!r}, workspace_id={self.workspace_id!r}, access_token='***')"

    def build(self) -> AsyncGradient:
        return AsyncGradient(
            access_token=self.access_token,
            workspace_id=self.workspace_id,
            base_url=self.base_url,
            max_retries=self.max_retries,
            max_concurrency=self.max_concurrency,
            timeout=NOT_GIVEN if self.timeout is None else self.timeout,
        )


@dataclass
class _Entry:
    loop: asyncio.AbstractEventLoop
    client: AsyncGradient
    closer: AsyncGenerator[None, None]


async def _close_at_loop_shutdown(client: AsyncGradient) -> AsyncGenerator[None, None]:
    # An async generator the loop tracks: `loop.shutdown_asyncgens()` resumes it into `finally`.
    try:
        yield
    finally:
        await client.aclose()


class ClientRuntime:
    """Clients for one LangChain object: one per event loop for async calls, a private loop for sync ones."""

    def __init__(self, settings: ClientSettings | None, shared: AsyncGradient | None = None) -> None:
        if (settings is None) == (shared is None):
            raise ValueError("ClientRuntime needs exactly one of settings or shared")
        self._settings = settings
        self._shared = shared
        self._shared_home: asyncio.AbstractEventLoop | None = _running_loop() if shared is not None else None
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._bridge = LoopThread(name="gradient-async-langchain")

    @property
    def bridge(self) -> LoopThread:
        return self._bridge

    @property
    def shared(self) -> AsyncGradient | None:
        return self._shared

    def open_clients(self) -> int:
        """How many clients this runtime built and has not closed (for leak checks)."""
        with self._lock:
            return sum(1 for e in self._entries.values() if not e.client.is_closed and not e.loop.is_closed())

    async def client(self) -> AsyncGradient:
        """The client for the running loop (built on first use there)."""
        loop = asyncio.get_running_loop()
        if self._shared is not None:
            if self._shared_home is None or self._shared_home.is_closed():
                self._shared_home = loop
            return self._shared
        assert self._settings is not None
        with self._lock:
            entry = self._entries.get(id(loop))
            if entry is not None and entry.loop is loop and not entry.client.is_closed:
                return entry.client
            for key in [k for k, e in self._entries.items() if e.loop.is_closed() or e.client.is_closed]:
                del self._entries[key]
            client = self._settings.build()
            closer = _close_at_loop_shutdown(client)
            self._entries[id(loop)] = _Entry(loop, client, closer)
        # First step of the closer: the loop now tracks it and closes the client at shutdown.
        await closer.__anext__()
        return client

    def run_sync(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `factory()` from blocking code and return its result; inside it, `await client()`
        gives the client of the loop it runs on.

        Raises RuntimeError (telling you to use the async method) when called on the very
        loop that owns a shared client: blocking there would deadlock.
        """
        if self._shared is not None:
            home = self._shared_home
            if home is not None and home.is_running() and not home.is_closed():
                if _running_loop() is home:
                    raise RuntimeError(
                        "a blocking call (invoke/batch/embed_documents) was made on the event loop that owns the "
                        "AsyncGradient passed as client=; use the async method (ainvoke/abatch/aembed_documents)"
                    )
                return run_on_loop(home, factory)
        return self._bridge.run(factory)

    async def aclose(self) -> None:
        """Close the client this runtime built for the running loop (a shared client is left open)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.pop(id(loop), None)
        if entry is not None and entry.loop is loop:
            await entry.closer.aclose()
            await entry.client.aclose()

    def close(self) -> None:
        """Stop the private sync loop and close its client. Async clients close with their loops."""
        self._bridge.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
