"""Direct logit attribution sums to the model's logit and matches plain transformers; OV rows copy and suppress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headscope
from headscope.errors import BadInput
from headscope.folded_weights import HeadWeights
from headscope.logits import induction_stories, logit_attribution, ov_circuit, ov_rows, repeat_logit_effects
from headscope.logits.dla import direct_effects
from headscope.logits.repeats import target_groups
from headscope.scan.sequences import RepeatLayout, repeated_tokens

TEXT = "The cat sat on the mat. The cat sat on the mat, and the dog sat too."


# --- an independent computation with plain transformers ------------------------------------


def _hf_parts(hf):
    """(attention output projections, final norm, 'conv1d'|'linear') of a GPT-2 or Llama HF model."""
    if hasattr(hf, "transformer"):  # GPT-2: Conv1D, y = x @ weight + bias, weight [in, out]
        return [b.attn.c_proj for b in hf.transformer.h], hf.transformer.ln_f, "conv1d"
    return [b.self_attn.o_proj for b in hf.model.layers], hf.model.norm, "linear"


@torch.no_grad()
def hf_head_effects(hf, ids: list[int], n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """``[P, L, H]`` direct effects and ``[P]`` centred logits, from a plain HF model's own forward pass.

    Head outputs: the input of the attention output projection (forward pre-hook), split per
    head and multiplied by that head's slice of the projection weight. Final norm scale:
    computed here from the final residual (the norm's input), not read from any hook.
    """
    projs, norm, kind = _hf_parts(hf)
    z, final = {}, {}
    handles = [
        p.register_forward_pre_hook(lambda m, a, l=l: z.__setitem__(l, a[0][0].double())) for l, p in enumerate(projs)
    ]
    handles.append(norm.register_forward_pre_hook(lambda m, a: final.__setitem__("x", a[0][0].double())))
    logits = hf(torch.tensor([ids])).logits[0].double()
    for h in handles:
        h.remove()
    x = final["x"][:-1]  # [P, d]
    layernorm = isinstance(norm, torch.nn.LayerNorm)
    eps = norm.eps if layernorm else norm.variance_epsilon
    if layernorm:
        scale = (x.var(-1, unbiased=False) + eps).sqrt()
    else:
        scale = (x.square().mean(-1) + eps).sqrt()
    W_U = hf.lm_head.weight.double()  # [V, d]
    tgt = torch.tensor(ids[1:])
    u = (W_U[tgt] - W_U.mean(0)) * norm.weight.double()  # [P, d], gain applied to the direction
    out = np.zeros((len(ids) - 1, len(projs), n_heads))
    for l, p in enumerate(projs):
        W = p.weight.double() if kind == "conv1d" else p.weight.double().T  # [H * d_head, d]
        d_head = W.shape[0] // n_heads
        for h in range(n_heads):
            o = z[l][:-1, h * d_head : (h + 1) * d_head] @ W[h * d_head : (h + 1) * d_head]  # [P, d]
            if layernorm:
                o = o - o.mean(-1, keepdim=True)
            out[:, l, h] = ((o * u).sum(-1) / scale).numpy()
    centred = logits[:-1].gather(-1, tgt[:, None])[:, 0] - logits[:-1].mean(-1)
    return out, centred.numpy()


def _hf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path)).eval()


@pytest.fixture(scope="module")
def biased_gpt2_dir(tiny_gpt2_dir, tmp_path_factory):
    """tiny GPT-2 with every bias and norm parameter randomised, so bias and gain paths matter."""
    hf = _hf_model(tiny_gpt2_dir)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
        hf.transformer.wte.weight.mul_(20)  # larger logits than random init gives
    out = tmp_path_factory.mktemp("biased-gpt2")
    hf.save_pretrained(str(out))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tiny_gpt2_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def biased_gpt2(biased_gpt2_dir):
    return headscope.load_model(str(biased_gpt2_dir), device="cpu")


def _check_sums(res, tol):
    total = res.heads.sum((1, 2)) + sum(res.components.values())
    np.testing.assert_allclose(total, res.logit, atol=1e-9)
    np.testing.assert_allclose(res.logit, res.model_logit, atol=tol)
    # the hooked pieces must cover the residual: the rounding term is tiny next to the logit
    assert np.abs(res.components["float_error"]).max() < 1e-4 * max(1.0, np.abs(res.logit).max())


# --- (a) everything sums to the model's own centred logit ----------------------------------


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama", "biased_gpt2"])
def test_components_sum_to_the_models_centred_logit(request, name):
    model = request.getfixturevalue(name)
    res = logit_attribution(model, TEXT)
    _check_sums(res, 1e-5)
    assert res.heads.shape == (len(res.sequence) - 1, model.cfg.n_layers, model.cfg.n_heads)
    assert res.target_ids == res.sequence.ids[1:]
    assert np.abs(res.heads).max() > 1e-3  # the heads are not a trivial zero


def test_components_name_embeddings_mlps_and_biases(tiny_gpt2, tiny_llama, biased_gpt2):
    assert list(logit_attribution(tiny_gpt2, TEXT).components) == [
        "embed",
        "pos_embed",
        "MLP0",
        "MLP1",
        "unembed_bias",
        "float_error",
    ]
    assert list(logit_attribution(tiny_llama, TEXT).components) == [
        "embed",
        "MLP0",
        "MLP1",
        "MLP2",
        "unembed_bias",
        "float_error",
    ]
    res = logit_attribution(biased_gpt2, TEXT)
    assert "attn_bias" in res.components
    assert np.abs(res.components["unembed_bias"]).max() > 1e-3  # ln_final's bias through W_U


@pytest.mark.smollm2
def test_smollm2_components_sum_to_its_centred_logit(smollm2):
    res = logit_attribution(smollm2, TEXT)
    _check_sums(res, 1e-4)


def test_batched_direct_effects_equal_one_sequence_at_a_time(tiny_llama):
    toks = torch.randint(0, 50000, (3, 9), generator=torch.Generator().manual_seed(3))
    both = direct_effects(tiny_llama, toks)
    one = direct_effects(tiny_llama, toks[1:2])
    np.testing.assert_allclose(both.heads[1], one.heads[0], atol=1e-9)
    np.testing.assert_allclose(both.logit, both.model_logit, atol=1e-5)


# --- (b) per-head numbers equal plain transformers -----------------------------------------


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama", "biased_gpt2"])
def test_head_effects_equal_plain_transformers(request, name):
    model = request.getfixturevalue(name)
    hf = _hf_model(request.getfixturevalue(f"{name}_dir"))
    res = logit_attribution(model, TEXT)
    expect, centred = hf_head_effects(hf, res.sequence.ids, model.cfg.n_heads)
    np.testing.assert_allclose(res.heads, expect, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(res.model_logit, centred, atol=1e-5)


@pytest.mark.smollm2
def test_smollm2_head_effects_equal_plain_transformers(smollm2):
    hf = _hf_model(smollm2.source.path)
    res = logit_attribution(smollm2, TEXT)
    expect, centred = hf_head_effects(hf, res.sequence.ids, smollm2.cfg.n_heads)
    np.testing.assert_allclose(res.heads, expect, atol=1e-4)
    np.testing.assert_allclose(res.logit, centred, atol=1e-4)


# --- repeated tokens -------------------------------------------------------------------------


def test_target_groups_follow_the_repeats():
    first, later = target_groups(RepeatLayout(seq_len=5, repeats=3, bos=True))  # 16 tokens
    assert first.tolist() == [0, 1, 2, 3, 4]  # positions 0..4 predict tokens 1..5 (repeat 1)
    # positions 5..14 predict tokens 6..15; token 6 opens repeat 2 after a pair seen nowhere before
    assert later.tolist() == [6, 7, 8, 9, 10, 11, 12, 13, 14]
    first, later = target_groups(RepeatLayout(seq_len=5, repeats=2, bos=False))
    assert first.tolist() == [0, 1, 2, 3]  # token 0 is never a target
    assert later.tolist() == [5, 6, 7, 8]  # token 5 opens repeat 2


def test_repeat_means_equal_direct_effects_averaged_by_hand(tiny_gpt2):
    rt = repeated_tokens(tiny_gpt2, seq_len=6, batch=5, repeats=2, seed=1)
    res = repeat_logit_effects(tiny_gpt2, tokens=rt, chunk_size=2)  # chunks must add up exactly
    d = direct_effects(tiny_gpt2, rt.tokens)
    first, later = target_groups(rt.layout)
    np.testing.assert_allclose(res.first, d.heads[:, first].mean((0, 1)), atol=1e-10)
    np.testing.assert_allclose(res.later, d.heads[:, later].mean((0, 1)), atol=1e-10)
    assert res.n_later == 5 * 5 and res.max_abs_error < 1e-5
    total = res.later.sum() + sum(res.components_later.values())
    assert abs(total - res.logit_later) < 1e-5
    assert res.to_frame().shape == (tiny_gpt2.cfg.n_layers * tiny_gpt2.cfg.n_heads, 6)


@pytest.mark.smollm2
def test_smollm2_heads_raise_the_copied_tokens_logit(smollm2):
    res = repeat_logit_effects(smollm2, seq_len=30, batch=4)
    assert res.max_abs_error < 1e-4
    assert res.logit_later > res.logit_first + 5  # induction works: copies are predicted
    assert res.later.sum() > res.first.sum()  # and heads, together, write part of it directly


# --- (c) OV rows: hand-made heads with known answers -----------------------------------------


def _one_head(W_E: torch.Tensor, W_O_sign: float, norm: str = "rmsnorm") -> HeadWeights:
    V, d = W_E.shape
    eye = torch.eye(d)[None, None]
    z = torch.zeros(1, 1, d)
    return HeadWeights(
        W_Q=eye.clone(),
        W_K=eye.clone(),
        W_V=eye.clone(),
        W_O=W_O_sign * eye,
        b_Q=z,
        b_K=z,
        b_V=z,
        b_O=torch.zeros(1, d),
        W_E=W_E,
        W_U=W_E.T.clone(),
        W_pos=None,
        kv_head=[0],
        norm=norm,
    )


def _unit_embeddings(V=40, d=16, seed=0):
    W = torch.randn(V, d, generator=torch.Generator().manual_seed(seed))
    return W / W.norm(dim=-1, keepdim=True) * d**0.5  # every token the same norm: self wins a tied W_U


def test_a_head_built_to_copy_ranks_every_token_first_in_its_own_row():
    W_E = _unit_embeddings()
    res = ov_rows(_one_head(W_E, +1.0), 0, 0, range(40), k=3)
    assert (res.self_rank == 1).all()
    assert (res.top_ids[:, 0] == np.arange(40)).all()
    dense = W_E.double() @ W_E.double().T  # rms of each row is 1, W_V = W_O = I
    dense -= dense.mean(-1, keepdim=True)
    np.testing.assert_allclose(res.self_value, dense.diagonal().numpy(), rtol=1e-5)
    np.testing.assert_allclose(res.top_values[:, 1], dense.topk(2).values[:, 1].numpy(), rtol=1e-5)


def test_a_head_built_to_suppress_ranks_every_token_last():
    res = ov_rows(_one_head(_unit_embeddings(), -1.0), 0, 0, [3, 7, 11], k=3)
    assert (res.self_rank == 40).all()
    assert res.bottom_ids[:, 0].tolist() == [3, 7, 11]
    assert (res.self_value < 0).all()


def test_layernorm_ov_row_centres_the_embedding_and_the_output():
    W_E = torch.randn(30, 8, generator=torch.Generator().manual_seed(2)) + 0.7  # rows far from mean zero
    w = _one_head(W_E, 1.0, norm="layernorm")
    w.W_O = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    res = ov_rows(w, 0, 0, [0, 5], k=30, eps=1e-5)
    x = W_E[[0, 5]].double()
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.square().mean(-1, keepdim=True) + 1e-5).sqrt()
    out = x @ w.W_O[0, 0].double()
    out = out - out.mean(-1, keepdim=True)
    row = out @ W_E.double().T
    row -= row.mean(-1, keepdim=True)
    np.testing.assert_allclose(np.sort(res.top_values, axis=1), np.sort(row.numpy(), axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_ov_row_equals_a_dense_row_from_plain_transformers(request, name):
    model = request.getfixturevalue(name)
    hf = _hf_model(request.getfixturevalue(f"{name}_dir"))
    layer, head, tok = 1, 3, 464
    res = ov_circuit(
        model, (layer, head), [tok], k=5, embedding="embed"
    )  # the direct path; block 0: test_copying_block0
    with torch.no_grad():
        if name == "tiny_gpt2":
            blk = hf.transformer.h[layer]
            e = hf.transformer.wte.weight[tok].double()
            x = e - e.mean()
            x = x / (x.square().mean() + blk.ln_1.eps).sqrt() * blk.ln_1.weight.double()
            d = e.shape[0]
            dh = d // model.cfg.n_heads
            W_V = blk.attn.c_attn.weight.double()[:, 2 * d + head * dh : 2 * d + (head + 1) * dh]
            out = x @ W_V @ blk.attn.c_proj.weight.double()[head * dh : (head + 1) * dh]
            out = (out - out.mean()) * hf.transformer.ln_f.weight.double()
        else:
            blk = hf.model.layers[layer]
            e = hf.model.embed_tokens.weight[tok].double()
            x = (
                e
                / (e.square().mean() + blk.input_layernorm.variance_epsilon).sqrt()
                * blk.input_layernorm.weight.double()
            )
            dh = hf.config.hidden_size // hf.config.num_attention_heads
            kv = head // (hf.config.num_attention_heads // hf.config.num_key_value_heads)  # GQA sharing
            W_V = blk.self_attn.v_proj.weight.double()[kv * dh : (kv + 1) * dh].T
            out = x @ W_V @ blk.self_attn.o_proj.weight.double()[:, head * dh : (head + 1) * dh].T
            out = out * hf.model.norm.weight.double()
        row = hf.lm_head.weight.double() @ out
        row -= row.mean()
    np.testing.assert_allclose(res.top_values[0], row.topk(5).values.numpy(), rtol=1e-4, atol=1e-6)
    assert res.self_rank[0] == int((row >= row[tok]).sum())  # ties count against the token


# --- (d) bad input -------------------------------------------------------------------------


def test_multi_token_names_are_refused_with_how_they_tokenise(tiny_gpt2):
    with pytest.raises(BadInput) as exc:
        ov_circuit(tiny_gpt2, "1.0", [" cat", "catastrophically"])
    msg = str(exc.value)
    assert "'catastrophically' -> 4 tokens" in msg and "'ast'" in msg
    assert "OV source tokens" in msg


def test_bad_heads_ids_and_empty_inputs_are_refused(tiny_gpt2):
    with pytest.raises(BadInput, match="layer 7 does not exist"):
        ov_circuit(tiny_gpt2, "7.0", [" cat"])
    with pytest.raises(BadInput, match="outside the vocabulary"):
        ov_circuit(tiny_gpt2, "1.0", [10**6])
    with pytest.raises(BadInput, match="no source tokens"):
        ov_circuit(tiny_gpt2, "1.0")
    with pytest.raises(BadInput, match="k must be at least 1"):  # it returned rows of nothing
        ov_circuit(tiny_gpt2, "1.0", [" cat"], k=0)
    with pytest.raises(BadInput, match="empty"):
        logit_attribution(tiny_gpt2, "   ")


def test_ov_sources_from_a_text_are_its_distinct_tokens_without_bos(tiny_gpt2):
    res = ov_circuit(tiny_gpt2, "1.0", text="the cat the cat", k=4)
    assert res.token_labels == ["the", " cat", " the"]
    assert res.to_frame().shape[0] == 3 and '"self_rank"' in res.to_json()


# --- the story and the figures --------------------------------------------------------------


def test_ov_sources_come_from_every_text_given(tiny_gpt2):
    res = ov_circuit(tiny_gpt2, "1.0", text=["the cat", "a dog"], k=4)
    assert res.token_labels == ["the", " cat", "a", " dog"]


def test_a_per_text_analysis_refuses_several_texts_and_non_text(tiny_gpt2):
    """logit_attribution and decompose_qk read one text: a second one used to be dropped without a word."""
    with pytest.raises(BadInput, match="logit_attribution reads one text; 2 were given"):
        logit_attribution(tiny_gpt2, ["the cat", "a dog"])
    with pytest.raises(BadInput, match="decompose_qk reads one text"):
        headscope.decompose_qk(tiny_gpt2, "1.0", ["the cat the cat", "a dog a dog"])
    with pytest.raises(BadInput, match="is not a string"):
        logit_attribution(tiny_gpt2, 5)
    with pytest.raises(BadInput, match="every text must be a string"):
        headscope.qk_scores(tiny_gpt2, ["1.0"], ["the cat", 7])


def test_story_gathers_the_numbers_of_one_head():
    L, H = 3, 2
    ind, prev, cop = np.zeros((L, H)), np.zeros((L, H)), np.zeros((L, H))
    ind[2, 1], prev[1, 0], cop[2, 1] = 0.8, 0.9, 0.7
    kc = np.full((L, H, L, H), np.nan)
    kc[0, :, 1:, :], kc[1, :, 2:, :] = 0.05, 0.1
    kc[1, 0, 2, 1] = 0.4
    later = np.zeros((L, H))
    later[2, 1] = 1.5
    abl = [
        {"kind": "head", "layer": 2, "head": 1, "loss_increase": 0.3},
        {"kind": "all_top", "layer": None, "head": None, "loss_increase": 2.0},
    ]
    st = induction_stories(
        [(2, 1)],
        "toy",
        induction=ind,
        previous_token=prev,
        k_composition=kc,
        copying=cop,
        dla_later=later,
        ablation=abl,
    )
    s = st.stories[0]
    assert s.label == "L2H1" and s.k_source["head"] == "L1H0"
    assert s.k_source["previous_token"] == 0.9 and s.induction == 0.8 and s.copying == 0.7
    assert s.dla_later == 1.5 and s.ablation_delta_loss == 0.3 and s.dla_first is None
    assert s.ablation_interval is None and s.ablation_verdict is None  # none was given: none is made up
    assert "given without an interval, so no verdict" in " ".join(st_findings(s))
    assert st.to_frame().loc[0, "k_source"] == "L1H0" and '"L2H1"' in st.to_json()


def st_findings(s):
    from headscope.results.logit_results import ablation_finding

    return [ablation_finding(s)]


def test_figures_draw_from_results(tiny_gpt2, tmp_path):
    from headscope.render.logit_figures import ov_row_bars, repeat_effect_heatmap, token_head_heatmap

    res = logit_attribution(tiny_gpt2, TEXT)
    rep = repeat_logit_effects(tiny_gpt2, seq_len=5, batch=2)
    ov = ov_circuit(tiny_gpt2, "1.0", [" cat"], k=5)
    for n, fig in enumerate(
        [
            token_head_heatmap(res, [(0, 1), (1, 2)]),
            repeat_effect_heatmap(rep, outline=[(1, 1)]),
            repeat_effect_heatmap(rep, "rise"),
            ov_row_bars(ov),
        ]
    ):
        fig.savefig(tmp_path / f"{n}.png")
    assert len(list(tmp_path.glob("*.png"))) == 4
    tick_labels = [t.get_text() for t in token_head_heatmap(res).axes[0].get_yticklabels()]
    assert tick_labels[1] == "The → ·cat"
