"""The copying score through the block-0 effective embedding, computed by hand from the HF modules.

Reference for each tiny model (GPT-2: LayerNorm, learned positions; Llama: RMSNorm, grouped-query):
every token alone through the Hugging Face block 0 (position embedding left out, as headscope's
effective embedding does: only the token's identity goes in), the head's W_V / W_O and the
unembedding sliced out of the HF modules with the norm gains folded, the norms applied as
TransformerLens's processed weights do (LayerNorm: centred along d_model; W_U centred over the
vocabulary), and the eigenvalues of the d_model x d_model product (W_V W_O)(W_U X) taken with
numpy -- the other side of the cyclic product headscope uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from headscope.folded_weights import head_weights
from headscope.logits import ov_circuit
from headscope.models.embedding import weight_inputs
from headscope.scores import SCORES, opposite_reason, opposite_roles, score
from headscope.scores.copying import copying_direct_weight_score, copying_weight_score


def _ln(x, mod):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], mod.weight, mod.bias, mod.eps)


def _rms(x, mod):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon) * mod.weight


@torch.no_grad()
def _gpt2_by_hand(hf):
    """X [V, d] (block 0 on each token alone), and per (layer, head) W_V [d, dh], W_O [dh, d]; W_U [d, V]."""
    tr, d = hf.transformer, hf.config.n_embd
    H = hf.config.n_head
    dh = d // H
    x = tr.wte.weight.double()
    b0 = tr.h[0]
    qkv = _ln(x.float(), b0.ln_1).double() @ b0.attn.c_attn.weight.double() + b0.attn.c_attn.bias.double()
    v = qkv[:, 2 * d :]  # one key: the token attends to itself fully, so the head outputs its value
    x = x + v @ b0.attn.c_proj.weight.double() + b0.attn.c_proj.bias.double()
    x = x + b0.mlp(_ln(x.float(), b0.ln_2)).double()
    heads = {}
    for l, blk in enumerate(tr.h):
        Wv = blk.attn.c_attn.weight.double()[:, 2 * d :] * blk.ln_1.weight.double()[:, None]
        Wo = blk.attn.c_proj.weight.double()
        for h in range(H):
            heads[l, h] = (Wv[:, h * dh : (h + 1) * dh], Wo[h * dh : (h + 1) * dh])
    W_U = hf.lm_head.weight.double().T * tr.ln_f.weight.double()[:, None]
    return x, heads, W_U, "layernorm"


@torch.no_grad()
def _llama_by_hand(hf):
    m, cfg = hf.model, hf.config
    H, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = cfg.hidden_size // H
    x = m.embed_tokens.weight.double()
    b0 = m.layers[0]
    v = (_rms(x.float(), b0.input_layernorm) @ b0.self_attn.v_proj.weight.T).double()  # [V, kv * dh]
    v = v.reshape(-1, kv, dh).repeat_interleave(H // kv, dim=1).reshape(len(x), H * dh)  # repeat_kv
    x = x + v @ b0.self_attn.o_proj.weight.double().T
    x = x + b0.mlp(_rms(x.float(), b0.post_attention_layernorm)).double()
    heads = {}
    for l, blk in enumerate(m.layers):
        g = blk.input_layernorm.weight.double()[:, None]
        Wv, Wo = blk.self_attn.v_proj.weight.double().T * g, blk.self_attn.o_proj.weight.double().T
        for h in range(H):
            k = h // (H // kv)
            heads[l, h] = (Wv[:, k * dh : (k + 1) * dh], Wo[h * dh : (h + 1) * dh])
    W_U = hf.lm_head.weight.double().T * m.norm.weight.double()[:, None]
    return x, heads, W_U, "rmsnorm"


def _hand_copying(x, heads, W_U, norm):
    if norm == "layernorm":  # fold_ln + center_writing_weights: LN removes the all-ones direction
        x = x - x.mean(-1, keepdim=True)
        W_U = W_U - W_U.mean(0, keepdim=True)
    W_U = W_U - W_U.mean(1, keepdim=True)  # center_unembed
    UX = (W_U @ x).numpy()
    out = {}
    for lh, (Wv, Wo) in heads.items():
        if norm == "layernorm":
            Wo = Wo - Wo.mean(-1, keepdim=True)
        eig = np.linalg.eigvals((Wv @ Wo).numpy() @ UX)  # d_model side; the extra eigenvalues are ~0
        out[lh] = eig.sum().real / np.abs(eig).sum()
    return out


@pytest.mark.parametrize("name, by_hand", [("tiny_gpt2", _gpt2_by_hand), ("tiny_llama", _llama_by_hand)])
def test_copying_reads_the_block0_embedding_like_transformer_lens_processed_weights(name, by_hand, request):
    model = request.getfixturevalue(name)
    w, inputs = head_weights(model), weight_inputs(model)
    got = copying_weight_score(w, inputs).values.numpy()
    want = _hand_copying(*by_hand(model.original_model))
    for (l, h), v in want.items():
        assert got[l, h] == pytest.approx(v, abs=2e-4), (l, h)
    direct = copying_direct_weight_score(w, inputs).values.numpy()
    assert np.abs(direct - got).max() > 0.05  # the bare-W_E reading is a different number: its own column


def test_copying_direct_has_no_role_and_opposite_roles_share_one_embedding():
    assert score("copying_direct").threshold is None and score("copying_direct").embedding == "embed"
    assert score("copying").embedding == score("copy_suppression").embedding == "block0"
    pairs = opposite_roles()
    assert [(a.name, b.name) for a, b in pairs] == [("copy_suppression", "copying")]
    assert all(a.embedding == b.embedding for a, b in pairs)
    other = dataclasses.replace(score("copying"), embedding="embed")
    with pytest.raises(ValueError, match="not one convention"):
        opposite_reason(score("copy_suppression"), other, 0.6, 0.8)
    assert {s.name for s in SCORES} >= {"copying", "copying_direct", "copy_suppression"}


def test_a_head_with_both_opposite_roles_shows_the_reason(tiny_gpt2):
    import headscope

    res = headscope.scan_induction(tiny_gpt2, seq_len=8, batch=2, ablate=False, progress=False)
    scores = {k: v.copy() for k, v in res.scores.items()}
    scores["copying"][:] = 0.0
    scores["copy_suppression"][:] = 0.0
    scores["copying"][1, 2], scores["copy_suppression"][1, 2] = 0.9, 0.6
    scores["copying"][0, 1] = 0.9  # copying alone: no note
    notes = dataclasses.replace(res, scores=scores).role_notes()
    assert list(notes) == [(1, 2)]
    assert "block0" in notes[(1, 2)] and "0.90" in notes[(1, 2)] and "0.60" in notes[(1, 2)]


@pytest.mark.parametrize("name, by_hand", [("tiny_gpt2", _gpt2_by_hand), ("tiny_llama", _llama_by_hand)])
def test_ov_rows_read_the_block0_embedding(name, by_hand, request):
    """headscope logits' OV rows: (x_t W_V W_O) W_U with x_t block 0's output, normalised as ln1 sees it."""
    model = request.getfixturevalue(name)
    x, heads, W_U, norm = by_hand(model.original_model)
    ids = [11, 257, 4000]
    ov = ov_circuit(model, (1, 2), ids)
    assert ov.embedding == "block0" and "block-0 effective embedding" in ov.convention
    Wv, Wo = heads[1, 2]
    xs = x[ids]
    if norm == "layernorm":
        xs = xs - xs.mean(-1, keepdim=True)
    eps = float(getattr(model.cfg, "eps", 1e-5))
    xs = xs / (xs.square().mean(-1, keepdim=True) + eps).sqrt()
    out = xs @ Wv @ Wo
    if norm == "layernorm":
        out = out - out.mean(-1, keepdim=True)
    rows = out @ W_U
    rows = rows - rows.mean(-1, keepdim=True)
    own = rows.gather(-1, torch.tensor(ids)[:, None])[:, 0]
    np.testing.assert_allclose(ov.self_value, own.numpy(), rtol=1e-3, atol=1e-5)
    assert (ov.top_ids[:, 0] == rows.argmax(-1).numpy()).all()
    direct = ov_circuit(model, (1, 2), ids, embedding="embed")
    assert direct.embedding == "embed" and not np.allclose(direct.self_value, ov.self_value)


def test_ov_rows_plot_and_notebook_view_show_the_rows_bars(tiny_gpt2):
    """OVRows has a figure like every other logit part: its first source token's promoted and suppressed tokens."""
    ov = ov_circuit(tiny_gpt2, (1, 2), [11, 257], k=4)
    fig = ov.plot(1)
    ax = fig.axes[0]
    assert len(ax.patches) == 8  # 4 promoted + 4 suppressed
    widths = sorted(p.get_width() for p in ax.patches)
    expected = sorted([*ov.top_values[1], *ov.bottom_values[1]])
    np.testing.assert_allclose(widths, expected, rtol=1e-6)
    html = ov._repr_html_()
    assert "OV circuit of L1H2" in html and "<img" in html
