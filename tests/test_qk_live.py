"""Live QK scores are the attention logits plain `transformers` computes on the same tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.models.inputs import encode_texts as prepare_texts
from headscope.qk import qk_scores

TEXT = "The cat sat on the mat. The cat sat on the mat."


def _hf_model(model):
    """A fresh, plain Hugging Face model from the same directory (no bridge in the way)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model.source.path, attn_implementation="eager").eval()


@torch.no_grad()
def hf_attention_logits(model, ids: list[int], layer: int) -> torch.Tensor:
    """``[n_heads, T, T]`` pre-softmax q.k * scaling, recomputed from the HF modules' own projections."""
    hf = _hf_model(model)
    grabbed = {}
    if hf.config.model_type == "gpt2":
        attn = hf.transformer.h[layer].attn
        attn.c_attn.register_forward_hook(lambda m, i, o: grabbed.setdefault("qkv", o))
        hf(torch.tensor([ids]))
        q, k, _ = grabbed["qkv"][0].split(hf.config.n_embd, dim=-1)
        T, H = len(ids), hf.config.n_head
        q, k = (t.view(T, H, -1).transpose(0, 1) for t in (q, k))
        return q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    attn = hf.model.layers[layer].self_attn
    attn.register_forward_pre_hook(
        lambda m, a, kw: grabbed.update(h=kw.get("hidden_states", a[0] if a else None), pe=kw["position_embeddings"]),
        with_kwargs=True,
    )
    hf(torch.tensor([ids]))
    h, (cos, sin) = grabbed["h"], grabbed["pe"]
    shape = (*h.shape[:-1], -1, attn.head_dim)
    q = attn.q_proj(h).view(shape).transpose(1, 2)
    k = attn.k_proj(h).view(shape).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)  # grouped-query attention: query head h reads kv head h // group
    return (q @ k.transpose(-1, -2) * attn.scaling)[0]


@torch.no_grad()
def hf_attention_pattern(model, ids, layer):
    out = _hf_model(model)(torch.tensor([ids]), output_attentions=True)
    return out.attentions[layer][0]


def _check_against_hf(model, heads, tol):
    res = qk_scores(model, heads, TEXT)
    ids = res.sequences[0].ids
    for layer in sorted({l for l, _ in heads}):
        ref = hf_attention_logits(model, ids, layer)
        pat = hf_attention_pattern(model, ids, layer)
        for n, (l, h) in enumerate(res.heads):
            if l != layer:
                continue
            got = res.scores[0][n]
            lower = np.tril(np.ones_like(got, dtype=bool))
            np.testing.assert_allclose(got[lower], ref[h].numpy()[lower], atol=tol, rtol=1e-5)
            assert np.isnan(got[~lower]).all(), "masked cells must be NaN, not zeros or -1e38"
            np.testing.assert_allclose(res.patterns[0][n], pat[h].numpy(), atol=1e-5)


def test_scores_equal_hf_logits_on_tiny_gpt2(tiny_gpt2):
    _check_against_hf(tiny_gpt2, [(0, 1), (1, 2), (1, 3)], tol=1e-5)


def test_scores_equal_hf_logits_on_tiny_llama_with_grouped_query_heads(tiny_llama):
    # 4 query heads over 2 kv heads: heads 0 and 1 share keys, 2 and 3 share keys
    _check_against_hf(tiny_llama, [(1, 0), (1, 1), (2, 2), (2, 3)], tol=1e-5)


@pytest.mark.smollm2
def test_scores_equal_hf_logits_on_smollm2(smollm2):
    # 9 query heads over 3 kv heads; heads 0, 4 and 8 sit in different kv groups
    _check_against_hf(smollm2, [(3, 0), (3, 4), (3, 8), (18, 6)], tol=2e-4)


def test_result_views_are_consistent(tiny_gpt2):
    res = qk_scores(tiny_gpt2, ["1.2", (0, 1)], [TEXT, "a b c"])
    assert res.heads == [(1, 2), (0, 1)]
    frame = res.to_frame()
    T0, T1 = len(res.sequences[0]), len(res.sequences[1])
    assert len(frame) == 2 * (T0 * (T0 + 1) // 2 + T1 * (T1 + 1) // 2)  # unmasked cells only
    assert frame["score"].notna().all()
    doc = res.to_dict()
    assert doc["sequences"][0]["heads"]["L1H2"]["scores"][0][1] is None  # masked -> null in JSON
    assert "<table" in res._repr_html_() and "<img" in res._repr_html_()


def test_text_longer_than_the_context_is_truncated_and_says_so(tiny_gpt2):
    long = " word" * 400  # the tiny GPT-2 has a 256-token context
    (seq,) = prepare_texts(tiny_gpt2, [long])
    assert len(seq) == 256
    assert "cut from 401 to 256" in seq.notes[0] and "context" in seq.notes[0]
    (seq,) = prepare_texts(tiny_gpt2, [long], max_tokens=20)
    assert len(seq) == 20 and "to fit max_tokens=20" in seq.notes[0]  # names the limit that applied


def test_identical_texts_stay_two_sequences_through_the_analysis(tiny_gpt2):
    from headscope.qk import analyze_qk

    text = "a b c a b c"
    a = analyze_qk(tiny_gpt2, [text, text], heads=["L1H0"])
    assert [d.sequence_index for d in a.decompositions] == [0, 1]  # known by position, never by text
    doc = a.to_dict()
    assert [d["sequence"] for d in doc["decompositions"]] == [0, 1] and len(doc["live"]["sequences"]) == 2


def test_score_definition_says_rotary_only_where_the_model_is_rotary(tiny_gpt2, tiny_llama):
    learned = qk_scores(tiny_gpt2, "1.0", ["a b c a b c"])
    rope = qk_scores(tiny_llama, "1.0", ["a b c a b c"])
    assert learned.rotary is False and rope.rotary is True
    assert "rotary applied" not in learned.to_dict()["definition"] and "no rotary" in learned.definition
    assert "(rotary applied)" in rope.to_dict()["definition"]
