"""The local engine's scheduler: one compute slot, handed out one unit of work at a time.

A unit is a whole generation batch, an embedding call, or one training
micro-batch; a fine-tune is many units. When the slot frees up, the next unit is:

* a waiting inference unit, if the last unit was training (or nothing trains);
* otherwise a training unit, of the adapter whose training was served least
  recently (round robin between concurrent fine-tunes);
* FIFO within inference.

So a completion waits for at most one training micro-batch per fine-tune in
progress, and a stream of completions cannot starve training (they alternate).
`claim(key)` serializes whole jobs on one adapter (two fine-tunes, or a fine-tune
and a delete, never interleave); `training()` admits at most `max_training` fine-tunes
at once (each holds a copy of its adapter, gradients and Adam state), FIFO.
`history` records ("queued"|"granted", kind, key) events for tests and metrics;
`on_event` (if set) sees each one as it happens, on the event loop's thread.

Wake-ups use events of the caller's event loop: use one engine from one event
loop at a time (tests may run several loops one after the other).

Example::

    sched = FairScheduler()
    result = await sched.run("infer", None, lambda: model_work())
    async with sched.claim("adapter-1"):
        for _ in range(steps):
            await sched.run("train", "adapter-1", one_micro_batch)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import anyio

__all__ = ["Event", "FairScheduler", "Kind"]

T = TypeVar("T")
Kind = Literal["infer", "train"]
Event = tuple[Literal["queued", "granted"], Kind, str | None]


@dataclass(eq=False)
class _Waiter:
    kind: Kind
    key: str | None
    event: anyio.Event = field(default_factory=anyio.Event)
    granted: bool = False


class FairScheduler:
    """Grants one compute slot at a time (see the module docstring for the order)."""

    def __init__(self, *, max_training: int = 4, history: int = 10_000) -> None:
        if max_training < 1:
            raise ValueError("max_training must be >= 1")
        self.max_training = max_training
        self._training = 0
        self._training_waiters: list[anyio.Event] = []
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: list[_Waiter] = []
        self._last_kind: Kind | None = None
        self._turn = 0
        self._last_turn: dict[str | None, int] = {}
        self._claims: dict[str, _Waiter | None] = {}
        self._claim_waiters: dict[str, list[anyio.Event]] = {}
        self.history: deque[Event] = deque(maxlen=history)
        self.on_event: Callable[[Event], None] | None = None

    async def run(self, kind: Kind, key: str | None, fn: Callable[[], T]) -> T:
        """Run `fn` in a worker thread when the slot is this unit's turn."""
        await self._acquire(kind, key)
        try:
            return await anyio.to_thread.run_sync(fn)  # not abandoned on cancel: the slot stays held
        finally:
            self._release()

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[None]:
        """Exclusive use of one adapter for a whole job (FIFO between claimants)."""
        while key in self._claims:
            event = anyio.Event()
            self._claim_waiters.setdefault(key, []).append(event)
            try:
                await event.wait()
            finally:
                waiters = self._claim_waiters.get(key, [])
                if event in waiters:
                    waiters.remove(event)
        self._claims[key] = None
        try:
            yield
        finally:
            del self._claims[key]
            waiters = self._claim_waiters.pop(key, [])
            if waiters:
                waiters[0].set()
                self._claim_waiters[key] = waiters[1:]

    @asynccontextmanager
    async def training(self) -> AsyncIterator[None]:
        """One of the `max_training` places for a fine-tune in progress (FIFO)."""
        if self._training >= self.max_training or self._training_waiters:
            event = anyio.Event()
            self._training_waiters.append(event)
            try:
                await event.wait()  # the leaver handed its place to us
            except BaseException:
                if event in self._training_waiters:
                    self._training_waiters.remove(event)
                else:
                    self._leave_training()  # handed over just as we were cancelled: pass it on
                raise
        else:
            self._training += 1
        try:
            yield
        finally:
            self._leave_training()

    def _leave_training(self) -> None:
        if self._training_waiters:
            self._training_waiters.pop(0).set()  # the place passes on; the count stays
        else:
            self._training -= 1

    # ---------------------------------------------------------------- the slot
    async def _acquire(self, kind: Kind, key: str | None) -> None:
        waiter = _Waiter(kind, key)
        with self._lock:
            self._note(("queued", kind, key))
            if not self._busy and not self._waiting:
                self._grant(waiter)
                return
            self._waiting.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiting.remove(waiter)
            if granted:  # the slot came just as we were cancelled: pass it on
                self._release()
            raise

    def _grant(self, waiter: _Waiter) -> None:
        """Give the slot to `waiter` (lock held)."""
        self._busy = True
        waiter.granted = True
        self._last_kind = waiter.kind
        self._turn += 1
        self._last_turn[waiter.key] = self._turn
        self._note(("granted", waiter.kind, waiter.key))

    def _note(self, event: Event) -> None:
        self.history.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _release(self) -> None:
        with self._lock:
            self._busy = False
            nxt = self._pick()
            if nxt is not None:
                self._waiting.remove(nxt)
                self._grant(nxt)
        if nxt is not None:
            nxt.event.set()

    def _pick(self) -> _Waiter | None:
        infer = [w for w in self._waiting if w.kind == "infer"]
        train = [w for w in self._waiting if w.kind == "train"]
        if infer and (not train or self._last_kind == "train"):
            return infer[0]
        if train:
            return min(train, key=lambda w: self._last_turn.get(w.key, 0))
        return None
