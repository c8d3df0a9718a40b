"""LoRA adapters of the local engine: one base model in memory, any number of adapters.

On disk every adapter lives in `<data_dir>/adapters/<key>/` (key = hash of the
adapter id): `adapter.json` (id, base model, rank, learning rate), `lora/`
(peft `save_pretrained` output, written after every fine-tune) and
`optimizer.pt` (the Adam state, so training continues where it stopped, also
across restarts; it is read for each fine-tune and not kept in memory).
Adapters are loaded into the shared peft model lazily, kept in an LRU of
`max_loaded` and unloaded (not deleted) when it overflows. An
adapter that was created but never fine-tuned has no weights and answers like
the base model. Not thread-safe: the engine calls it from one worker at a time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

__all__ = ["BASE_ADAPTER", "AdapterRecord", "LoraStore"]

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in `adapter_names=`


@dataclass(frozen=True)
class AdapterRecord:
    adapter_id: str
    base_model_slug: str
    rank: int
    learning_rate: float | None


class LoraStore:
    """Adapter files plus the peft wrapper around the shared base model."""

    def __init__(self, root: Path, *, max_loaded: int = 32) -> None:
        self.base_model: Any | None = None  # set by `attach` once the model is loaded
        self.root = root
        self.max_loaded = max(1, max_loaded)
        self._peft: Any | None = None
        self._loaded: OrderedDict[str, str] = OrderedDict()  # peft name -> adapter id, LRU order
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        root.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- paths
    @staticmethod
    def peft_name(adapter_id: str) -> str:
        return "a" + hashlib.sha256(adapter_id.encode()).hexdigest()[:24]

    def _dir(self, adapter_id: str) -> Path:
        return self.root / self.peft_name(adapter_id)[1:]

    def lora_dir(self, adapter_id: str) -> Path:
        return self._dir(adapter_id) / "lora"

    def has_weights(self, adapter_id: str) -> bool:
        return (self.lora_dir(adapter_id) / "adapter_config.json").is_file()

    # --------------------------------------------------------------- records
    def record(self, adapter_id: str) -> AdapterRecord | None:
        path = self._dir(adapter_id) / "adapter.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return AdapterRecord(
            adapter_id=str(data["adapter_id"]),
            base_model_slug=str(data["base_model_slug"]),
            rank=int(data["rank"]),
            learning_rate=None if data.get("learning_rate") is None else float(data["learning_rate"]),
        )

    def write_record(self, record: AdapterRecord) -> None:
        directory = self._dir(record.adapter_id)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "adapter.json.tmp"
        tmp.write_text(json.dumps(record.__dict__))
        tmp.replace(directory / "adapter.json")

    def delete(self, adapter_id: str) -> None:
        """Unload the adapter and remove all its files."""
        self._unload(self.peft_name(adapter_id))
        shutil.rmtree(self._dir(adapter_id), ignore_errors=True)

    # ---------------------------------------------------------------- memory
    def attach(self, base_model: Any) -> None:
        """Give the store the base model that adapters are injected into."""
        self.base_model = base_model

    def close(self) -> None:
        """Drop every in-memory reference (files stay)."""
        self.base_model = None
        self._peft = None
        self._loaded.clear()
        self._optimizers.clear()

    @property
    def model(self) -> Any:
        """The model to run: the peft wrapper once an adapter was loaded, else the base model."""
        return self._peft if self._peft is not None else self.base_model

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded.values())

    @contextmanager
    def base_only(self) -> Iterator[None]:
        """Run the bare base model even though adapters are injected."""
        if self._peft is None or not self._loaded:
            with nullcontext():
                yield
        else:
            with self._peft.disable_adapter():
                yield

    def inference_names(self, adapter_ids: Iterable[str | None]) -> list[str]:
        """peft adapter names for a batch, loading adapters as needed (`__base__` for none)."""
        ids = list(adapter_ids)
        names = [self._ensure_loaded(a) if a is not None and self.has_weights(a) else BASE_ADAPTER for a in ids]
        self._evict(keep=set(names))
        return names

    def trainable(self, record: AdapterRecord) -> tuple[str, list[torch.nn.Parameter]]:
        """Load (or create, with a seed derived from the id) the adapter; return its parameters."""
        name = self.peft_name(record.adapter_id)
        if name not in self._loaded:
            if self.has_weights(record.adapter_id):
                self._ensure_loaded(record.adapter_id)
            else:
                config = LoraConfig(
                    r=record.rank,
                    lora_alpha=2 * record.rank,
                    target_modules="all-linear",
                    lora_dropout=0.0,
                    bias="none",
                    task_type="CAUSAL_LM",
                )
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(name[1:9], 16))
                    if self._peft is None:
                        self._peft = get_peft_model(self._base(), config, adapter_name=name)
                    else:
                        self._peft.add_adapter(name, config)
                self._loaded[name] = record.adapter_id
        self._loaded.move_to_end(name)
        self._evict(keep={name})
        assert self._peft is not None
        self._peft.set_adapter(name)
        self._peft.eval()
        params = self.parameters(name)
        for p in params:
            p.requires_grad_(True)
        return name, params

    def parameters(self, name: str) -> list[torch.nn.Parameter]:
        """The LoRA parameters of one loaded adapter, in a stable order."""
        assert self._peft is not None
        marker = f".{name}."
        return [p for n, p in self._peft.named_parameters() if marker in n]

    def optimizer(self, record: AdapterRecord, name: str, params: list[torch.nn.Parameter], lr: float) -> Any:
        """The adapter's Adam optimizer, its state restored from `optimizer.pt` when present.

        The state (2 x the adapter's size) lives on disk between fine-tunes, not in
        memory: `save` writes it and `release_optimizer` drops it.
        """
        opt = torch.optim.Adam(params, lr=lr)
        state_path = self._dir(record.adapter_id) / "optimizer.pt"
        if state_path.is_file():
            try:
                opt.load_state_dict(torch.load(state_path, weights_only=True))
            except (RuntimeError, ValueError, KeyError):
                opt = torch.optim.Adam(params, lr=lr)
        for group in opt.param_groups:
            group["lr"] = lr
        self._optimizers[name] = opt
        return opt

    def release_optimizer(self, name: str) -> None:
        self._optimizers.pop(name, None)

    def save(self, record: AdapterRecord, name: str) -> None:
        """Write the adapter weights (peft `save_pretrained`) and its optimizer state."""
        assert self._peft is not None
        directory = self._dir(record.adapter_id)
        tmp = directory / "lora.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._peft.save_pretrained(str(tmp), selected_adapters=[name])
        saved = tmp / name if (tmp / name / "adapter_config.json").is_file() else tmp
        new = directory / "lora.new"
        shutil.rmtree(new, ignore_errors=True)
        saved.rename(new)
        shutil.rmtree(tmp, ignore_errors=True)
        old = directory / "lora.old"
        shutil.rmtree(old, ignore_errors=True)
        lora = directory / "lora"
        if lora.exists():
            lora.rename(old)
        new.rename(lora)
        shutil.rmtree(old, ignore_errors=True)
        opt = self._optimizers.get(name)
        if opt is not None:
            torch.save(opt.state_dict(), directory / "optimizer.pt.tmp")
            (directory / "optimizer.pt.tmp").replace(directory / "optimizer.pt")

    def freeze(self, params: list[torch.nn.Parameter]) -> None:
        for p in params:
            p.requires_grad_(False)

    # --------------------------------------------------------------- private
    def _base(self) -> Any:
        if self.base_model is None:
            raise RuntimeError("LoraStore.attach() was not called")
        return self.base_model

    def _ensure_loaded(self, adapter_id: str) -> str:
        name = self.peft_name(adapter_id)
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return name
        path = str(self.lora_dir(adapter_id))
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base(), path, adapter_name=name, is_trainable=True)
        else:
            self._peft.load_adapter(path, adapter_name=name, is_trainable=True)
        self.freeze(self.parameters(name))
        self._peft.eval()
        self._loaded[name] = adapter_id
        return name

    def _evict(self, keep: set[str]) -> None:
        for name in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                break
            if name not in keep:
                self._unload(name)

    def _unload(self, name: str) -> None:
        if self._peft is None or name not in self._loaded:
            return
        del self._loaded[name]
        self._optimizers.pop(name, None)
        self._peft.delete_adapter(name)
