"""LoRA for the local engine: many adapters in one forward pass.

Every linear layer of the base model except the output head is wrapped in a
`LoraLinear` that adds `scale * (x @ A.T) @ B.T` for whatever a shared
`LoraRouter` says: nothing (base model), one adapter being trained (its
parameters, with gradients), or a batch that mixes adapters row by row. For a
mixed batch the A matrices of the adapters present are stacked along the rank
axis (`A_cat: [R, d_in]`, `B_cat: [d_out, R]`, R = the sum of their ranks) and a
per-row mask keeps each row's own columns (times its scale) and zeroes the rest:

    y = base(x) + ((x @ A_cat.T) * mask[row]) @ B_cat.T        # base rows: mask all zero

Two dense matmuls per layer whatever the mix, instead of one sub-batch per
adapter. Weights are kept in PEFT's layout (`lora_A`: [r, d_in], `lora_B`:
[d_out, r], scaling = alpha / r), so adapters save and load as PEFT folders.

Example::

    router = inject(model)                       # once, after loading the base model
    weights = LoraWeights.initial(targets(model), rank=8, seed=1)
    with router.mixed([weights, None]):          # row 0 with the adapter, row 1 base
        logits = model(input_ids=ids).logits
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LoraLinear", "LoraRouter", "LoraWeights", "inject", "peft_config", "targets"]

_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraWeights:
    """One adapter version: per wrapped module name, A [r, d_in] and B [d_out, r]."""

    rank: int
    alpha: float
    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def initial(cls, shapes: dict[str, tuple[int, int]], *, rank: int, seed: int) -> LoraWeights:
        """PEFT's default init: A Kaiming-uniform (a=sqrt(5)), B zero, so a new adapter is the base model."""
        gen = torch.Generator().manual_seed(seed)
        a: dict[str, torch.Tensor] = {}
        b: dict[str, torch.Tensor] = {}
        for name, (d_in, d_out) in shapes.items():
            bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_(a=sqrt(5)) on a [r, d_in] weight
            a[name] = (torch.rand((rank, d_in), generator=gen) * 2 - 1) * bound
            b[name] = torch.zeros((d_out, rank))
        return cls(rank=rank, alpha=2.0 * rank, a=a, b=b)

    def trainable_copy(self) -> LoraWeights:
        """Fresh leaf tensors that require gradients (the committed version stays untouched)."""
        a = {n: t.detach().clone().requires_grad_(True) for n, t in self.a.items()}
        b = {n: t.detach().clone().requires_grad_(True) for n, t in self.b.items()}
        return LoraWeights(self.rank, self.alpha, a, b)

    def frozen_copy(self) -> LoraWeights:
        a = {n: t.detach().clone() for n, t in self.a.items()}
        b = {n: t.detach().clone() for n, t in self.b.items()}
        return LoraWeights(self.rank, self.alpha, a, b)

    def parameters(self) -> list[torch.Tensor]:
        """A then B for every module, in module order (PEFT's `named_parameters` order)."""
        return [t for name in self.a for t in (self.a[name], self.b[name])]

    def finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.parameters())

    def peft_state(self) -> dict[str, torch.Tensor]:
        """Tensors under PEFT's saved names (`base_model.model.<module>.lora_A.weight`)."""
        state: dict[str, torch.Tensor] = {}
        for name in self.a:
            state[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = self.a[name].detach().contiguous()
            state[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = self.b[name].detach().contiguous()
        return state

    @classmethod
    def from_peft(cls, state: dict[str, torch.Tensor], config: dict[str, Any], modules: Sequence[str]) -> LoraWeights:
        """Read a PEFT LoRA state dict; every one of `modules` must be present with rank `config['r']`."""
        rank = int(config["r"])
        alpha = float(config.get("lora_alpha", 2 * rank))
        a: dict[str, torch.Tensor] = {}
        b: dict[str, torch.Tensor] = {}
        for name in modules:
            ka, kb = f"{_PEFT_PREFIX}{name}.lora_A.weight", f"{_PEFT_PREFIX}{name}.lora_B.weight"
            if ka not in state or kb not in state:
                raise ValueError(f"the adapter has no LoRA weights for {name}")
            a[name], b[name] = state[ka].float(), state[kb].float()
            if a[name].shape[0] != rank or b[name].shape[1] != rank:
                raise ValueError(f"the adapter's {name} weights do not have rank {rank}")
        return cls(rank=rank, alpha=alpha, a=a, b=b)


def peft_config(weights: LoraWeights, base_model: str) -> dict[str, Any]:
    """The `adapter_config.json` PEFT (and vLLM) read for these weights."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": weights.rank,
        "lora_alpha": weights.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in weights.a}),
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }


class LoraRouter:
    """Tells every `LoraLinear` what to add; set per unit of work by the engine's one worker."""

    def __init__(self) -> None:
        self._train: LoraWeights | None = None
        self._mix: list[LoraWeights] = []
        self._mask: torch.Tensor | None = None  # [batch, R]
        self._cat: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cat_owners: tuple[LoraWeights, ...] = ()  # held, so their ids cannot be reused
        self._owner: int | None = None

    @contextmanager
    def training(self, weights: LoraWeights) -> Iterator[None]:
        """Every row uses `weights` (with their gradients)."""
        with self._claim():
            self._train = weights
            try:
                yield
            finally:
                self._train = None

    @contextmanager
    def mixed(self, rows: Sequence[LoraWeights | None]) -> Iterator[None]:
        """Row i uses rows[i] (None: the base model). No adapter at all costs nothing."""
        with self._claim():
            distinct: list[LoraWeights] = []
            for w in rows:
                if w is not None and all(w is not d for d in distinct):
                    distinct.append(w)
            if distinct:
                same = len(distinct) == len(self._cat_owners) and all(
                    a is b for a, b in zip(distinct, self._cat_owners, strict=True)
                )
                if not same:  # the same mix again (common under load) reuses the stack
                    self._cat, self._cat_owners = {}, tuple(distinct)
                self._mix = distinct
                offsets = [0]
                for w in distinct:
                    offsets.append(offsets[-1] + w.rank)
                mask = torch.zeros((len(rows), offsets[-1]))
                for i, w in enumerate(rows):
                    if w is not None:
                        k = next(j for j, d in enumerate(distinct) if d is w)
                        mask[i, offsets[k] : offsets[k + 1]] = w.scale
                self._mask = mask
            try:
                yield
            finally:
                self._mask, self._mix = None, []

    def forget(self) -> None:
        """Drop the cached stack (its adapters may have been replaced or deleted)."""
        self._cat, self._cat_owners = {}, ()

    @contextmanager
    def _claim(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner is not None:
            raise RuntimeError("LoraRouter is already in use (the engine runs one unit of work at a time)")
        self._owner = me
        try:
            yield
        finally:
            self._owner = None

    def delta(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        if self._train is not None:
            w = self._train
            return (x @ w.a[name].t()) @ w.b[name].t() * w.scale
        mask = self._mask
        if mask is None:
            return None
        pair = self._cat.get(name)
        if pair is None:
            a_cat = torch.cat([w.a[name] for w in self._mix], dim=0)
            b_cat = torch.cat([w.b[name] for w in self._mix], dim=1)
            pair = self._cat[name] = (a_cat, b_cat.t().contiguous())
        a_cat, b_t = pair
        low = x @ a_cat.t()
        shape = (mask.shape[0],) + (1,) * (low.dim() - 2) + (mask.shape[1],)
        return (low * mask.view(shape)) @ b_t


class LoraLinear(torch.nn.Module):
    """A frozen `nn.Linear` plus whatever LoRA delta the router holds for this module."""

    def __init__(self, base: torch.nn.Linear, name: str, router: LoraRouter) -> None:
        super().__init__()
        self.base = base
        self.lora_name = name
        self.router = router
        self.in_features = base.in_features
        self.out_features = base.out_features

    @property
    def weight(self) -> torch.Tensor:  # some model code reads `.weight` of its projections
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        delta = self.router.delta(self.lora_name, x)
        return y if delta is None else y + delta


def _target_names(model: Any) -> list[str]:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not output]


def targets(model: Any) -> dict[str, tuple[int, int]]:
    """Name -> (d_in, d_out) of every LoRA target: each linear layer except the output head
    (PEFT's `target_modules="all-linear"`), in module order."""
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            shapes[name] = (module.in_features, module.out_features)
    if shapes:
        return shapes
    modules = dict(model.named_modules())
    return {n: (modules[n].in_features, modules[n].out_features) for n in _target_names(model)}


def inject(model: Any) -> LoraRouter:
    """Wrap the model's LoRA targets in place (idempotent); returns the router they share."""
    existing = next((m.router for m in model.modules() if isinstance(m, LoraLinear)), None)
    if existing is not None:
        return existing
    router = LoraRouter()
    for name in _target_names(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(getattr(parent, child), name, router))
    return router
