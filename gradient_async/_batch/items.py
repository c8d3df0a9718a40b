"""What a batch yields: one `BatchItem` per input, and `BatchResult` for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NoReturn, TypeAlias, TypeVar

from gradient_async._errors import GradientError

__all__ = ["BatchFailed", "BatchItem", "BatchOk", "BatchResult", "BatchStats", "Job", "batch_item"]

T = TypeVar("T")
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Job(Generic[P]):
    """One unit of work: the input at `index` (0-based), its user id, payload and per-item params."""

    index: int
    id: Any
    prompt: P
    params: dict[str, Any]
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchOk(Generic[T]):
    """An input that succeeded: `value` holds the result (`error` is None, `ok` is True).

    `index` is the position in the input, `id` the user's id (if the input had one),
    `attempts` the HTTP attempts it took.
    """

    index: int
    prompt: Any
    value: T
    id: Any = None
    attempts: int = 0

    @property
    def ok(self) -> Literal[True]:
        return True

    @property
    def error(self) -> None:
        return None

    def unwrap(self) -> T:
        """The value (an ok item never raises)."""
        return self.value


@dataclass(frozen=True, slots=True)
class BatchFailed(Generic[T]):
    """An input that failed for good: `error` is a typed `GradientError` (`value` is None, `ok` is False)."""

    index: int
    prompt: Any
    error: GradientError
    id: Any = None
    attempts: int = 0

    @property
    def ok(self) -> Literal[False]:
        return False

    @property
    def value(self) -> None:
        return None

    def unwrap(self) -> NoReturn:
        """Raise the item's error."""
        raise self.error


BatchItem: TypeAlias = BatchOk[T] | BatchFailed[T]
"""The outcome for one input. `if item.ok:` narrows it to `BatchOk` (so `item.value` is a `T`),
else to `BatchFailed` (so `item.error` is a `GradientError`).

Example::

    for item in result:
        print(item.value.generated_output if item.ok else item.error)
"""


def batch_item(
    index: int,
    prompt: Any,
    *,
    value: T | None = None,
    error: GradientError | None = None,
    id: Any = None,
    attempts: int = 0,
) -> BatchItem[T]:
    """`BatchFailed` when `error` is set, else `BatchOk` with `value`."""
    if error is not None:
        return BatchFailed(index=index, prompt=prompt, error=error, id=id, attempts=attempts)
    return BatchOk(index=index, prompt=prompt, value=value, id=id, attempts=attempts)  # type: ignore[arg-type]


@dataclass(slots=True)
class BatchStats:
    """Running totals: items `ok`/`failed`, HTTP `requests` sent, `retried` (requests that were
    retries), `rate_limited` (429 answers), `elapsed` seconds."""

    ok: int = 0
    failed: int = 0
    requests: int = 0
    retried: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.failed


@dataclass(frozen=True)
class BatchResult(Generic[T]):
    """Every item in input order, plus the totals. Iterable, indexable, `len()`-able.

    Example::

        result = await client.completions.batch(model_id, prompts)
        print(result.ok, result.failed, result.retried, f"{result.elapsed:.1f}s")
        for item in result.errors:
            print(item.index, item.error)
    """

    items: list[BatchItem[T]]
    stats: BatchStats = field(default_factory=BatchStats)

    @property
    def ok(self) -> int:
        return self.stats.ok

    @property
    def failed(self) -> int:
        return self.stats.failed

    @property
    def retried(self) -> int:
        return self.stats.retried

    @property
    def requests(self) -> int:
        return self.stats.requests

    @property
    def elapsed(self) -> float:
        return self.stats.elapsed

    @property
    def values(self) -> list[T | None]:
        """Each item's value (None where it failed), in input order."""
        return [item.value for item in self.items]

    @property
    def errors(self) -> list[BatchItem[T]]:
        """The failed items, in input order."""
        return [item for item in self.items if item.error is not None]

    def __iter__(self) -> Iterator[BatchItem[T]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> BatchItem[T]:
        return self.items[index]
