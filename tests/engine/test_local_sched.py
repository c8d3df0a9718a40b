"""The local engine's fair scheduler with stand-in units (no model): who gets the slot next."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import anyio
import pytest

from gradient_async.engine._local_sched import FairScheduler

pytestmark = pytest.mark.asyncio


async def until(sched: FairScheduler, condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds, checked at every scheduler event."""
    reached = anyio.Event()
    sched.on_event = lambda _: reached.set() if condition() else None
    if not condition():
        with anyio.fail_after(30):
            await reached.wait()
    sched.on_event = None


def grants(sched: FairScheduler, kind: str, key: str | None) -> int:
    return sum(1 for event in sched.history if event == ("granted", kind, key))


async def test_a_completion_waits_for_at_most_one_training_unit() -> None:
    sched = FairScheduler()
    order: list[str] = []
    gate = threading.Event()

    async def train() -> None:
        async with sched.claim("A"):
            for i in range(5):

                def unit(i: int = i) -> None:
                    if i == 1:
                        gate.wait(30)  # hold unit 1 until the completion is queued
                    order.append(f"A{i}")

                await sched.run("train", "A", unit)

    async with anyio.create_task_group() as tg:
        tg.start_soon(train)
        await until(sched, lambda: grants(sched, "train", "A") == 2)
        tg.start_soon(sched.run, "infer", None, lambda: order.append("I"))
        await until(sched, lambda: ("queued", "infer", None) in sched.history)
        gate.set()
    assert order == ["A0", "A1", "I", "A2", "A3", "A4"]


async def test_fine_tunes_of_two_adapters_take_turns() -> None:
    sched = FairScheduler()
    order: list[str] = []

    async def train(key: str) -> None:
        async with sched.claim(key):
            for i in range(3):
                await sched.run("train", key, lambda i=i: order.append(f"{key}{i}"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(train, "A")
        tg.start_soon(train, "B")
    assert order == ["A0", "B0", "A1", "B1", "A2", "B2"]


async def test_a_stream_of_completions_cannot_starve_training() -> None:
    sched = FairScheduler()
    order: list[str] = []
    stop = False

    async def completions() -> None:
        while not stop:
            await sched.run("infer", None, lambda: order.append("I"))

    async def train() -> None:
        nonlocal stop
        for i in range(3):
            await sched.run("train", "A", lambda i=i: order.append(f"A{i}"))
        stop = True

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(completions)
        await until(sched, lambda: grants(sched, "infer", None) >= 2)
        tg.start_soon(train)
    trained = [i for i, x in enumerate(order) if x.startswith("A")]
    assert len(trained) == 3
    assert all(order[i + 1] == "I" for i in trained[:-1])  # one completion unit between training units
    assert all(b - a == 2 for a, b in itertools.pairwise(trained))


async def test_claims_serialize_jobs_on_one_adapter() -> None:
    sched = FairScheduler()
    order: list[str] = []

    async def job(name: str) -> None:
        async with sched.claim("A"):
            for i in range(2):
                await sched.run("train", "A", lambda i=i: order.append(f"{name}{i}"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(job, "x")
        await until(sched, lambda: grants(sched, "train", "A") >= 1)
        tg.start_soon(job, "y")
    assert order == ["x0", "x1", "y0", "y1"]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    sched = FairScheduler()
    gate = threading.Event()
    ran: list[str] = []

    async def hold() -> None:
        await sched.run("train", "A", lambda: (gate.wait(30), ran.append("hold")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await until(sched, lambda: grants(sched, "train", "A") == 1)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await sched.run("infer", None, lambda: ran.append("cancelled"))
        gate.set()
    await sched.run("infer", None, lambda: ran.append("after"))
    assert ran == ["hold", "after"]


async def test_at_most_max_training_fine_tunes_at_once() -> None:
    sched = FairScheduler(max_training=2)
    order: list[str] = []

    async def train(key: str) -> None:
        async with sched.claim(key), sched.training():
            for i in range(2):
                await sched.run("train", key, lambda i=i: order.append(f"{key}{i}"))

    async with anyio.create_task_group() as tg:
        for key in "ABC":
            tg.start_soon(train, key)
    assert order == ["A0", "B0", "A1", "B1", "C0", "C1"]  # C waits for a place, then runs
    with pytest.raises(ValueError, match="max_training"):
        FairScheduler(max_training=0)
