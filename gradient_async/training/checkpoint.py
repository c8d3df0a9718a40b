"""The crash-safe checkpoint of a fine-tune run: a JSONL file, one record per line, each flushed and
fsynced before the run goes on.

Records (`type`):

- `run`: the header: adapter, plan digest (dataset + settings), number of steps.
- `sent`: written *before* a step's request leaves.
- `confirmed`: written when the server answered it: tokens, loss, duration. A resumed run skips it.
- `rejected`: the server refused it before any work (4xx but 408, or 507) or it certainly never arrived, so
  it was not applied: safe to send again. A 5xx or 408 leaves the step uncertain.
- `eval`: the evaluation after an epoch (so a resumed run does not evaluate twice).

A step with `sent` and nothing after it is *uncertain*: the process died (or the connection broke) after
the request may have reached the server. Fine-tunes are not idempotent, so a resumed run stops there
unless told to resend it. A torn last line (a crash mid-write) is dropped and cut off on the next write.

Example::

    state = read_checkpoint(Path("run.ckpt.jsonl"))
    print(sorted(state.confirmed), state.uncertain)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gradient_async._errors import GradientError

__all__ = ["CheckpointError", "CheckpointState", "CheckpointWriter", "read_checkpoint"]

VERSION = 1


class CheckpointError(GradientError):
    """The checkpoint file cannot be used for this run (another run's, corrupt, or unreadable)."""


@dataclass
class CheckpointState:
    """What a checkpoint file says: its header, confirmed steps, uncertain steps, evaluations."""

    header: dict[str, Any] | None = None
    confirmed: dict[int, dict[str, Any]] = field(default_factory=dict)
    uncertain: set[int] = field(default_factory=set)
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)
    valid_bytes: int = 0


def read_checkpoint(path: Path) -> CheckpointState:
    """Parse `path` (missing file: empty state). CheckpointError names a corrupt line."""
    state = CheckpointState()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        if last and raw == b"":
            break
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not isinstance(record.get("type"), str):
                raise ValueError("not a checkpoint record")
        except ValueError:
            if last:  # torn by a crash mid-write: dropped, cut off before the next write
                break
            raise CheckpointError(
                f"checkpoint {path} is corrupt at line {number}; it cannot be resumed safely "
                "(move it away to start over)"
            ) from None
        offset += len(raw) + 1
        _apply(state, record, path, number)
    state.valid_bytes = min(offset, len(data))
    return state


def _apply(state: CheckpointState, record: dict[str, Any], path: Path, number: int) -> None:
    kind = record["type"]
    if kind == "run":
        if state.header is None:
            state.header = record
        return
    if kind == "eval":
        state.evals[int(record["epoch"])] = record
        return
    step = record.get("step")
    if not isinstance(step, int):
        raise CheckpointError(f"checkpoint {path} line {number}: a {kind!r} record without a step number")
    if kind == "sent":
        if step not in state.confirmed:
            state.uncertain.add(step)
    elif kind == "confirmed":
        ok = isinstance(record.get("trainable_tokens"), int) and isinstance(record.get("sum_loss"), (int, float))
        if not ok or not isinstance(record.get("digest"), str):
            raise CheckpointError(
                f"checkpoint {path} line {number}: a confirmed step without its tokens, loss or digest"
            )
        state.uncertain.discard(step)
        state.confirmed[step] = record
    elif kind == "rejected":
        state.uncertain.discard(step)


class CheckpointWriter:
    """Appends records to the checkpoint, each flushed and fsynced before `write` returns."""

    def __init__(self, path: Path, *, valid_bytes: int | None = None) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh: IO[bytes] = path.open("ab")
            if valid_bytes is not None and fh.tell() > valid_bytes:
                fh.truncate(valid_bytes)  # drop a torn last line
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
        self._fh = fh

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._fh.close()
