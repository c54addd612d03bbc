"""Decompositions sum back to the score, match the model's own logits, and handle rotary and GQA."""

from __future__ import annotations

import pytest
import torch

from headscope.errors import BadInput
from headscope.folded_weights import head_weights
from headscope.models.inputs import encode_texts as prepare_texts
from headscope.qk import decompose_qk
from headscope.qk.decompose import capture_residual, head_vectors, stripe_pairs

REPEATED = "The cat sat on the mat. The cat sat on the mat."


def _assert_sums(dec, tol=1e-4):
    assert abs(dec.key_contrib.sum() - dec.score) < tol
    assert abs(dec.query_contrib.sum() - dec.score) < tol
    assert abs(dec.pair_contrib.sum() - dec.score) < tol
    assert dec.max_abs_error < tol, "components' total must equal blocks.{l}.attn.hook_attn_scores"
    assert abs(dec.score - dec.model_score) < tol


@pytest.mark.parametrize("head", ["0.1", "1.2", "1.3"])
def test_gpt2_decomposition_sums_to_the_model_score(tiny_gpt2, head):
    for query, key in [(None, None), (7, 3), (-1, None), (0, 0)]:
        _assert_sums(decompose_qk(tiny_gpt2, head, REPEATED, query=query, key=key))


@pytest.mark.parametrize("head", ["0.0", "1.1", "2.3"])
def test_rotary_gqa_decomposition_sums_to_the_model_score(tiny_llama, head):
    for query, key in [(None, None), (9, 2), (-1, None)]:
        _assert_sums(decompose_qk(tiny_llama, head, REPEATED, query=query, key=key))


def test_components_are_embeddings_every_earlier_head_and_mlp(tiny_gpt2, tiny_llama):
    g = decompose_qk(tiny_gpt2, "1.0", REPEATED)
    assert g.key_names == ["embed", "pos_embed", "L0H0", "L0H1", "L0H2", "L0H3", "MLP0", "float_error"]
    ll = decompose_qk(tiny_llama, "2.0", REPEATED)
    assert ll.key_names[0] == "embed" and "pos_embed" not in ll.key_names  # rotary: no position component
    assert [n for n in ll.key_names if n.startswith("L")] == [f"L{l}H{h}" for l in range(2) for h in range(4)]
    assert {"MLP0", "MLP1"} <= set(ll.key_names)
    # the model's float32 rounding is the only thing left over, and it is tiny
    assert abs(ll.key_contrib[ll.key_names.index("float_error")]) < 1e-5


def test_vs_mean_columns_sum_to_score_minus_the_querys_mean_score(tiny_gpt2):
    (seq,) = prepare_texts(tiny_gpt2, [REPEATED])
    dec = decompose_qk(tiny_gpt2, "1.2", seq, query=9, key=4)
    acts = capture_residual(tiny_gpt2, seq, 1)
    row = acts["blocks.1.attn.hook_attn_scores"][2, 9, :10].numpy()
    assert dec.key_vs_mean.sum() == pytest.approx(row[4] - row.mean(), abs=1e-5)
    assert dec.query_vs_mean.sum() == pytest.approx(row[4] - row.mean(), abs=1e-5)


def test_heads_sharing_a_kv_head_get_identical_keys(tiny_llama):
    (seq,) = prepare_texts(tiny_llama, [REPEATED])
    w = head_weights(tiny_llama)
    acts = capture_residual(tiny_llama, seq, 2)
    _, (_, _, k0) = head_vectors(tiny_llama, w, acts, 2, 0)
    _, (_, _, k1) = head_vectors(tiny_llama, w, acts, 2, 1)
    _, (_, _, k2) = head_vectors(tiny_llama, w, acts, 2, 2)
    assert torch.equal(k0, k1)  # query heads 0, 1 -> kv head 0
    assert not torch.allclose(k0, k2)  # query head 2 -> kv head 1


def test_stripe_pairs_are_keys_after_an_earlier_copy_of_the_query_token():
    ids = [0, 5, 6, 7, 5, 6, 7]
    assert stripe_pairs(ids) == [(4, 2), (5, 3), (6, 4)]
    assert stripe_pairs([0, 1, 2, 3]) == []


def test_without_repeats_it_explains_the_last_query_and_says_so(tiny_gpt2):
    dec = decompose_qk(tiny_gpt2, "1.2", "one two three four")
    assert len(dec.pairs) == 1 and dec.pairs[0][0] == 4
    assert "no token repeats" in dec.how and "BOS excluded" in dec.how
    frame = dec.to_frame()
    assert set(frame.side) == {"key", "query"} and frame.groupby("side").contribution.sum().round(6).nunique() == 1


def test_bad_positions_are_refused_with_the_valid_range(tiny_gpt2):
    with pytest.raises(BadInput, match="outside the sequence of 5 tokens"):
        decompose_qk(tiny_gpt2, "1.2", "one two three four", query=9)
    with pytest.raises(BadInput, match="not visible from query 2"):
        decompose_qk(tiny_gpt2, "1.2", "one two three four", query=2, key=3)
    with pytest.raises(BadInput, match="layer 7 does not exist"):
        decompose_qk(tiny_gpt2, "7.0", "one two")


@pytest.mark.smollm2
def test_smollm2_decomposition_sums_back_and_names_the_previous_token_head(smollm2):
    dec = decompose_qk(smollm2, "18.6", REPEATED)
    _assert_sums(dec, tol=1e-4)
    assert len(dec.key_names) == 1 + 18 * 9 + 18 + 1  # embed, 162 heads, 18 MLPs, float error
    # on the induction stripe the key side is carried by earlier heads' outputs, led by a layer 16/17 head
    top = [name for name, _ in dec.top("key", 3, by="vs_mean_key")]
    assert any(name.startswith(("L16H", "L17H")) for name in top), top
