"""The sync bridge: run a coroutine to completion from plain (blocking) code.

LangChain calls `_generate` / `batch` / `embed_documents` from ordinary functions, from
worker threads of a running loop (`run_in_executor`, `anyio.to_thread`), and sometimes
straight from inside a coroutine. `asyncio.run` per call would build a loop and a
connection pool each time and fails inside a running loop. Instead, each bridge owns one
event loop in one daemon thread, started on first use and stopped by `close()` (or when
the bridge is garbage collected), so connections are pooled across sync calls and
nothing leaks.

Example::

    bridge = LoopThread(name="my-llm")
    print(bridge.run(lambda: asyncio.sleep(0.1, result="done")))
    bridge.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["LoopThread", "run_on_loop"]

T = TypeVar("T")


def run_on_loop(loop: asyncio.AbstractEventLoop, factory: Callable[[], Awaitable[T]]) -> T:
    """Run `factory()` on `loop` (running in another thread) and block until it finishes.

    The caller's context variables (LangChain's tracing parents) travel with the call. If the
    caller is interrupted (KeyboardInterrupt), the task is cancelled on its loop before re-raising.
    """
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    holder: list[asyncio.Task[T]] = []

    def start() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            task: asyncio.Task[T] = loop.create_task(_as_coroutine(factory), context=context)
        except BaseException as exc:  # the factory itself failed
            done.set_exception(exc)
            return
        holder.append(task)
        task.add_done_callback(lambda t: _transfer(t, done))

    loop.call_soon_threadsafe(start)
    try:
        return done.result()
    except BaseException:
        if not done.done():
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in holder])
            concurrent.futures.wait([done], timeout=5.0)
        raise


async def _as_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def _transfer(task: asyncio.Task[T], done: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        done.set_exception(concurrent.futures.CancelledError())
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())


class LoopThread:
    """One private event loop in one daemon thread, started lazily; `close()` stops it.

    Stopping runs the loop's `shutdown_asyncgens()`, which is where clients living on the
    loop close their connection pools (see `_runtime.py`).
    """

    def __init__(self, *, name: str = "gradient-async-sync") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop, or None before the first call / after `close()`."""
        return self._loop

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.get_ident() == self._thread.ident

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=_serve, args=(loop, ready), name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
                self._finalizer = weakref.finalize(self, _stop, loop, thread)
            return self._loop

    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run `factory()` on the private loop and return its result (blocking)."""
        if self.in_loop_thread():
            raise RuntimeError(
                "a blocking call was made from inside gradient_async's own sync-bridge loop "
                "(e.g. a callback handler calling llm.invoke); use the async method (ainvoke) there"
            )
        return run_on_loop(self._ensure_started(), factory)

    def close(self) -> None:
        """Stop the loop (closing what lives on it) and join its thread. Safe to call twice."""
        with self._lock:
            loop, thread, finalizer = self._loop, self._thread, self._finalizer
            self._loop = self._thread = self._finalizer = None
        if finalizer is not None:
            finalizer.detach()
        if loop is not None and thread is not None:
            _stop(loop, thread)


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_closed():
        return
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # closed in the meantime
        return
    if threading.get_ident() != thread.ident:
        thread.join(timeout=10.0)
