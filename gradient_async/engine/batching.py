"""Dynamic batching: concurrent completions arriving within a few milliseconds
are handed to the engine as one batch.

Example::

    batcher = DynamicBatcher(engine, max_batch_size=32, max_wait_s=0.005)
    result = await batcher.generate(GenerationRequest(model_slug="smollm2-135m", prompt="Hi"))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from gradient_async.engine.base import BatchGenerator, EngineError, GenerationRequest, GenerationResult

__all__ = ["DynamicBatcher"]


@dataclass
class _Slot:
    request: GenerationRequest
    wake: anyio.Event = field(default_factory=anyio.Event)  # set when finished or made leader
    finished: bool = False
    leader: bool = False
    result: GenerationResult | None = None
    error: BaseException | None = None


class DynamicBatcher:
    """Groups concurrent `generate` calls into engine batches of at most `max_batch_size`.

    The first caller to find no batch running becomes the leader: it waits up to
    `max_wait_s` for company and runs batches (shielded, so a cancelled caller
    never strands the others) until its own request is answered, then hands the
    lead to the oldest queued caller, so no caller waits longer than the queue
    ahead of it. An `EngineError` in a multi-request batch is retried request by
    request, so one bad request fails only itself. A caller cancelled before
    its request joins a batch is dropped from the queue.
    """

    def __init__(self, engine: BatchGenerator, *, max_batch_size: int = 32, max_wait_s: float = 0.005) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: list[_Slot] = []
        self._leader_active = False
        self.batches_run = 0
        self.largest_batch = 0

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        slot = _Slot(request)
        self._queue.append(slot)
        if not self._leader_active:
            self._leader_active = True
            slot.leader = True
        else:
            try:
                await slot.wake.wait()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    if slot.leader and not slot.finished:
                        await self._lead(slot)  # promoted just as we were cancelled: pass it on
                    elif slot in self._queue:
                        self._queue.remove(slot)
                raise
        if not slot.finished:
            await self._lead(slot)
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    async def _lead(self, own: _Slot) -> None:
        with anyio.CancelScope(shield=True):
            try:
                while self._queue and not own.finished:
                    if len(self._queue) < self.max_batch_size and self.max_wait_s > 0:
                        await anyio.sleep(self.max_wait_s)
                    batch = self._queue[: self.max_batch_size]
                    del self._queue[: self.max_batch_size]
                    await self._run(batch)
            finally:
                if self._queue:
                    successor = self._queue[0]
                    successor.leader = True
                    successor.wake.set()
                else:
                    self._leader_active = False

    async def _run(self, batch: list[_Slot]) -> None:
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = await self.engine.generate([s.request for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} requests")
            for s, r in zip(batch, results, strict=True):
                s.result = r
        except EngineError as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for s in batch:
                    await self._run([s])
                return
        except Exception as exc:
            for s in batch:
                s.error = exc
        for s in batch:
            s.finished = True
            s.wake.set()
