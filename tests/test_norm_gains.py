"""Norm gains and embedding scales are read from what the model does, and QK decompositions are checked.

Gemma's RMSNorm multiplies by ``1 + weight`` and its embedding by ``sqrt(d_model)``; Gemma 2 also
scales scores by ``query_pre_attn_scalar``. Each tiny model here has random, non-zero norm weights,
and every number is compared with a computation on the plain transformers model. Qwen3 (per-head
q/k norms) and BLOOM (ALiBi) cannot be split exactly: their decompositions must be refused. OPT's
bridge hands ``hook_attn_scores`` the pattern: the scores must come from q and k instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny

import headscope
from headscope.errors import BadInput
from headscope.folded_weights import HeadWeights, head_weights, norm_affine
from headscope.logits import logit_attribution, ov_rows
from headscope.qk import decompose_qk, qk_scores
from headscope.qk.decompose import DECOMPOSITION_TOLERANCE, DecompositionMismatch

TEXT = "The cat sat on the mat. The cat sat on the mat."


def _build(kind: str, tokenizer_dir, out):
    import transformers as T

    common = dict(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    specs = {
        "gemma": (T.GemmaConfig, T.GemmaForCausalLM, dict(small, num_key_value_heads=1, head_dim=16)),
        "gemma2": (
            T.Gemma2Config,
            T.Gemma2ForCausalLM,
            dict(small, num_key_value_heads=2, head_dim=16, sliding_window=16, query_pre_attn_scalar=64),
        ),
        "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(small, num_key_value_heads=2, head_dim=16)),
        "opt": (
            T.OPTConfig,
            T.OPTForCausalLM,
            dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=64),
        ),
    }
    C, M, kw = specs[kind]
    torch.manual_seed(0)
    hf = M(C(**common, **kw, max_position_embeddings=256)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:  # random, non-zero gains (Gemma's fresh weights are all zero)
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (0.0 if kind.startswith("gemma") else 1.0))
            elif "embed_tokens" in name:
                p.mul_(20.0)  # larger scores and logits than random init gives
    return save_tiny(hf, tokenizer_dir, out)


@pytest.fixture(scope="module")
def tiny(request, tmp_path_factory, gpt2_tokenizer_dir):
    """(kind, headscope model, plain transformers model); each test names the kinds it is about."""
    from transformers import AutoModelForCausalLM

    d = _build(request.param, gpt2_tokenizer_dir, tmp_path_factory.mktemp(f"tiny-{request.param}"))
    hf = AutoModelForCausalLM.from_pretrained(str(d)).eval().requires_grad_(False)
    return request.param, headscope.load_model(str(d), device="cpu"), hf


def _gemma_gain(norm) -> torch.Tensor:
    return 1.0 + norm.weight.double()  # what Gemma's RMSNorm multiplies by


@torch.no_grad()
def _hf_scores(hf, ids: list[int], layer: int) -> torch.Tensor:
    """``[heads, T, T]`` pre-softmax scores from the plain model: its own q/k projections, RoPE, scaling."""
    attn = hf.model.layers[layer].self_attn
    got = {}
    h = attn.register_forward_pre_hook(lambda m, a, kw: got.update(kw), with_kwargs=True)
    hf(torch.tensor([ids]))
    h.remove()
    x = got["hidden_states"][0].double()  # the attention's input: after the model's own norm
    cfg = hf.config
    dh = cfg.head_dim
    q = (x @ attn.q_proj.weight.double().T).view(len(ids), -1, dh).transpose(0, 1)
    k = (x @ attn.k_proj.weight.double().T).view(len(ids), -1, dh).transpose(0, 1)
    cos, sin = (t[0].double() for t in got["position_embeddings"])
    rot = lambda t: torch.cat([-t[..., dh // 2 :], t[..., : dh // 2]], -1)  # noqa: E731
    q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
    k = k.repeat_interleave(q.shape[0] // k.shape[0], 0)
    scale = getattr(cfg, "query_pre_attn_scalar", None) or dh  # Gemma 2's own scalar, else d_head
    return q @ k.transpose(1, 2) * scale**-0.5


@pytest.mark.parametrize("tiny", ["gemma", "gemma2"], indirect=True)
def test_folded_weights_use_the_gain_the_norm_applies(tiny):
    kind, model, hf = tiny
    w = head_weights(model)
    blk = hf.model.layers[1]
    dh, H = hf.config.head_dim, hf.config.num_attention_heads
    W_Q = blk.self_attn.q_proj.weight.double().T * _gemma_gain(blk.input_layernorm)[:, None]  # [d, H * dh]
    np.testing.assert_allclose(w.W_Q[1, 2].double(), W_Q[:, 2 * dh : 3 * dh], rtol=1e-5, atol=1e-6)
    W_U = hf.lm_head.weight.double().T * _gemma_gain(hf.model.norm)[:, None]
    np.testing.assert_allclose(w.W_U.double(), W_U, rtol=1e-5, atol=1e-6)
    # the embedding as the residual receives it: the table times sqrt(d_model)
    emb = hf.model.embed_tokens(torch.tensor([5, 77, 4000])).double()
    np.testing.assert_allclose(w.W_E[[5, 77, 4000]].double(), emb, rtol=1e-5, atol=1e-6)
    assert float(emb.norm() / hf.model.embed_tokens.weight[[5, 77, 4000]].double().norm()) == pytest.approx(64**0.5)
    assert abs(w.W_Q).sum() > 0 and H == w.n_heads


@pytest.mark.parametrize("tiny", ["gemma"], indirect=True)
def test_gemma_direct_logit_attribution_sums_to_the_models_logit_and_matches_transformers(tiny):
    kind, model, hf = tiny
    res = logit_attribution(model, TEXT)
    assert res.max_abs_error < 1e-5 * max(1.0, np.abs(res.model_logit).max())
    assert np.abs(res.components["float_error"]).max() < 1e-5 * max(1.0, np.abs(res.logit).max())
    # independent: o_proj inputs per head, the final norm's (1 + w) gain and its scale computed here
    z, final = {}, {}
    hooks = [
        b.self_attn.o_proj.register_forward_pre_hook(lambda m, a, l=l: z.__setitem__(l, a[0][0].double()))
        for l, b in enumerate(hf.model.layers)
    ]
    hooks.append(hf.model.norm.register_forward_pre_hook(lambda m, a: final.__setitem__("x", a[0][0].double())))
    with torch.no_grad():
        logits = hf(torch.tensor([res.sequence.ids])).logits[0].double()
    for h in hooks:
        h.remove()
    x = final["x"][:-1]
    scale = (x.square().mean(-1) + hf.model.norm.eps).sqrt()
    tgt = torch.tensor(res.sequence.ids[1:])
    W_U = hf.lm_head.weight.double()
    u = (W_U[tgt] - W_U.mean(0)) * _gemma_gain(hf.model.norm)
    dh = hf.config.head_dim
    for l, blk in enumerate(hf.model.layers):
        W = blk.self_attn.o_proj.weight.double().T
        for h in range(hf.config.num_attention_heads):
            o = z[l][:-1, h * dh : (h + 1) * dh] @ W[h * dh : (h + 1) * dh]
            np.testing.assert_allclose(res.heads[:, l, h], ((o * u).sum(-1) / scale).numpy(), atol=1e-6, rtol=1e-5)
    centred = logits[:-1].gather(-1, tgt[:, None])[:, 0] - logits[:-1].mean(-1)
    np.testing.assert_allclose(res.model_logit, centred.numpy(), atol=1e-5)


@pytest.mark.parametrize("tiny", ["gemma", "gemma2"], indirect=True)
def test_qk_decomposition_reproduces_the_plain_models_scores(tiny):
    kind, model, hf = tiny
    seq = headscope.qk.live.as_sequences(model, TEXT, None)[0]
    ref = _hf_scores(hf, seq.ids, 1)
    assert ref.abs().max() > 0.05  # not a trivially zero score
    for head in range(4):
        d = decompose_qk(model, (1, head), TEXT, query=12, key=5)
        assert d.score == pytest.approx(float(ref[head, 12, 5]), abs=1e-5)
        assert d.max_abs_error < 1e-5
        assert sum(d.key_contrib) == pytest.approx(d.score, abs=1e-9)  # the breakdown adds up


@pytest.mark.parametrize("tiny", ["qwen3"], indirect=True)
def test_qwen3_decomposition_is_refused_with_the_measured_error(tiny):
    kind, model, hf = tiny
    with pytest.raises(DecompositionMismatch) as e:
        decompose_qk(model, (1, 0), TEXT, stripe="attended")  # the stripe analyze_qk explains a head on
    assert e.value.error > DECOMPOSITION_TOLERANCE
    assert "Qwen3ForCausalLM" in e.value.message and "q_norm/k_norm" in e.value.hint
    assert isinstance(e.value, BadInput)
    # the analysis skips only the decompositions, says so in a note and records them
    a = headscope.qk.analyze_qk(model, [TEXT], ["L1H0"], max_tokens=None)
    assert a.decompositions == [] and a.decomposition(1, 0) is None
    (skip,) = a.skipped_decompositions
    assert skip["head"] == "L1H0" and skip["max_abs_error"] == pytest.approx(e.value.error)
    assert any("QK decompositions not shown" in n and "Qwen3ForCausalLM" in n for n in a.notes)
    assert a.to_dict()["decompositions_skipped"][0]["tolerance"] == DECOMPOSITION_TOLERANCE
    assert a.to_frame()["top_key_component"].isna().all()


@pytest.mark.parametrize("tiny", ["opt"], indirect=True)
def test_opt_scores_come_from_q_and_k_and_the_decomposition_matches(tiny):
    kind, model, hf = tiny
    seq = headscope.qk.live.as_sequences(model, TEXT, None)[0]
    attn = hf.model.decoder.layers[1].self_attn
    got = {}
    h = attn.register_forward_pre_hook(lambda m, a, kw: got.update(kw), with_kwargs=True)
    with torch.no_grad():
        out = hf(torch.tensor([seq.ids]), output_attentions=True)
    h.remove()
    x = got["hidden_states"][0].double()
    T = len(seq.ids)
    q = (x @ attn.q_proj.weight.double().T + attn.q_proj.bias.double()).view(T, 4, 16).transpose(0, 1)
    k = (x @ attn.k_proj.weight.double().T + attn.k_proj.bias.double()).view(T, 4, 16).transpose(0, 1)
    ref = q @ k.transpose(1, 2) / 4.0
    live = qk_scores(model, ["L1H2"], TEXT).scores[0][0]
    tril = np.tril(np.ones((T, T), dtype=bool))
    np.testing.assert_allclose(live[tril], ref[2].numpy()[tril], atol=1e-5)
    if out.attentions:  # (eager attention only) and their softmax is the plain model's pattern
        np.testing.assert_allclose(
            torch.softmax(torch.from_numpy(np.where(tril, live, -np.inf)), -1).numpy(),
            out.attentions[1][0, 2].double().numpy(),
            atol=1e-5,
        )
    d = decompose_qk(model, (1, 2), TEXT, query=12, key=5)
    assert d.model_score == pytest.approx(float(ref[2, 12, 5]), abs=1e-5)
    assert d.max_abs_error < 1e-5


def test_norm_affine_reads_norms_without_weights_and_refuses_other_modules():
    ln = torch.nn.LayerNorm(8, elementwise_affine=False)
    assert norm_affine(ln, 8, "layernorm") == (None, None)
    ln = torch.nn.LayerNorm(7)
    with torch.no_grad():
        ln.weight.copy_(torch.arange(7.0) - 2)
        ln.bias.copy_(torch.arange(7.0) / 3)
    g, b = norm_affine(ln, 7, "layernorm")  # odd width: the second probe measures the last gain
    np.testing.assert_allclose(g, ln.weight.detach(), atol=1e-5)
    np.testing.assert_allclose(b, ln.bias.detach(), atol=1e-6)
    with pytest.raises(BadInput, match="does not act as a rmsnorm"):
        norm_affine(torch.nn.Tanh(), 8, "rmsnorm")


def test_a_row_that_prefers_nothing_does_not_rank_its_token_first():
    V, d = 30, 8
    W_E = torch.randn(V, d, generator=torch.Generator().manual_seed(0))
    z = torch.zeros(1, 1, d)
    w = HeadWeights(
        W_Q=torch.eye(d)[None, None],
        W_K=torch.eye(d)[None, None],
        W_V=torch.eye(d)[None, None],
        W_O=torch.zeros(1, 1, d, d),  # writes nothing: every logit in the row ties
        b_Q=z,
        b_K=z,
        b_V=z,
        b_O=torch.zeros(1, d),
        W_E=W_E,
        W_U=W_E.T.clone(),
        W_pos=None,
        kv_head=[0],
        norm="rmsnorm",
    )
    res = ov_rows(w, 0, 0, [3, 7], k=3)
    assert (res.self_rank == V).all()  # ties count against the token: no claim of copying


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_layernorm_is_read_at_its_own_precision_and_a_model_in_it_runs(dtype, tiny_gpt2_dir, tmp_path):
    # was: `headscope induction --model gpt2 --dtype float16` (or bfloat16) refused GPT-2's own LayerNorm:
    # "LayerNorm does not act as a layernorm with a gain and a bias (off by 0.000921 ...)", hint "use a
    # model with such norms": the rounding of float16 taken for a norm of another form
    from typer.testing import CliRunner

    from headscope.cli import app

    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(64)
    with torch.no_grad():
        ln.weight.copy_(1 + 0.5 * torch.randn(64))
        ln.bias.copy_(0.3 * torch.randn(64))
    ln = ln.to(dtype)
    g, b = norm_affine(ln, 64, "layernorm")
    step = torch.finfo(dtype).eps
    np.testing.assert_allclose(g, ln.weight.float().detach(), atol=4 * step)
    np.testing.assert_allclose(b, ln.bias.float().detach(), atol=4 * step)
    squashed = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Tanh()).to(dtype)
    with pytest.raises(BadInput, match="does not act as a layernorm"):  # another form is still refused
        norm_affine(squashed, 64, "layernorm")
    args = ["induction", "--model", str(tiny_gpt2_dir), "--dtype", str(dtype).removeprefix("torch.")]
    args += ["--device", "cpu", "--seq-len", "6", "--batch", "2", "--no-ablate", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
