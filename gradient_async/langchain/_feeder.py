"""Route the single-prompt calls of one `abatch` through one batch-engine stream.

LangChain traces every prompt of a batch as its own run, so `GradientLLM.abatch` invokes the
model once per prompt. To still get the batch engine (its concurrency window, at least five
retries per item, the shared slow-down on 429), those calls submit their prompt to an
`EngineFeeder`: one `client.completions.stream_batch` reading prompts from a memory stream
and handing each result back to the call that is waiting for it.

Example::

    async with engine_feeder(client, model_id, params={}, max_concurrency=16) as feeder:
        completion = await feeder.submit("Hello")
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from gradient_async._client import AsyncGradient
from gradient_async._errors import GradientError
from gradient_async._retry import RetryPolicy
from gradient_async.batch import BatchStream
from gradient_async.resources.completions import build_complete_body
from gradient_async.types.completions import Completion

__all__ = ["CURRENT_FEEDER", "EngineFeeder", "engine_feeder"]

CURRENT_FEEDER: contextvars.ContextVar[EngineFeeder | None] = contextvars.ContextVar(
    "gradient_async_langchain_feeder", default=None
)
"""Set by `abatch` for its workers; `_agenerate` submits through it when set."""


@dataclass
class _Slot:
    done: anyio.Event = field(default_factory=anyio.Event)
    value: Completion | None = None
    error: BaseException | None = None


class EngineFeeder:
    """Hands prompts to a running batch stream and results back to their callers."""

    def __init__(
        self, send: MemoryObjectSendStream[dict[str, Any]], params: Mapping[str, Any], owner: object = None
    ) -> None:
        self.owner = owner
        """Who opened it: only that object's calls should submit here."""
        self._send = send
        self._params = dict(params)
        self._slots: dict[int, _Slot] = {}
        self._next = 0
        self._broken: BaseException | None = None
        self.aborted = False

    def abort(self) -> None:
        """Cancel whatever is in flight when the `engine_feeder` block ends (instead of finishing it)."""
        self.aborted = True

    async def submit(self, prompt: str) -> Completion:
        """Complete one prompt through the engine; raises its typed error if it fails for good."""
        if self._broken is not None:
            raise self._broken
        build_complete_body(prompt, self._params)  # a bad prompt fails here, alone, not the whole stream
        key = self._next
        self._next += 1
        slot = self._slots[key] = _Slot()
        try:
            await self._send.send({"id": key, "query": prompt})
            await slot.done.wait()
        finally:
            self._slots.pop(key, None)
        if slot.error is not None:
            raise slot.error
        assert slot.value is not None
        return slot.value

    async def pump(self, stream: BatchStream[Completion]) -> None:
        """Deliver every finished item; if the stream itself dies, fail every waiter with its error."""
        try:
            async with stream:
                async for item in stream:
                    slot = self._slots.get(item.id)
                    if slot is not None:
                        slot.value, slot.error = item.value, item.error
                        slot.done.set()
        except Exception as exc:
            self._broken = exc if isinstance(exc, GradientError) else GradientError(f"batch engine failed: {exc!r}")
            self._broken.__cause__ = exc
            for slot in list(self._slots.values()):
                slot.error = self._broken
                slot.done.set()


@asynccontextmanager
async def engine_feeder(
    client: AsyncGradient,
    model_id: str,
    *,
    params: Mapping[str, Any],
    max_concurrency: int,
    retry: RetryPolicy | None = None,
    owner: object = None,
) -> AsyncIterator[EngineFeeder]:
    """Run one batch stream for the duration of the block. Leaving the block normally lets
    in-flight items finish; after `feeder.abort()`, or when leaving by an error or cancellation,
    they are cancelled at once. (Raise after the block, not inside it: the task group would
    wrap the error in an ExceptionGroup.)"""
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](max_buffer_size=max_concurrency)
    feeder = EngineFeeder(send, params, owner)
    stream = client.completions.stream_batch(model_id, receive, max_concurrency=max_concurrency, retry=retry, **params)
    with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feeder.pump, stream)
            clean = False
            try:
                yield feeder
                clean = True
            finally:
                if not clean or feeder.aborted:
                    tg.cancel_scope.cancel()
                send.close()
