"""The local engine's adapter files: one atomic switch per adapter version.

Layout under `<data_dir>/adapters/<key>/` (key = a hash of the adapter id)::

    adapter.json          id, base model, rank, learning rate (written once, atomically)
    v000003/              one complete version, a PEFT folder vLLM and peft can load:
        adapter_model.safetensors  adapter_config.json  optimizer.pt  version.json
    CURRENT               "v000003": the version that is served

A fine-tune writes `v<N+1>.tmp/`, fsyncs every file and the folder, renames it to
`v<N+1>` and then replaces `CURRENT` (tmp file + fsync + `os.replace`): the
weights, the Adam state and the metadata switch together, in one rename.
`recover()` (run when the store opens) deletes `*.tmp`, versions `CURRENT` does not
name, folders of deleted adapters, and migrates the old single-folder layout
(`lora/`, `lora.new/`, `lora.old/`, `optimizer.pt`). Named crash points
(`gradient_async._crashpoints`) sit between the durable steps for kill -9 tests.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gradient_async._crashpoints import crash_point
from gradient_async.engine._local_lora import LoraWeights, peft_config
from gradient_async.engine.base import EngineError

__all__ = ["AdapterRecord", "LoraStore", "StoredVersion"]

_CURRENT = "CURRENT"
_WEIGHTS = "adapter_model.safetensors"
_CONFIG = "adapter_config.json"
_OPTIMIZER = "optimizer.pt"
_META = "version.json"
_TRASH = ".deleted-"


@dataclass(frozen=True)
class AdapterRecord:
    adapter_id: str
    base_model_slug: str
    rank: int
    learning_rate: float | None


@dataclass(frozen=True)
class StoredVersion:
    """The committed version of an adapter: its folder, number, commit time and total steps."""

    path: Path
    number: int
    committed_at: float
    steps: int


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def _version_name(n: int) -> str:
    return f"v{n:06d}"


def _version_number(name: str) -> int | None:
    if len(name) == 7 and name[0] == "v" and name[1:].isdigit():
        return int(name[1:])
    return None


class LoraStore:
    """Adapter records and versions on disk. Not thread-safe: the engine serializes the
    calls for one adapter (a fine-tune, create and delete of the same adapter never overlap)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.recover()

    # ----------------------------------------------------------------- paths
    @staticmethod
    def key(adapter_id: str) -> str:
        return hashlib.sha256(adapter_id.encode()).hexdigest()[:24]

    def _dir(self, adapter_id: str) -> Path:
        return self.root / self.key(adapter_id)

    # --------------------------------------------------------------- records
    def record(self, adapter_id: str) -> AdapterRecord | None:
        try:
            data = json.loads((self._dir(adapter_id) / "adapter.json").read_text())
            return AdapterRecord(
                adapter_id=str(data["adapter_id"]),
                base_model_slug=str(data["base_model_slug"]),
                rank=int(data["rank"]),
                learning_rate=None if data.get("learning_rate") is None else float(data["learning_rate"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_record(self, record: AdapterRecord) -> None:
        directory = self._dir(record.adapter_id)
        directory.mkdir(parents=True, exist_ok=True)
        _guard_disk(lambda: _write_atomic(directory / "adapter.json", json.dumps(record.__dict__).encode()))

    def delete(self, adapter_id: str) -> None:
        """Remove the adapter's folder: one rename (gone at once), then the files."""
        directory = self._dir(adapter_id)
        if not directory.exists():
            return
        trash = self.root / f"{_TRASH}{directory.name}-{uuid.uuid4().hex[:8]}"
        os.replace(directory, trash)
        _fsync(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    # -------------------------------------------------------------- versions
    def current(self, adapter_id: str) -> StoredVersion | None:
        """The served version, or None (created but never fine-tuned)."""
        directory = self._dir(adapter_id)
        try:
            name = (directory / _CURRENT).read_text().strip()
        except OSError:
            return None
        number = _version_number(name)
        if number is None:
            return None
        try:
            meta = json.loads((directory / name / _META).read_text())
        except (OSError, ValueError):
            return None
        return StoredVersion(directory / name, number, float(meta["committed_at"]), int(meta.get("steps", 0)))

    def load(self, adapter_id: str, modules: list[str]) -> tuple[StoredVersion, LoraWeights] | None:
        """The served version and its weights, or None when the adapter has none."""
        version = self.current(adapter_id)
        if version is None:
            return None
        config = json.loads((version.path / _CONFIG).read_text())
        return version, LoraWeights.from_peft(load_file(str(version.path / _WEIGHTS)), config, modules)

    def optimizer_state(self, version: StoredVersion | None) -> dict[str, Any] | None:
        if version is None:
            return None
        try:
            state: dict[str, Any] = torch.load(version.path / _OPTIMIZER, weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError):
            return None
        return state

    def commit(
        self,
        record: AdapterRecord,
        weights: LoraWeights,
        optimizer_state: dict[str, Any] | None,
        *,
        base_model: str,
        steps: int,
    ) -> StoredVersion:
        """Write the next version and switch `CURRENT` to it; all or nothing.

        Raises EngineError (507) when the disk is full, after removing what it wrote.
        """
        directory = self._dir(record.adapter_id)
        previous = self.current(record.adapter_id)
        number = 1 if previous is None else previous.number + 1
        final = directory / _version_name(number)
        tmp = directory / (final.name + ".tmp")
        committed_at = time.time()
        switched = False

        def write() -> None:
            nonlocal switched
            directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)  # left by a failed commit: never served
            tmp.mkdir()
            save_file(weights.peft_state(), str(tmp / _WEIGHTS), metadata={"format": "pt"})
            (tmp / _CONFIG).write_text(json.dumps(peft_config(weights, base_model), indent=2))
            if optimizer_state is not None:
                torch.save(optimizer_state, tmp / _OPTIMIZER)
            meta = {"adapter_id": record.adapter_id, "version": number, "committed_at": committed_at, "steps": steps}
            (tmp / _META).write_text(json.dumps(meta))
            for f in tmp.iterdir():
                _fsync(f)
            _fsync(tmp)
            crash_point("lora.version_written")
            os.replace(tmp, final)
            _fsync(directory)
            crash_point("lora.version_renamed")
            _write_atomic(directory / _CURRENT, final.name.encode())
            switched = True

        try:
            _guard_disk(write)
        except BaseException:
            if not switched:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(final, ignore_errors=True)
            raise
        crash_point("lora.current_switched")
        self._prune(directory, keep=final.name)
        crash_point("lora.pruned")
        return StoredVersion(final, number, committed_at, steps)

    # -------------------------------------------------------------- recovery
    def recover(self) -> None:
        """Finish or undo whatever a crash left half done, for every adapter."""
        for entry in list(self.root.iterdir()):
            if entry.name.startswith(_TRASH):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir():
                self._recover_adapter(entry)

    def _recover_adapter(self, directory: Path) -> None:
        for entry in directory.iterdir():
            if entry.name.endswith(".tmp"):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
        if not (directory / _CURRENT).is_file():
            self._migrate_legacy(directory)
        try:
            keep: str | None = (directory / _CURRENT).read_text().strip()
        except OSError:
            keep = None
        if keep is not None and not (directory / keep / _META).is_file():
            keep = None  # a pointer to nothing (a disk that lost data): serve no weights, say so loudly
            (directory / _CURRENT).unlink(missing_ok=True)
        self._prune(directory, keep=keep)

    def _prune(self, directory: Path, *, keep: str | None) -> None:
        """Remove every version but `keep`, and the old layout's leftovers."""
        for entry in directory.iterdir():
            legacy = entry.name in ("lora", "lora.new", "lora.old", _OPTIMIZER)
            if (_version_number(entry.name) is not None and entry.name != keep) or legacy:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)

    def _migrate_legacy(self, directory: Path) -> None:
        """The layout before versions: `lora/` (or `lora.new/`, `lora.old/` mid-switch) + `optimizer.pt`."""
        source = next(
            (directory / n for n in ("lora", "lora.new", "lora.old") if (directory / n / _CONFIG).is_file()), None
        )
        if source is None or not (source / _WEIGHTS).is_file():
            return
        tmp = directory / (_version_name(1) + ".tmp")
        shutil.copytree(source, tmp)
        if (directory / _OPTIMIZER).is_file():
            shutil.copy2(directory / _OPTIMIZER, tmp / _OPTIMIZER)
        meta = {"version": 1, "committed_at": (source / _WEIGHTS).stat().st_mtime, "steps": 0, "migrated": True}
        (tmp / _META).write_text(json.dumps(meta))
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        os.replace(tmp, directory / _version_name(1))
        _fsync(directory)
        _write_atomic(directory / _CURRENT, _version_name(1).encode())


def _guard_disk(fn: Callable[[], None]) -> None:
    try:
        fn()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EngineError(
                "no space left in the data directory; the adapter was not changed",
                type="failed",
                status_code=507,
            ) from exc
        raise
