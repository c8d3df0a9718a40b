"""The versioned adapter store under kill -9 (a child process SIGKILLs itself at each crash point),
a full disk, and the layout older versions left behind (including their crash windows)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

for _module in ("torch", "safetensors"):
    pytest.importorskip(_module, reason=f"{_module} is not importable (pip install gradient-async[local])")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

CRASH_ENV = "GRADIENT_ASYNC_CRASH_AT"
from gradient_async.engine._local_lora import LoraWeights  # noqa: E402
from gradient_async.engine._lora_store import AdapterRecord, LoraStore  # noqa: E402
from gradient_async.engine.base import EngineError  # noqa: E402

MODULES = ["model.layers.0.mlp.up_proj"]
SHAPES = {MODULES[0]: (4, 6)}
RECORD = AdapterRecord("ad", "tiny", 2, None)

CHILD = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from gradient_async.engine._local_lora import LoraWeights
    from gradient_async.engine._lora_store import AdapterRecord, LoraStore
    store = LoraStore(Path(sys.argv[1]))
    record = AdapterRecord("ad", "tiny", 2, None)
    store.write_record(record)
    for n in (1, 2):
        w = LoraWeights.initial({"model.layers.0.mlp.up_proj": (4, 6)}, rank=2, seed=n)
        w = LoraWeights(2, 4.0, w.a, {k: torch.full(t.shape, float(n)) for k, t in w.b.items()})
        store.commit(record, w, {"state": {}, "param_groups": [{"n": n}]}, base_model="tiny", steps=n)
        print("committed", n, flush=True)
    """
)


def served(root: Path) -> tuple[int, float, list[str]]:
    store = LoraStore(root)  # opening recovers
    loaded = store.load("ad", MODULES)
    assert loaded is not None
    version, weights = loaded
    state = store.optimizer_state(version)
    assert state is not None and state["param_groups"] == [{"n": version.number}]  # state and weights together
    names = sorted(p.name for p in version.path.parent.iterdir())
    return version.number, float(weights.b[MODULES[0]][0, 0]), names


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ("lora.version_written@2", 1),
        ("lora.version_renamed@2", 1),
        ("lora.current_switched@2", 2),
        ("lora.pruned@2", 2),
    ],
)
def test_kill_during_a_commit_leaves_one_whole_version(tmp_path: Path, point: str, expected: int) -> None:
    env = {**os.environ, CRASH_ENV: point}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.split() == ["committed", "1"]
    number, value, names = served(tmp_path)
    assert (number, value) == (expected, float(expected))
    assert names == ["CURRENT", "adapter.json", f"v{expected:06d}"]  # no tmp, no other version
    follow = LoraStore(tmp_path).commit(
        RECORD, LoraWeights.initial(SHAPES, rank=2, seed=7), None, base_model="tiny", steps=9
    )
    assert follow.number == expected + 1  # the next fine-tune builds on what was served


def _legacy_folder(path: Path, value: float) -> None:
    w = LoraWeights.initial(SHAPES, rank=2, seed=1)
    w = LoraWeights(2, 4.0, w.a, {k: torch.full(t.shape, value) for k, t in w.b.items()})
    path.mkdir(parents=True)
    save_file(w.peft_state(), str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))


@pytest.mark.parametrize(
    ("folders", "expected"),
    [
        (("lora",), 1.0),  # the old layout, at rest
        (("lora.old", "lora.new"), 2.0),  # killed between `lora -> lora.old` and `lora.new -> lora`
        (("lora", "lora.new"), 1.0),  # killed before the switch: the new copy never counted
        (("lora.old",), 1.0),  # only the old copy is left
    ],
)
def test_the_old_layout_is_migrated_without_losing_weights(
    tmp_path: Path, folders: tuple[str, ...], expected: float
) -> None:
    store = LoraStore(tmp_path)
    store.write_record(RECORD)
    directory = tmp_path / LoraStore.key("ad")
    for name in folders:
        _legacy_folder(directory / name, 2.0 if name == "lora.new" else 1.0)
    torch.save({"state": {}, "param_groups": [{"n": 1}]}, directory / "optimizer.pt")
    number, value, names = served(tmp_path)
    assert (number, value) == (1, expected)
    assert names == ["CURRENT", "adapter.json", "v000001"]


def test_a_full_disk_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LoraStore(tmp_path)
    store.write_record(RECORD)
    store.commit(RECORD, LoraWeights.initial(SHAPES, rank=2, seed=1), None, base_model="tiny", steps=1)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("gradient_async.engine._lora_store.save_file", full)
    with pytest.raises(EngineError) as info:
        store.commit(RECORD, LoraWeights.initial(SHAPES, rank=2, seed=2), None, base_model="tiny", steps=2)
    assert info.value.status_code == 507 and "no space left" in info.value.message
    directory = tmp_path / LoraStore.key("ad")
    assert sorted(p.name for p in directory.iterdir()) == ["CURRENT", "adapter.json", "v000001"]


def test_deleted_adapters_leave_nothing_behind(tmp_path: Path) -> None:
    store = LoraStore(tmp_path)
    store.write_record(RECORD)
    (tmp_path / f".deleted-{LoraStore.key('x')}-1234").mkdir()  # a kill during an earlier delete
    store.delete("ad")
    LoraStore(tmp_path)
    assert list(tmp_path.iterdir()) == []
