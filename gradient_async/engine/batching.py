"""Dynamic batching: concurrent completions arriving within a few milliseconds
are handed to the engine as one batch.

Example::

    batcher = DynamicBatcher(engine, max_batch_size=32, max_wait_s=0.005)
    result = await batcher.generate(GenerationRequest(model_slug="smollm2-135m", prompt="Hi"))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from gradient_async.engine.base import Engine, EngineError, GenerationRequest, GenerationResult

__all__ = ["DynamicBatcher"]


@dataclass
class _Slot:
    request: GenerationRequest
    done: anyio.Event = field(default_factory=anyio.Event)
    result: GenerationResult | None = None
    error: BaseException | None = None


class DynamicBatcher:
    """Groups concurrent `generate` calls into engine batches of at most `max_batch_size`.

    The first caller to find no batch running becomes the leader: it waits up to
    `max_wait_s` for company, runs the batch (shielded, so a cancelled caller
    never strands the others), and keeps draining while work is queued. An
    `EngineError` in a multi-request batch is retried request by request, so
    one bad request fails only itself.
    """

    def __init__(self, engine: Engine, *, max_batch_size: int = 32, max_wait_s: float = 0.005) -> None:
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
            with anyio.CancelScope(shield=True):
                try:
                    await self._lead()
                finally:
                    self._leader_active = False
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    async def _lead(self) -> None:
        while self._queue:
            if len(self._queue) < self.max_batch_size and self.max_wait_s > 0:
                await anyio.sleep(self.max_wait_s)
            batch = self._queue[: self.max_batch_size]
            del self._queue[: self.max_batch_size]
            await self._run(batch)

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
            s.done.set()
