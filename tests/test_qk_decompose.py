"""Decompositions sum back to the score, match the model's own logits, and handle rotary and GQA."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from rich.console import Console

from headscope.errors import BadInput
from headscope.folded_weights import head_weights
from headscope.models.inputs import encode_texts as prepare_texts
from headscope.qk import analyze_qk, decompose_qk
from headscope.qk.decompose import capture_residual, head_vectors, stripe_pairs
from headscope.render.lookup import view_of

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
    with pytest.raises(BadInput, match="outside the sequence of 5 tokens") as exc:
        decompose_qk(tiny_gpt2, "1.2", "one two three four", query=9)
    # the hint's range is the accepted one: 0..4 and -1..-5 (position 0 included: it attends to itself only)
    assert "from 0 to 4" in exc.value.hint and "-1 to -5" in exc.value.hint, exc.value.hint
    for q in (0, 4, -1, -5):
        dec = decompose_qk(tiny_gpt2, "1.2", "one two three four", query=q)
        assert dec.pairs[0][0] == q % 5
    first = decompose_qk(tiny_gpt2, "1.2", "one two three four", query=-5)
    assert first.pairs == [(0, 0)] and not first.key_vs_mean.any() and not first.query_vs_mean.any()
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


def test_raises_most_is_the_largest_positive_vs_mean_not_the_largest_magnitude(tiny_gpt2):
    """Tiny GPT-2, L1H2 on the stripe: pos_embed has the largest |vs mean key| but lowers the score; MLP0 raises it."""
    dec = decompose_qk(tiny_gpt2, "1.2", "The cat sat. The cat sat.")
    ((by_size, v),) = dec.top("key", 1, by="vs_mean_key")
    assert v < 0  # the case the column got wrong
    name, best = dec.raises_most("key")
    assert best > 0 and name != by_size
    assert best == max(x for n, x in zip(dec.key_names, dec.key_vs_mean) if n != "float_error")
    q_name, q_best = dec.raises_most("query")
    assert q_best == max(x for n, x in zip(dec.query_names, dec.query_vs_mean) if n != "float_error")
    assert dec.to_dict()["raises_most"]["key"] == {"component": name, "vs_mean_key": pytest.approx(best, abs=1e-6)}
    assert dec.to_dict()["raises_most"]["query"]["component"] == q_name
    lowered = replace(dec, key_vs_mean=-abs(dec.key_vs_mean), query_vs_mean=-abs(dec.query_vs_mean))
    assert lowered.raises_most("key") is None and lowered.raises_most("query") is None
    assert lowered.to_dict()["raises_most"]["key"] is None


def test_summary_findings_and_frame_name_the_component_that_raises_the_score(tiny_gpt2):
    """The terminal table, findings and to_frame say "raises most" and show exactly that (or that none does)."""
    a = analyze_qk(tiny_gpt2, ["The cat sat. The cat sat."], ["1.2"], max_memory_gb=None)
    L, H = 2, 4
    a.scan_scores = {"induction": np.ones((L, H)), "previous_token": np.zeros((L, H))}  # treat L1H2 as induction
    # on the induction stripe (the analysis takes the stripe the head attends most; here it must be this one)
    a.decompositions = [decompose_qk(tiny_gpt2, "1.2", "The cat sat. The cat sat.")]
    dec = a.decomposition(1, 2)
    assert dec is not None and dec.stripe == "induction"
    name, v = dec.raises_most("key")
    ((by_size, _),) = dec.top("key", 1, by="vs_mean_key")
    assert name != by_size

    def table() -> str:
        con = Console(record=True, width=250, file=io.StringIO())
        view_of(a).terminal(a, con)
        return " ".join(con.export_text().split())

    said = table()
    assert "key side: raises most" in said and f"{name} {v:+.3g}" in said and by_size not in said
    assert any(f"most raises the score above the query's other keys is {name} " in f for f in a.findings())
    row = a.to_frame().iloc[0]
    assert row["key_raises_most"] == name and row["key_raises_most_vs_mean_key"] == pytest.approx(v)
    assert row["query_raises_most"] == dec.raises_most("query")[0] and row["top_key_component"] == name
    a.decompositions = [replace(dec, key_vs_mean=-abs(dec.key_vs_mean))]
    assert "none raises it" in table()
    assert any("no key-side component raises the score" in f for f in a.findings())
    assert a.to_frame().iloc[0]["key_raises_most"] is None
