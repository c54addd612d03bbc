"""Norms after attention and after the MLP (Gemma 2's ``post_attention_layernorm`` / ``post_feedforward_layernorm``,
TransformerLens's ``ln1_post`` / ``ln2_post``) are in every per-head number.

A Gemma 2 layer adds ``RMSNorm_post(sum_h z_h W_O^h)`` to the residual. With that norm's scale frozen at the
run's value, head ``h`` adds ``(z_h W_O^h) * g_post / s_post(p)``: the folded ``W_O`` holds ``g_post`` and the
activation-based numbers divide by ``s_post``. Checked against plain transformers hooks on a tiny Gemma 2
with random norm weights; final logit soft-capping is switched off so the sum can be exact, and switched
on once to check that its miss stays visible.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny

import headscope
from headscope.folded_weights import head_weights
from headscope.logits import logit_attribution
from headscope.logits.dla import direct_effects
from headscope.scan.direct import HeadDirectPass, unembedding

TEXT = "The cat sat on the mat. The cat sat on the mat."


def _build(tokenizer_dir, out, softcap, attn_softcap=50.0):
    import transformers as T

    torch.manual_seed(0)
    cfg = T.Gemma2Config(
        vocab_size=50257,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=16,
        query_pre_attn_scalar=64,
        max_position_embeddings=256,
        final_logit_softcapping=softcap,
        attn_logit_softcapping=attn_softcap,
    )
    hf = T.Gemma2ForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:  # random, non-zero gains (Gemma's fresh weights are all zero)
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "embed_tokens" in name:
                p.mul_(20.0)
    return save_tiny(hf, tokenizer_dir, out)


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory, gpt2_tokenizer_dir):
    """(headscope model, plain transformers model) of a tiny Gemma 2 without final logit soft-capping."""
    from transformers import AutoModelForCausalLM

    d = _build(gpt2_tokenizer_dir, tmp_path_factory.mktemp("tiny-gemma2-post"), None)
    hf = AutoModelForCausalLM.from_pretrained(str(d)).eval().requires_grad_(False)
    return headscope.load_model(str(d), device="cpu"), hf


def _gain(norm) -> torch.Tensor:
    return 1.0 + norm.weight.double()  # what Gemma's RMSNorm multiplies by


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return (x.square().mean(-1, keepdim=True) + eps).sqrt()


def test_folded_W_O_holds_the_post_attention_norm_gain(gemma2):
    model, hf = gemma2
    w = head_weights(model)
    assert w.attn_post_norm
    dh = hf.config.head_dim
    for l, blk in enumerate(hf.model.layers):
        W = blk.self_attn.o_proj.weight.double().T * _gain(blk.post_attention_layernorm)  # [H * dh, d_model]
        for h in range(hf.config.num_attention_heads):
            np.testing.assert_allclose(w.W_O[l, h].double(), W[h * dh : (h + 1) * dh], rtol=1e-5, atol=1e-6)


def test_direct_logit_attribution_sums_to_the_models_logit(gemma2):
    model, _ = gemma2
    res = logit_attribution(model, TEXT)
    size = max(1.0, float(np.abs(res.model_logit).max()))
    assert res.max_abs_error < 1e-4 * size
    # the heads and MLPs explain the residual: nothing large is left for the rounding term
    assert np.abs(res.components["float_error"]).max() < 1e-4 * size


@torch.no_grad()
def test_each_head_and_mlp_matches_plain_transformers(gemma2):
    model, hf = gemma2
    res = logit_attribution(model, TEXT)
    z, attn_out, mlp_out, final = {}, {}, {}, {}
    hooks = []
    for l, b in enumerate(hf.model.layers):
        hooks.append(b.self_attn.o_proj.register_forward_pre_hook(lambda m, a, l=l: z.__setitem__(l, a[0][0].double())))
        hooks.append(
            b.self_attn.o_proj.register_forward_hook(lambda m, a, o, l=l: attn_out.__setitem__(l, o[0].double()))
        )
        hooks.append(
            b.post_feedforward_layernorm.register_forward_hook(
                lambda m, a, o, l=l: mlp_out.__setitem__(l, o[0].double())
            )
        )
    hooks.append(hf.model.norm.register_forward_pre_hook(lambda m, a: final.__setitem__("x", a[0][0].double())))
    logits = hf(torch.tensor([res.sequence.ids])).logits[0].double()
    for h in hooks:
        h.remove()
    eps = hf.config.rms_norm_eps
    s_final = _rms(final["x"][:-1], eps)[:, 0]
    tgt = torch.tensor(res.sequence.ids[1:])
    W_U = hf.lm_head.weight.double()
    u = (W_U[tgt] - W_U.mean(0)) * _gain(hf.model.norm)  # centred over the vocabulary, final gain folded
    dh = hf.config.head_dim
    for l, blk in enumerate(hf.model.layers):
        W = blk.self_attn.o_proj.weight.double().T
        s_post = _rms(attn_out[l][:-1], eps)  # the whole attention output's RMS at each position
        g_post = _gain(blk.post_attention_layernorm)
        for h in range(hf.config.num_attention_heads):
            o = z[l][:-1, h * dh : (h + 1) * dh] @ W[h * dh : (h + 1) * dh] * g_post / s_post
            np.testing.assert_allclose(res.heads[:, l, h], ((o * u).sum(-1) / s_final).numpy(), atol=1e-6, rtol=1e-5)
        mlp = (mlp_out[l][:-1] * u).sum(-1) / s_final
        np.testing.assert_allclose(res.components[f"MLP{l}"], mlp.numpy(), atol=1e-6, rtol=1e-5)
    centred = logits[:-1].gather(-1, tgt[:, None])[:, 0] - logits[:-1].mean(-1)
    np.testing.assert_allclose(res.model_logit, centred.numpy(), atol=1e-5)


@pytest.mark.parametrize("keep", [False, True])
def test_the_scans_direct_effects_divide_by_the_post_norm_scale(gemma2, keep):
    model, _ = gemma2
    tokens = torch.tensor([model.to_tokens(TEXT)[0].tolist()] * 2)
    w = head_weights(model)
    ue = unembedding(model, w)
    full = direct_effects(model, tokens, weights=w, unembed=ue).heads  # [B, P, L, H]
    positions = np.array([1, 4, 7, 10])
    W_O = w.W_O.reshape(w.n_layers, -1, w.W_O.shape[-1]).contiguous()
    run = HeadDirectPass(tokens, w, ue, positions, W_O, keep=keep)
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=run.hooks)
    np.testing.assert_allclose(run.heads().numpy(), full[:, positions], rtol=1e-5, atol=1e-6)


def test_final_logit_soft_capping_stays_flagged(tmp_path_factory, gpt2_tokenizer_dir):
    d = _build(gpt2_tokenizer_dir, tmp_path_factory.mktemp("tiny-gemma2-capped"), 2.0)
    res = logit_attribution(headscope.load_model(str(d), device="cpu"), TEXT)
    size = max(1.0, float(np.abs(res.model_logit).max()))
    # the residual is still explained (heads, MLPs), but the capped logit is not their linear sum: said, not hidden
    assert np.abs(res.components["float_error"]).max() < 1e-4 * size
    assert res.max_abs_error > 1e-2 * size


def test_path_patching_sender_change_is_the_post_normed_change_with_everything_else_frozen(gemma2):
    """Path patching on Gemma 2: a sender's change in the residual is ``post(A + W_O dz) - post(A)`` (not
    ``W_O dz``). Reference: plain transformers on the clean prompts with the sender's head input taken from the
    corrupted run and every later write (this layer's MLP, later layers' attention and MLP) frozen at its clean
    value; the residual entering the final norm must equal the clean one plus headscope's delta."""
    from headscope.circuits import induction_task
    from headscope.circuits.path_patching import sender_deltas
    from headscope.circuits.runs import cache_run

    model, hf = gemma2
    task = induction_task(model, n_examples=3, seq_len=6)
    base, src = cache_run(model, task.clean, task), cache_run(model, task.corrupt, task)
    layers, d_head = hf.model.layers, hf.config.head_dim

    def run(tokens, hooks):
        handles, got = [], {}
        for module, kind, fn in hooks:
            reg = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(reg(fn))
        handles.append(hf.model.norm.register_forward_pre_hook(lambda m, a: got.__setitem__("final", a[0].clone())))
        try:
            with torch.no_grad():
                hf(tokens)
        finally:
            for h in handles:
                h.remove()
        return got["final"]

    def capture(tokens):
        store = {}
        hooks = [
            (layers[i].self_attn.o_proj, "pre", lambda m, a, i=i: store.__setitem__(("z", i), a[0].clone()))
            for i in range(len(layers))
        ]
        for i, layer in enumerate(layers):
            for name in ("post_attention_layernorm", "post_feedforward_layernorm"):
                hooks.append(
                    (getattr(layer, name), "out", lambda m, a, o, k=(name, i): store.__setitem__(k, o.clone()))
                )
        run(tokens, hooks)
        return store

    clean, corrupted = capture(task.clean), capture(task.corrupt)
    for sender in [(0, 1), (1, 3)]:
        l, h = sender
        cols = slice(h * d_head, (h + 1) * d_head)

        def patch_z(m, a):
            z = a[0].clone()
            z[..., cols] = corrupted[("z", l)][..., cols]
            return (z,)

        hooks = [(layers[l].self_attn.o_proj, "pre", patch_z)]
        frozen = [("post_feedforward_layernorm", l)] + [
            (name, i)
            for i in range(l + 1, len(layers))
            for name in ("post_attention_layernorm", "post_feedforward_layernorm")
        ]
        for name, i in frozen:
            hooks.append((getattr(layers[i], name), "out", lambda m, a, o, k=(name, i): clean[k]))
        want = run(task.clean, hooks)
        got = base.resid_final + sender_deltas(model, base, src, [sender])[0]
        change = (want - base.resid_final).abs().max()
        assert change > 1e-2  # the sender matters on this model, so the check can fail
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4 * float(want.abs().max()))
        naive = (
            base.resid_final
            + (corrupted[("z", l)][..., cols] - clean[("z", l)][..., cols])
            @ layers[l].self_attn.o_proj.weight[:, cols].T
        )
        assert (naive - want).abs().max() > 10 * 1e-4 * float(want.abs().max())  # W_O dz alone would be wrong


