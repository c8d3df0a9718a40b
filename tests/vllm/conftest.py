"""Fixtures for the engine tests of issue 12: a tiny model built here (no downloads), a fake vLLM
child (a wrapper script standing in for the vLLM virtualenv's python) and a fake peft trainer.

Tests that start the real vLLM are marked `vllm` (select with `-m vllm`, skip with `-m "not vllm"`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from gradient_async.engine import AdapterSpec, FineTuneOutcome, TrainingSample

HERE = Path(__file__).parent
VOCAB = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hi", "the", "answer"]
VOCAB += [f"w{i}" for i in range(53)]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def build_tokenizer(folder: Path) -> None:
    """A word-level tokenizer with a chat template, saved like a Hugging Face model's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (2 layers, hidden 16) with its tokenizer, built and saved here."""
    pytest.importorskip("torch", reason="needs the [local] extra", exc_type=ImportError)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("models") / "Tiny-Llama"
    build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only a tokenizer (+ config.json): what the vLLM engine itself reads of the model folder."""
    pytest.importorskip("transformers", reason="needs the [local] extra", exc_type=ImportError)
    folder = tmp_path_factory.mktemp("tok") / "tok-model"
    build_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


@pytest.fixture
def fake_vllm_python(tmp_path: Path) -> Path:
    """A stand-in for the vLLM virtualenv's python: runs fake_vllm.py with the engine's arguments."""
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_vllm.py"}" "$@"\n')
    script.chmod(0o755)
    return script


class FakeTrainer:
    """A peft trainer stand-in: fine-tunes write a PEFT-shaped folder; embeddings are [len, 0]."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.adapters: dict[str, int] = {}
        self.closed = False

    async def warm_up(self) -> None:
        pass

    async def create_adapter(self, adapter: AdapterSpec) -> None:
        self.adapters.setdefault(adapter.adapter_id, 0)

    async def delete_adapter(self, adapter_id: str) -> None:
        self.adapters.pop(adapter_id, None)

    async def fine_tune(self, adapter: AdapterSpec, samples: Sequence[TrainingSample]) -> FineTuneOutcome:
        n = self.adapters.get(adapter.adapter_id, 0) + 1
        self.adapters[adapter.adapter_id] = n
        folder = self.root / adapter.adapter_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": adapter.rank or 8, "round": n}))
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(16))
        return FineTuneOutcome(trainable_tokens=len(samples), sum_loss=1.0 / n)

    def adapter_path(self, adapter_id: str) -> Path | None:
        folder = self.root / adapter_id
        return folder if (folder / "adapter_config.json").is_file() else None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(len(t)), 0.0] for t in texts]

    async def aclose(self) -> None:
        self.closed = True
