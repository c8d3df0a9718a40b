"""Batched multi-LoRA and the versioned adapter store on a tiny random Llama (no model download, seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

for _module in ("torch", "transformers", "peft", "safetensors"):
    pytest.importorskip(_module, reason=f"{_module} is not importable (pip install gradient-async[local])")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from gradient_async.engine._local_lora import LoraWeights, inject, targets  # noqa: E402
from gradient_async.engine._local_train import EncodedSample, TrainingRun  # noqa: E402
from gradient_async.engine._lora_store import AdapterRecord, LoraStore  # noqa: E402


def tiny_model(vocab: int = 64) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def random_adapter(shapes: dict[str, tuple[int, int]], rank: int, seed: int) -> LoraWeights:
    start = LoraWeights.initial(shapes, rank=rank, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    b = {n: torch.randn(t.shape, generator=gen) * 0.5 for n, t in start.b.items()}
    return LoraWeights(start.rank, start.alpha, start.a, b)


@pytest.fixture(scope="module")
def model() -> Any:
    m = tiny_model()
    inject(m)
    return m


def logits(model: Any, ids: torch.Tensor, rows: list[LoraWeights | None]) -> torch.Tensor:
    router = inject(model)
    with torch.inference_mode(), router.mixed(rows):
        out: torch.Tensor = model(input_ids=ids).logits
    return out


def test_targets_are_every_linear_layer_but_the_head(model: Any) -> None:
    names = list(targets(model))
    assert len(names) == 2 * 7 and all("lm_head" not in n for n in names)
    assert names[0] == "model.layers.0.self_attn.q_proj"


def test_a_new_adapter_is_the_base_model(model: Any) -> None:
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    fresh = LoraWeights.initial(targets(model), rank=4, seed=3)
    assert torch.equal(logits(model, ids, [fresh, fresh]), logits(model, ids, [None, None]))


def test_mixed_batch_equals_each_row_alone(model: Any) -> None:
    """Eight adapters of different ranks plus base rows in one batch: every row as if alone."""
    shapes = targets(model)
    adapters = [random_adapter(shapes, rank=(2, 4, 8)[i % 3], seed=i) for i in range(8)]
    rows: list[LoraWeights | None] = [*adapters, None, adapters[3], None, adapters[0]]
    ids = torch.randint(0, 64, (len(rows), 9), generator=torch.Generator().manual_seed(2))
    mixed = logits(model, ids, rows)
    for i, w in enumerate(rows):
        alone = logits(model, ids[i : i + 1], [w])
        assert torch.allclose(mixed[i : i + 1], alone, atol=1e-5), i
    assert not torch.allclose(mixed[0], mixed[1], atol=1e-3)  # the adapters really differ


def test_weights_match_peft_on_the_saved_folder(model: Any, tmp_path: Path) -> None:
    from peft import PeftModel

    from gradient_async.engine._local_model import library_warnings_quiet

    store = LoraStore(tmp_path)
    weights = random_adapter(targets(model), rank=4, seed=9)
    version = store.commit(AdapterRecord("a", "tiny", 4, None), weights, None, base_model="tiny", steps=1)
    with library_warnings_quiet():
        reference = PeftModel.from_pretrained(tiny_model(), str(version.path)).eval()
    ids = torch.randint(0, 64, (3, 5), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = reference(input_ids=ids).logits
    assert torch.allclose(logits(model, ids, [weights] * 3), expected, atol=1e-5)


def test_training_changes_only_the_private_copy(model: Any) -> None:
    router = inject(model)
    start = LoraWeights.initial(targets(model), rank=4, seed=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sample = EncodedSample(ids=list(range(10, 30)), trainable=[True] * 20, multiplier=1.0)
    run = TrainingRun(model, router, start, None, [sample, sample], steps=3, lr=1e-2, pad_id=0)
    losses = []
    while not run.done:
        if run.unit():
            losses.append(run.sum_loss)
    assert run.step == 3 and run.finite and run.units == 3
    assert all(torch.equal(t, torch.zeros_like(t)) for t in start.b.values())  # the served version is untouched
    assert any(not torch.equal(t, torch.zeros_like(t)) for t in run.weights.b.values())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the base model never trains


def test_store_versions_switch_and_keep_the_optimizer_state(tmp_path: Path) -> None:
    shapes = {"model.layers.0.mlp.up_proj": (4, 6)}
    store = LoraStore(tmp_path)
    record = AdapterRecord("ad", "tiny", 2, None)
    store.write_record(record)
    assert store.current("ad") is None and store.load("ad", list(shapes)) is None
    v1 = store.commit(record, random_adapter(shapes, 2, 1), {"state": {}, "param_groups": []}, base_model="t", steps=4)
    w2 = random_adapter(shapes, 2, 2)
    v2 = store.commit(record, w2, {"state": {}, "param_groups": [{"lr": 0.5}]}, base_model="t", steps=8)
    assert (v1.number, v2.number, v2.steps) == (1, 2, 8)
    directory = v2.path.parent
    assert sorted(p.name for p in directory.iterdir()) == ["CURRENT", "adapter.json", "v000002"]
    loaded = store.load("ad", list(shapes))
    assert loaded is not None and torch.equal(
        loaded[1].b["model.layers.0.mlp.up_proj"], w2.b["model.layers.0.mlp.up_proj"]
    )
    state = store.optimizer_state(loaded[0])
    assert state is not None and state["param_groups"] == [{"lr": 0.5}]
    config = json.loads((v2.path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["target_modules"] == ["up_proj"]
    store.delete("ad")
    assert list(tmp_path.iterdir()) == [] and store.record("ad") is None