def test_the_explorer_refuses_a_model_with_a_post_attention_norm_before_it_starts(tmp_path, gpt2_tokenizer_dir):
    """Its per-head writes would miss the post norm's scale: refused in one line (here with attention soft-capping
    off, so the fused path would otherwise run)."""
    from headscope.errors import BadInput
    from headscope.explorer.engine import Explorer

    model = headscope.load_model(str(_build(gpt2_tokenizer_dir, tmp_path / "g2", None, None)), device="cpu")
    with pytest.raises(BadInput, match="norm after attention"):
        Explorer(model)


def test_circuit_metrics_on_a_soft_capped_model_are_the_models_own(tmp_path, gpt2_tokenizer_dir):
    """Gemma 2 soft-caps its logits after the unembedding (in transformers' forward). Patching reads the
    final-normed residual and unembeds only what the metric needs: the residual must not be soft-capped, and the
    metric must be the capped logits' (checked against plain transformers, with a cap small enough to matter)."""
    from transformers import AutoModelForCausalLM

    from headscope.circuits import induction_task
    from headscope.circuits.runs import final_normed, metric_of_normed
    from headscope.circuits.tasks import metric_at

    d = _build(gpt2_tokenizer_dir, tmp_path / "capped", 0.5)
    model, hf = headscope.load_model(str(d), device="cpu"), AutoModelForCausalLM.from_pretrained(str(d)).eval()
    task = induction_task(model, n_examples=3, seq_len=6)
    with torch.no_grad():
        out = hf(task.clean, output_hidden_states=True)
        normed = final_normed(model, task.clean)
        got = metric_of_normed(model, normed, task)
    np.testing.assert_allclose(normed.numpy(), out.hidden_states[-1].numpy(), atol=1e-5)
    logits = out.logits
    rows = logits.gather(1, task.positions[..., None].expand(-1, -1, logits.shape[-1]))
    want = metric_at(rows, task)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    uncapped = metric_at(
        hf.lm_head(out.hidden_states[-1]).gather(1, task.positions[..., None].expand(-1, -1, logits.shape[-1])), task
    )
    assert (uncapped - want).abs().max() > 1e-3  # the cap matters here, so the test can fail
