"""Rotary QK on the layouts besides Llama's: GPT-J (interleaved pairs, a sin/cos table), GPT-NeoX and Phi (partial).

GPT-J turns dimensions ``2i`` and ``2i + 1`` together (``rotate_every_two``) over its first
``rotary_dim`` dimensions and keeps ``[sin | cos]`` in ``embed_positions`` (no ``inv_freq``);
TransformerLens 4.3's bridge neither marks that (``rotary_adjacent_pairs`` is False) nor fires its
rotated query/key hooks, and its ``hook_attn_scores`` holds the pattern. So GPT-J's reference
here is plain transformers: the layer's ``q_proj``/``k_proj`` outputs rotated with
``modeling_gptj.apply_rotary_pos_emb`` at the real positions, times the module's scaling.
GPT-NeoX (``rotary_pct``) and Phi (``partial_rotary_factor``) rotate the first part of each head
in halves; their bridges' ``hook_attn_scores`` are the pre-softmax scores (checked here against
the pattern) and are the reference, as for Llama in ``test_qk_rotary_offsets.py``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny

import headscope
from headscope.errors import BadInput
from headscope.models.inputs import TokenSequence
from headscope.qk import rotary, token_qk
from headscope.qk.live import capture, qk_scores
from test_qk_rotary_offsets import _check_offsets

H, D_HEAD = 4, 16


@pytest.fixture(scope="module")
def gptj_dir(tmp_path_factory, gpt2_tokenizer_dir):
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(0)
    cfg = GPTJConfig(n_embd=64, n_layer=2, n_head=H, n_positions=256, rotary_dim=8, vocab_size=50257)
    hf = GPTJForCausalLM(cfg).eval()
    with torch.no_grad():  # embeddings of the usual size, so the scores are far from zero
        hf.transformer.wte.weight.mul_(30.0)
    return save_tiny(hf, gpt2_tokenizer_dir, tmp_path_factory.mktemp("tiny-gptj"))


@pytest.fixture(scope="module")
def tiny_gptj(gptj_dir):
    return headscope.load_model(str(gptj_dir), device="cpu")


def _gptj_reference_scores(gptj_dir, ids: list[int], layer: int) -> torch.Tensor:
    """``[H, T, T]`` pre-softmax scores of GPT-J ``layer`` from plain transformers (causal part meaningful)."""
    from transformers import GPTJForCausalLM
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

    hf = GPTJForCausalLM.from_pretrained(str(gptj_dir), attn_implementation="eager").eval()
    att, store = hf.transformer.h[layer].attn, {}
    hooks = [
        att.q_proj.register_forward_hook(lambda m, a, o: store.__setitem__("q", o)),
        att.k_proj.register_forward_hook(lambda m, a, o: store.__setitem__("k", o)),
    ]
    x = torch.tensor([ids])
    with torch.no_grad():
        out = hf(x, output_attentions=True)
    for h in hooks:
        h.remove()
    r = att.rotary_dim
    q, k = (store[n].view(1, len(ids), H, D_HEAD) for n in ("q", "k"))
    sin, cos = hf.transformer.rotary_emb(q, torch.arange(len(ids))[None])
    q, k = (torch.cat([apply_rotary_pos_emb(t[..., :r], sin, cos), t[..., r:]], -1) for t in (q, k))
    scores = torch.einsum("bihd,bjhd->bhij", q, k)[0] * att.scaling
    causal = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
    want = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(want, out.attentions[layer][0], atol=1e-6, rtol=1e-5)  # the reference is the model's
    return scores


def test_gptj_layout_is_read_from_its_rotary_module(tiny_gptj):
    assert rotary.is_rotary(tiny_gptj) and rotary.adjacent_pairs(tiny_gptj)
    assert not getattr(tiny_gptj.cfg, "rotary_adjacent_pairs", False)  # the bridge does not say so
    assert rotary.rope_theta(tiny_gptj) == pytest.approx(10000.0, rel=1e-4)
    cos, sin = rotary.cos_sin(tiny_gptj, torch.arange(5))
    assert cos.shape == (5, 8)
    torch.testing.assert_close(cos[:, :4], cos[:, 4:])


def test_gptj_token_circuit_at_offset_d_is_the_live_score_of_tokens_d_apart(tiny_gptj, gptj_dir):
    t, s, filler = 17, 42, 5
    misses = []
    for d in (0, 1, 4, 11, 40):
        i = d + 3  # key at 3, query d tokens later; layer 0 reads the token embeddings alone
        ids = [filler] * (i + 2)
        ids[i - d], ids[i] = s, t
        ref = _gptj_reference_scores(gptj_dir, ids, 0)
        key = 0 if d == 0 else 1
        for h in range(H):
            live = float(ref[h, i, i - d])
            at_d = token_qk(tiny_gptj, (0, h), [t, s], offset=d)
            assert at_d.matrix[0, key] == pytest.approx(live, rel=1e-4, abs=1e-5), (d, h)
            misses.append(abs(token_qk(tiny_gptj, (0, h), [t, s], offset=0).matrix[0, key] - live))
    assert max(misses[:H]) < 1e-4 and max(misses[H:]) > 1e-3  # the position-free form holds at offset 0 only


def test_gptj_live_scores_are_the_models_pre_softmax_scores(tiny_gptj, gptj_dir):
    """What ``headscope qk`` reports as live scores (the bridge's score hook holds the pattern)."""
    ids = [5, 17, 42, 99, 17, 42, 99, 3, 17, 42, 7, 8]
    causal = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
    for layer in (0, 1):
        ref = _gptj_reference_scores(gptj_dir, ids, layer)
        got = torch.tensor(qk_scores(tiny_gptj, [(layer, h) for h in range(H)], [_seq(ids)]).scores[0])
        torch.testing.assert_close(got[:, causal].double(), ref[:, causal].double(), atol=1e-5, rtol=1e-5)


def test_gptj_offset_map_is_transformers_rotate_every_two(tiny_gptj, gptj_dir):
    """``q M_d k^T`` equals GPT-J's own rotation of q at i and k at i - d, for several i."""
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

    rot = tiny_gptj.original_model.transformer.rotary_emb
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 1, 1, 1, D_HEAD, generator=g)
    sin, cos = rot(q[0], torch.arange(60)[None])
    maps = rotary.offset_maps(tiny_gptj, [0, 2, 7, 33])

    def at(x, p):
        return torch.cat([apply_rotary_pos_emb(x[..., :8], sin[:, p : p + 1], cos[:, p : p + 1]), x[..., 8:]], -1)

    for n, d in enumerate([0, 2, 7, 33]):
        for i in (d, d + 5, 59):
            want = float((at(q, i) * at(k, i - d)).sum())
            got = float(q.flatten().double() @ maps[n] @ k.flatten().double())
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def _seq(ids):
    return TokenSequence(text="", ids=ids, labels=[str(t) for t in ids])


