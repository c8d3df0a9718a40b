"""Progress reporting: a plain callback `(done, total | None, ok, failed)`, or `"tqdm"` for a bar.

Example::

    def report(done: int, total: int | None, ok: int, failed: int) -> None:
        print(f"{done}/{total or '?'} ok={ok} failed={failed}")

    await client.completions.batch(model_id, prompts, progress=report)
    await client.completions.batch(model_id, prompts, progress="tqdm")   # pip install 'gradient-async[batch]'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from gradient_async._errors import ValidationError

__all__ = ["ProgressCallback", "ProgressArg", "TqdmProgress", "resolve_progress"]

ProgressCallback: TypeAlias = Callable[[int, int | None, int, int], None]
ProgressArg: TypeAlias = "ProgressCallback | Literal['tqdm'] | None"


class TqdmProgress:
    """A tqdm bar driven by the batch's progress calls; `close()` ends it (the batch does this)."""

    def __init__(self, *, desc: str = "batch", **tqdm_kwargs: Any) -> None:
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise ValidationError(
                "progress='tqdm' needs tqdm: pip install 'gradient-async[batch]' (or pass a callback)"
            ) from None
        self._bar = tqdm(desc=desc, unit="item", dynamic_ncols=True, **tqdm_kwargs)
        self._done = 0

    def __call__(self, done: int, total: int | None, ok: int, failed: int) -> None:
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._done)
        self._done = done
        if failed:
            self._bar.set_postfix(ok=ok, failed=failed, refresh=False)

    def close(self) -> None:
        self._bar.close()


def resolve_progress(progress: ProgressArg) -> ProgressCallback | None:
    """The callback for a batch's `progress=` argument (ValidationError names what is accepted)."""
    if progress is None:
        return None
    if progress == "tqdm":
        return TqdmProgress()
    if callable(progress):
        return progress
    raise ValidationError(f"progress must be a callable (done, total, ok, failed), 'tqdm' or None, got {progress!r}")
