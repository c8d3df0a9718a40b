"""The batch engine: pulls jobs lazily, runs them on `max_concurrency` workers under the batch's
limits, retries in one place, and hands finished items to the consumer as they complete.

Memory is bounded by `window`: at most that many items are in flight or finished-but-not-yet
consumed, however long the input. Workers never raise: every outcome (value, typed error, or
an unexpected exception to re-raise) travels to the consumer over a memory stream, so the
task group is only ever cancelled from the consumer's own frame.

Workers, not a task per item: a worker takes the next job, runs its attempts and takes another, so
an item costs two stream hand-offs instead of a task. Workers start as needed (one per job while
every worker is busy, at most `max_concurrency` taking jobs). A worker about to wait before a retry
hands its place to a new worker first (its item keeps its own task, deadline scope and span while it
waits), so waits never lower the batch's concurrency; attempts are bounded by the batch's slots.

Retries: the client is called with `max_retries=0`; this loop retries, asking the batch's
`RetryPolicy.next_wait` (the same decision the client's own loop uses). A 429 pauses the whole
client (its limiter, see `_limiter.py`: every batch and single call of the client slows down at
once) instead of each task sleeping on its own, and costs the item no retry budget (bounded by the
policy's `max_rate_limit_retries`). The policy's `deadline` is a wall clock over each item from
its admission to the batch (its wait for a worker and a slot, attempts, waits), enforced with a
cancel scope as for single calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from gradient_async._batch.inputs import aiter_any
from gradient_async._batch.items import BatchItem, BatchStats, Job, batch_item
from gradient_async._batch.progress import ProgressCallback
from gradient_async._errors import APITimeoutError, GradientError, RateLimitError, ValidationError
from gradient_async._hooks import BatchObserver
from gradient_async._limiter import PATIENT, Limiter
from gradient_async._ratelimit import RateLimiter
from gradient_async._retry import RetryPolicy, logger

__all__ = ["BatchRunner", "collapse_excgroups"]

P = TypeVar("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Fatal:
    error: BaseException


def collapse_excgroups(exc: BaseException) -> BaseException:
    """The single member of (nested) one-member exception groups, else `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _loop_clock() -> Callable[[], float]:
    """The running loop's clock, looked up once: the same readings as `anyio.current_time()`,
    without its per-call backend lookup (which costs more than the rest of an item's bookkeeping)."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return anyio.current_time


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class BatchRunner(Generic[P, T]):
    """Runs `call(job)` for every job of a source under concurrency, rate and retry control.

    Args:
        call: one attempt for one job (it must not retry itself), through the client's limiter.
        limiter: the client's limiter (looked up inside the event loop); the client reports each
            answer to it, the runner only asks how much of a 429's wait a client-wide pause leaves.
        max_concurrency: most attempts of this batch in flight (the client's cap applies too).
        window: most items in flight or finished-not-consumed (default 2 × max_concurrency).
        requests_per_minute / tokens_per_minute: smooth rate limits (job.cost is its token estimate).
        retry: what is retried and how long to wait.
        fail_fast: stop at the first item that ends in an error, and raise it.
        progress: called with (done, total, ok, failed) after each item.
        total: number of items, when known.
        observer: the client's `BatchObserver` (batch/item spans, item metrics, on_retry hooks), or None.
    """

    def __init__(
        self,
        call: Callable[[Job[P]], Awaitable[T]],
        *,
        limiter: Callable[[], Limiter],
        max_concurrency: int,
        window: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        retry: RetryPolicy,
        fail_fast: bool = False,
        progress: ProgressCallback | None = None,
        total: int | None = None,
        clock: Callable[[], float] = anyio.current_time,
        rng: random.Random | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self._call = call
        self._observer = observer  # hooks + OpenTelemetry (_hooks.BatchObserver); None when nothing observes
        if clock is anyio.current_time:
            clock = _loop_clock()
        max_concurrency = _check_count(max_concurrency, "max_concurrency")
        self._held = _check_count(window if window is not None else 2 * max_concurrency, "window")
        self._retry = retry
        self._sleep = retry.sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiter = limiter
        self._max_concurrency = max_concurrency
        self._slots: anyio.CapacityLimiter | None = None  # built inside the event loop
        self._pulling = 0  # workers that take jobs (one waiting before a retry has handed its place on)
        self.stopped_by: BatchItem[T] | None = None  # the item whose error stopped a fail_fast batch
        self._idle = 0  # workers waiting for a job
        self._rpm = RateLimiter(requests_per_minute, clock=clock, sleep=retry.sleep) if requests_per_minute else None
        self._tpm = RateLimiter(tokens_per_minute, clock=clock, sleep=retry.sleep) if tokens_per_minute else None
        self._fail_fast = fail_fast
        self._progress = progress
        self._total = total
        self.stats = BatchStats()

    async def iterate(
        self, source: Iterable[Any] | AsyncIterable[Any], make_job: Callable[[int, Any], Job[P]]
    ) -> AsyncGenerator[BatchItem[T], None]:
        """Items as they complete. `make_job(index, raw)` may raise GradientError: that item fails."""
        start = self._clock()
        if self._observer is not None:
            self._observer.started(self._total)
        self._slots = anyio.CapacityLimiter(self._max_concurrency)
        send, recv = anyio.create_memory_object_stream[BatchItem[T] | _Fatal](self._held + 1)
        held = anyio.Semaphore(self._held)
        jobs = anyio.create_memory_object_stream[tuple[Job[P], float]](self._max_concurrency)
        self._context = contextvars.copy_context()  # what every worker starts from (not a waiting item's)
        fatal: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._produce, source, make_job, jobs, send, held, tg)
                try:
                    async with recv:
                        while True:
                            # Drain what is ready without a trip through the event loop, but still
                            # stop at once when the caller was cancelled (a free check otherwise).
                            await anyio.lowlevel.checkpoint_if_cancelled()
                            try:
                                message = recv.receive_nowait()
                            except anyio.WouldBlock:
                                try:
                                    message = await recv.receive()
                                except anyio.EndOfStream:
                                    break
                            except anyio.EndOfStream:
                                break
                            held.release()
                            if isinstance(message, _Fatal):
                                fatal = message.error
                                break
                            self._count(message, start)
                            if message.error is not None and self._fail_fast:
                                fatal = message.error
                                self.stopped_by = message  # finished too: a partial result includes it
                                break
                            yield message
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise collapse_excgroups(group) from None
        finally:
            self.stats.elapsed = self._clock() - start
            if self._observer is not None:
                self._observer.finished(self.stats.ok, self.stats.failed, self.stats.retried, fatal)
            close = getattr(self._progress, "close", None)
            if callable(close):
                close()
        if fatal is not None:
            raise fatal

    def _count(self, item: BatchItem[T], start: float) -> None:
        stats = self.stats
        if item.error is None:
            stats.ok += 1
        else:
            stats.failed += 1
        stats.elapsed = self._clock() - start
        if self._progress is not None:
            self._progress(stats.done, self._total, stats.ok, stats.failed)

    async def _produce(
        self,
        source: Iterable[Any] | AsyncIterable[Any],
        make_job: Callable[[int, Any], Job[P]],
        jobs: tuple[MemoryObjectSendStream[tuple[Job[P], float]], MemoryObjectReceiveStream[tuple[Job[P], float]]],
        send: MemoryObjectSendStream[BatchItem[T] | _Fatal],
        held: anyio.Semaphore,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        """Hand each job (with its admission time, when a deadline needs it) to a waiting worker,
        starting workers as needed: at most `max_concurrency` take jobs at a time, so a short batch
        starts only as many as it has items."""
        job_send, job_recv = jobs
        timed = self._retry.deadline is not None
        async with send, job_send, job_recv:
            index = 0
            try:
                async with aclosing(aiter_any(source)) as raws:  # closed here, also when cancelled (trio)
                    async for raw in raws:
                        try:  # admit a whole window at once instead of one item per loop iteration
                            held.acquire_nowait()
                        except anyio.WouldBlock:
                            await held.acquire()
                        try:
                            job = make_job(index, raw)
                        except GradientError as err:
                            await send.send(batch_item(index, raw, error=err))
                        else:
                            if self._idle:
                                self._idle -= 1  # a waiting worker takes this job: busy from now on
                            elif self._pulling < self._max_concurrency:
                                self._pulling += 1  # every worker is busy: one more may take this job
                                self._start_worker(job_recv, send, tg)
                            admitted = (job, anyio.current_time() if timed else 0.0)
                            try:  # a waiting worker or room in the buffer: no trip through the event loop
                                job_send.send_nowait(admitted)
                            except anyio.WouldBlock:
                                await job_send.send(admitted)
                        index += 1
            except Exception as exc:  # the caller's iterable failed: stop the batch with its error
                await send.send(_Fatal(exc))

    def _start_worker(
        self,
        jobs: MemoryObjectReceiveStream[tuple[Job[P], float]],
        send: MemoryObjectSendStream[BatchItem[T] | _Fatal],
        tg: anyio.abc.TaskGroup,
    ) -> None:
        # in the batch's own context: a replacement must not inherit the waiting item's span or contextvars
        self._context.run(tg.start_soon, self._worker, jobs.clone(), send.clone(), tg)

    async def _worker(
        self,
        jobs: MemoryObjectReceiveStream[tuple[Job[P], float]],
        send: MemoryObjectSendStream[BatchItem[T] | _Fatal],
        tg: anyio.abc.TaskGroup,
    ) -> None:
        """Take jobs until there are none, or until this worker's item waited before a retry and
        handed its place to a new worker (`_pulling` stays as it was: one worker replaces another)."""
        PATIENT.set(True)  # this task's calls wait for a client slot without shedding (the window bounds them)
        handed_over = False

        def hand_over() -> None:
            nonlocal handed_over
            if not handed_over:
                handed_over = True
                self._start_worker(jobs, send, tg)

        async with jobs, send:
            while True:
                try:
                    job, admitted = jobs.receive_nowait()
                except anyio.WouldBlock:
                    self._idle += 1  # the producer counts this worker busy again when it sends it a job
                    try:
                        job, admitted = await jobs.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                message: BatchItem[T] | _Fatal
                try:
                    if self._observer is None:
                        message = await self._attempts(job, admitted, hand_over)
                    else:
                        with self._observer.item(job.index):  # this item's calls are its item span's children
                            message = await self._attempts(job, admitted, hand_over)
                            self._observer.item_finished(message.error, message.attempts)
                except Exception as exc:  # a bug or a user callback failing: surface it, do not hide it
                    message = _Fatal(exc)
                try:
                    try:  # the buffer holds a whole window, so this rarely has to wait
                        send.send_nowait(message)
                    except anyio.WouldBlock:
                        await send.send(message)
                except anyio.BrokenResourceError:
                    return  # the consumer stopped (cancelled, fail_fast, or left early): the batch is being torn down
                if handed_over:
                    return  # another worker took this one's place while its item waited

    async def _attempts(self, job: Job[P], admitted: float, hand_over: Callable[[], None]) -> BatchItem[T]:
        """The item's attempts, under its deadline counted from `admitted` (anyio's clock)."""
        deadline = self._retry.deadline
        if deadline is None:
            return await self._attempt_loop(job, 0.0, [0], hand_over)
        tally = [0]
        started = self._clock() - (anyio.current_time() - admitted)  # admission, on the runner's clock
        try:
            with anyio.fail_at(admitted + deadline):
                return await self._attempt_loop(job, started, tally, hand_over)
        except TimeoutError:
            error = APITimeoutError(
                f"batch item {job.index}: no answer within the {deadline} s deadline "
                "(RetryPolicy.deadline bounds each item from its admission: the wait for a worker, attempts, waits)"
            )
            return batch_item(job.index, job.prompt, error=error, id=job.id, attempts=tally[0])

    async def _attempt_loop(
        self, job: Job[P], started: float, tally: list[int], hand_over: Callable[[], None]
    ) -> BatchItem[T]:
        policy = self._retry
        stats = self.stats
        attempts = rate_limited = 0
        slots = self._slots
        assert slots is not None
        while True:
            borrower = object()
            try:  # the common case takes no trip through the event loop
                slots.acquire_on_behalf_of_nowait(borrower)
            except anyio.WouldBlock:
                await slots.acquire_on_behalf_of(borrower)
            try:
                if self._rpm is not None:
                    await self._rpm.acquire()
                if self._tpm is not None and job.cost:
                    await self._tpm.acquire(job.cost)
                attempts += 1
                tally[0] = attempts
                stats.requests += 1
                if attempts > 1:
                    stats.retried += 1
                value = await self._call(job)
            except GradientError as err:
                slots.release_on_behalf_of(borrower)
                if isinstance(err, ValidationError):  # refused before anything was sent
                    stats.requests -= 1
                    return batch_item(job.index, job.prompt, error=err, id=job.id, attempts=attempts - 1)
                is_429 = isinstance(err, RateLimitError)
                if is_429:
                    stats.rate_limited += 1
                    rate_limited += 1
                elapsed = self._clock() - started if policy.deadline is not None else 0.0
                wait = policy.next_wait(
                    err, attempts, elapsed, idempotent=True, rate_limited=rate_limited, rng=self._rng
                )
                if wait is None:
                    return batch_item(job.index, job.prompt, error=err, id=job.id, attempts=attempts)
                logger.debug(
                    "retrying batch item: index=%d attempt=%d status=%s error=%s wait=%.3fs",
                    job.index,
                    attempts,
                    getattr(err, "status_code", None),
                    type(err).__name__,
                    wait,
                )
                if self._observer is not None:
                    await self._observer.retry_scheduled(err, attempts, wait)
                if is_429:
                    wait = self._limiter().uncovered(wait)  # 0 while the client-wide pause runs
                if wait > 0:
                    hand_over()  # the batch keeps its concurrency while this item waits
                    await self._sleep(wait)
                continue
            except BaseException:
                slots.release_on_behalf_of(borrower)
                raise
            slots.release_on_behalf_of(borrower)
            return batch_item(job.index, job.prompt, value=value, id=job.id, attempts=attempts)