def _partial_model(kind, tmp_path, tokenizer_dir):
    import transformers as T

    torch.manual_seed(0)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=H)
    common |= dict(vocab_size=50257, max_position_embeddings=256, bos_token_id=50256, eos_token_id=50256)
    if kind == "neox":
        hf = T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**common, rotary_pct=0.25))
    else:
        hf = T.PhiForCausalLM(T.PhiConfig(**common, partial_rotary_factor=0.5))
    with torch.no_grad():
        hf.get_input_embeddings().weight.mul_(30.0)
    return headscope.load_model(str(save_tiny(hf.eval(), tokenizer_dir, tmp_path / kind)), device="cpu")


@pytest.mark.parametrize("kind", ["neox", "phi"])
def test_partial_rotary_token_circuit_at_offset_is_the_live_score(kind, tmp_path, gpt2_tokenizer_dir):
    model = _partial_model(kind, tmp_path, gpt2_tokenizer_dir)
    assert not rotary.adjacent_pairs(model)
    ids = [5, 42, 5, 5, 17, 5]
    acts = capture(model, _seq(ids), ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"])
    scores = acts["blocks.0.attn.hook_attn_scores"].double()
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(pattern, acts["blocks.0.attn.hook_pattern"].double(), atol=1e-6, rtol=1e-5)
    misses = _check_offsets(model, (0, 1), [0, 1, 4, 11], (17, 42), 5, 1e-4)
    assert misses[0] < 1e-4 and max(misses[1:]) > 1e-3


def test_a_rotary_module_in_another_form_is_refused_by_name():
    class OddRotaryEmbedding(torch.nn.Module):
        pass

    class Odd:
        original_model = torch.nn.Sequential(OddRotaryEmbedding())

    with pytest.raises(BadInput) as err:
        rotary.cos_sin(Odd(), torch.arange(3))
    assert "OddRotaryEmbedding" in str(err.value) and err.value.exit_code == 2


def test_a_rotary_module_whose_frequencies_are_not_in_halves_is_refused_by_name():
    """Cohere-style: each frequency repeated in place; a rotate_half reading would be silently wrong."""

    class InterleavedRotaryEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, 8, 2) / 8))

        def forward(self, x, position_ids):
            freqs = position_ids[..., None].float() * self.inv_freq
            emb = freqs.repeat_interleave(2, dim=-1)
            return emb.cos(), emb.sin()

    class Odd:
        original_model = torch.nn.Sequential(InterleavedRotaryEmbedding())

    with pytest.raises(BadInput, match="InterleavedRotaryEmbedding does not lay its frequencies out in halves"):
        rotary.cos_sin(Odd(), torch.arange(3))
