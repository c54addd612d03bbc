"""Bloom (ALiBi positions, tuple-returning blocks): restarting a pass from a saved residual, and its positional QK.

Two things differ from Llama or GPT-2 there: ``BloomModel`` takes ``outputs[0]`` of each block
(a pass-through returning the bare tensor handed block ``l`` the first *sequence* as its
hidden states: "Unexpected Q tensor shape [n, d_model]"), and TransformerLens 4.3's
``BloomBlockBridge`` never swaps the ``start_at_layer`` residual in (block ``l`` ran on the
embedding norm of it: off by 5e-4 in the logits even at layer 0). The reference is the full
pass from the tokens.

Bloom has no position embedding and no rotation: its positional QK circuit is the ALiBi bias
it adds to every score, checked against the live scores minus ``q . k``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny

import headscope
from headscope.circuits.runs import final_normed
from headscope.models.inputs import TokenSequence
from headscope.qk import positional_qk
from headscope.qk.live import capture
from headscope.scan import ablation as A
from test_fused import check_restart_equals_full


@pytest.fixture(scope="module")
def tiny_bloom(tmp_path_factory, gpt2_tokenizer_dir):
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(0)
    cfg = BloomConfig(hidden_size=64, n_layer=3, n_head=4, vocab_size=50257, bos_token_id=50256, eos_token_id=50256)
    out = save_tiny(BloomForCausalLM(cfg), gpt2_tokenizer_dir, tmp_path_factory.mktemp("tiny-bloom"))
    return headscope.load_model(str(out), device="cpu")


def test_the_pass_through_returns_what_the_layer_returns():
    from transformers.models.bloom.modeling_bloom import BloomBlock
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    assert A._returns_tuple(object.__new__(BloomBlock)) == 2  # return output, attn_weights
    assert A._returns_tuple(object.__new__(LlamaDecoderLayer)) == 0  # return hidden_states
    assert A._pass_through_for(2)(torch.ones(1, 3, 4))[1] is None


def test_a_restart_at_every_layer_reproduces_the_clean_logits(tiny_bloom):
    tokens = torch.arange(100, 120).reshape(2, 10)
    with torch.no_grad():
        clean, cache = tiny_bloom.bridge.run_with_cache(tokens, use_cache=False)
        for layer in range(tiny_bloom.n_layers):
            resid = cache[f"blocks.{layer}.hook_resid_pre"]
            calls = []
            handles = [b.attn.register_forward_hook(lambda *a: calls.append(1)) for b in tiny_bloom.blocks[:layer]]
            try:
                logits = A.restart_from(tiny_bloom, resid, layer)
                wrong = A.restart_from(tiny_bloom, resid * 0.5, layer)
            finally:
                for h in handles:
                    h.remove()
            assert calls == []  # the blocks below were not computed
            torch.testing.assert_close(logits, clean, atol=1e-5, rtol=1e-5)
            assert (wrong - clean).abs().max() > 1e-3  # the residual handed in is what block `layer` ran on


def test_restarted_ablation_equals_full_ablation_on_bloom(tiny_bloom):
    assert not A.fused_supported(tiny_bloom)  # Bloom's ALiBi attention takes the eager route
    check_restart_equals_full(tiny_bloom, 10, 3, 2, [[(2, 1)], [(1, 0), (2, 2)], [(0, 3)]], fused=False)


def test_the_patching_restart_shares_the_fix(tiny_bloom):
    """``circuits.runs.final_normed`` restarts through the same ``skip_blocks``."""
    tokens = torch.arange(200, 224).reshape(2, 12)
    with torch.no_grad():
        _, cache = tiny_bloom.bridge.run_with_cache(tokens, use_cache=False)
        full = final_normed(tiny_bloom, tokens)
        for layer in range(tiny_bloom.n_layers):
            restarted = final_normed(tiny_bloom, cache[f"blocks.{layer}.hook_resid_pre"], start=layer)
            torch.testing.assert_close(restarted, full, atol=1e-5, rtol=1e-5)


def test_the_positional_circuit_is_the_bias_the_model_adds_to_its_scores(tiny_bloom):
    heads = [(0, 0), (1, 2), (2, 3)]
    pos = positional_qk(tiny_bloom, heads, n_positions=20)
    assert pos.matrix is None and "ALiBi" in pos.method
    ids = list(range(300, 320))
    seq = TokenSequence(text="", ids=ids, labels=[str(t) for t in ids])
    for n, (layer, h) in enumerate(heads):
        names = [f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
        acts = capture(tiny_bloom, seq, names)
        q, k = (acts[x].reshape(20, 4, 16)[:, h].double() for x in names[1:])
        qk = q @ k.T / 4.0  # 1 / sqrt(d_head)
        bias = acts[names[0]][h].double() - qk  # [query, key]: what the scores add to q.k
        i = 19
        want = (bias[i, i - torch.arange(20)] - bias[i, i]).numpy()
        assert abs(want).max() > 0.05  # a real penalty on distance (the smallest slope here: 1/256)
        np.testing.assert_allclose(pos.offset_curve[n], want, atol=1e-5)
        assert pos.to_dict()["heads"][f"L{layer}H{h}"]["peak_offset"] == 0
