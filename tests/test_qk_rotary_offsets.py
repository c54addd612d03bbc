"""Rotary QK at an offset: ``W_Q M_d W_K^T`` is the live pre-softmax score of tokens placed d apart.

On a rotary model the position-free ``W_Q W_K^T`` is the score only at offset 0. The reference
here is the model itself: ``blocks.0.attn.hook_attn_scores`` at (query i, key i - d) of a text
with token t at i and token s at i - d. In layer 0 a head reads the token embedding alone (no
position embedding in a rotary model), so the token circuit at offset d must give exactly that
score, and the offset-0 form must miss it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.folded_weights import head_weights
from headscope.models.inputs import TokenSequence
from headscope.qk import rotary, token_qk
from headscope.qk.composition import composition_by_offset, dense_score
from headscope.qk.live import capture


def _live_score(model, layer: int, head: int, ids: list[int], i: int, j: int) -> float:
    seq = TokenSequence(text="", ids=ids, labels=[str(t) for t in ids])
    acts = capture(model, seq, [f"blocks.{layer}.attn.hook_attn_scores"])
    return float(acts[f"blocks.{layer}.attn.hook_attn_scores"][head, i, j])


def _check_offsets(model, head, offsets, tokens, filler, rtol):
    layer, h = head
    t, s = tokens
    misses = []
    for d in offsets:
        i = d + 3  # key at 3, query d tokens later; every other place holds the filler token
        ids = [filler] * (i + 2)
        ids[i - d], ids[i] = s, t
        key = 0 if d == 0 else 1  # at offset 0 the query is its own key: token t against t
        live = _live_score(model, layer, h, ids, i, i - d)
        at_d = token_qk(model, (layer, h), [t, s], offset=d)
        at_0 = token_qk(model, (layer, h), [t, s], offset=0)
        assert at_d.offset == d and f"offset {d}" in at_d.method
        assert at_d.matrix[0, key] == pytest.approx(live, rel=rtol, abs=rtol)
        misses.append(abs(at_0.matrix[0, key] - live))
    return misses


def test_token_circuit_at_offset_d_is_the_live_score_of_tokens_d_apart(tiny_llama):
    misses = _check_offsets(tiny_llama, (0, 3), [0, 1, 4, 11], (17, 42), 5, 1e-4)
    assert misses[0] < 1e-4  # offset 0: the position-free form is right there...
    assert max(misses[1:]) > 1e-2  # ...and wrong elsewhere


@pytest.mark.smollm2
@pytest.mark.parametrize("head", [(0, 4), (0, 7)])
def test_smollm2_token_circuit_at_offset_matches_hook_attn_scores(smollm2, head):
    ids = smollm2.tokenizer(" cat dog the", add_special_tokens=False).input_ids
    misses = _check_offsets(smollm2, head, [1, 9, 40], (ids[0], ids[1]), ids[2], 2e-3)
    assert max(misses) > 1e-2


def test_offset_map_is_transformers_apply_rotary_pos_emb(tiny_llama):
    """``q M_d k^T`` equals RoPE_i(q) . RoPE_{i-d}(k) with transformers' own rotation, for several i."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 1, 1, 1, 16, generator=g)
    rot = [m for m in tiny_llama.original_model.modules() if type(m).__name__ == "LlamaRotaryEmbedding"][0]
    cos, sin = rot(q[0], torch.arange(40)[None])
    maps = rotary.offset_maps(tiny_llama, [0, 2, 7])
    for n, d in enumerate([0, 2, 7]):
        for i in (d, d + 5, 39):
            qi, _ = apply_rotary_pos_emb(q, q, cos[:, i : i + 1], sin[:, i : i + 1])
            _, kj = apply_rotary_pos_emb(k, k, cos[:, i - d : i - d + 1], sin[:, i - d : i - d + 1])
            want = float((qi * kj).sum())
            got = float(q.flatten().double() @ maps[n] @ k.flatten().double())
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_composition_by_offset_is_the_definition_with_the_rotation(tiny_llama):
    """Q- and K-composition at offset d: ||W_V W_O  W_Q M_d W_K^T|| (and its K form) from explicit matrices."""
    w = head_weights(tiny_llama)
    offsets = [0, 3, 9]
    comp = composition_by_offset(tiny_llama, [(1, 2)], offsets, weights=w)
    maps = rotary.offset_maps(tiny_llama, offsets)
    W_A = w.W_V[0, 1].double() @ w.W_O[0, 1].double()
    for n, _ in enumerate(offsets):
        B_q = w.W_Q[1, 2].double() @ maps[n] @ w.W_K[1, 2].double().T
        assert comp.scores["Q"][0, 0, 1, n] == pytest.approx(dense_score(W_A, B_q), rel=1e-5)
        assert comp.scores["K"][0, 0, 1, n] == pytest.approx(dense_score(W_A, B_q.T), rel=1e-5)
    assert np.isnan(comp.scores["K"][0, 1]).all()  # layer 1 is not earlier than layer 1
    assert comp.scores["K"][0, 0, 1, 0] != pytest.approx(comp.scores["K"][0, 0, 1, 2], rel=1e-3)


def test_used_offset_is_the_most_attended_offset_counted_by_hand(tiny_llama):
    from headscope.qk import qk_scores

    live = qk_scores(tiny_llama, ["1.2", "2.0"], ["a b c d a b c d", "x y z"])
    for n, head in enumerate(live.heads):
        mass: dict[int, float] = {}
        for p in live.patterns:
            T = p.shape[-1]
            for i in range(T):
                for j in range(1, i + 1):  # key 0 (the first token) left out
                    mass[i - j] = mass.get(i - j, 0.0) + float(p[n, i, j])
        best = max(mass, key=lambda d: mass[d])
        d, share = live.used_offset(head)
        assert d == best and share == pytest.approx(mass[best] / sum(mass.values()))


def test_learned_position_models_have_no_offset_and_say_position_free(tiny_gpt2):
    tq = token_qk(tiny_gpt2, "1.2", [5, 6])
    assert tq.offset is None and tq.where == "position-free" and "offset" not in tq.method
    with pytest.raises(Exception, match="no rotary positions"):
        composition_by_offset(tiny_gpt2, [(1, 2)], [0, 1])
