"""The scan's numbers equal an independent computation with plain transformers.

The reference runs the Hugging Face model itself (eager attention, ``output_attentions=True``)
on the same token ids and computes every score with explicit index lists straight from the
definitions, not with the scan's diagonal/einsum code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import headscope
from headscope.scan.induction_scan import score_pass
from headscope.scan.sequences import repeated_tokens

TOL = 1e-4


def reference_scores(hf_dir, tokens: torch.Tensor, seq_len: int, bos: bool):
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    att = np.stack([a.numpy() for a in out.attentions])  # [L, b, H, n, n]
    toks = tokens.numpy()
    b, n = toks.shape
    o = int(bos)
    later = list(range(o + seq_len, n))
    rows = np.arange(b)[:, None]
    ind = att[:, :, :, later, [q - seq_len + 1 for q in later]].mean(axis=(1, 3))
    dup = att[:, :, :, later, [q - seq_len for q in later]].mean(axis=(1, 3))
    qs = list(range(1, n))
    prev = att[:, :, :, qs, [q - 1 for q in qs]].mean(axis=(1, 3))
    prefix = np.zeros(ind.shape)
    for i in range(b):
        for q in later:
            keys = [k for k in range(1, q + 1) if toks[i, k - 1] == toks[i, q]]
            prefix += att[:, i, :, q, :][..., keys].sum(-1)
    prefix /= b * len(later)
    logp = torch.log_softmax(out.logits.float(), -1).numpy()
    nll = -logp[rows, np.arange(n - 1)[None, :], toks[:, 1:]]  # [b, n-1]
    return {"induction": ind, "duplicate_token": dup, "previous_token": prev, "prefix_matching": prefix}, nll.mean(0)


def check_against_reference(model, model_dir, seq_len, batch, repeats, chunk, attention="eager"):
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=repeats, seed=3)
    scan = score_pass(model, rt, chunk, attention=attention)
    assert scan.attention == attention
    means, per_pos = scan.means, scan.per_position_loss
    ref, ref_loss = reference_scores(model_dir, rt.tokens, seq_len, rt.layout.bos)
    for name, expected in ref.items():
        np.testing.assert_allclose(means[name], expected, atol=TOL, err_msg=name)
    # losses are ~15 nats: float32 summation order alone moves them by ~1e-4, so relative here
    np.testing.assert_allclose(per_pos.numpy(), ref_loss, rtol=2e-5, atol=TOL)
    return means


# Both routes of the scan: eager (full patterns) and fused (q, k and the kernel's logsumexp).
ROUTES = pytest.mark.parametrize("attention", ["eager", "fused"])


@ROUTES
def test_tiny_gpt2_scores_match_plain_transformers(tiny_gpt2, tiny_gpt2_dir, attention):
    # chunk 2 of 5 sequences: also checks that chunks add up exactly
    check_against_reference(tiny_gpt2, tiny_gpt2_dir, seq_len=7, batch=5, repeats=3, chunk=2, attention=attention)


@ROUTES
def test_tiny_llama_gqa_scores_match_plain_transformers(tiny_llama, tiny_llama_dir, attention):
    check_against_reference(tiny_llama, tiny_llama_dir, seq_len=6, batch=3, repeats=2, chunk=3, attention=attention)


@pytest.mark.smollm2
@ROUTES
def test_smollm2_scores_match_plain_transformers(smollm2, attention):
    model_dir = headscope.models.resolve_source("smollm2-135m-instruct-q4").path
    means = check_against_reference(smollm2, model_dir, seq_len=12, batch=2, repeats=2, chunk=2, attention=attention)
    assert means["induction"].max() > 0.3  # real weights: some head already does induction


def test_copying_score_equals_full_vocab_eigenvalues():
    """On a small vocabulary the full vocab x vocab OV circuit can be formed: same score."""
    from headscope.folded_weights import HeadWeights
    from headscope.scores.copying import copying_direct_scores, copying_scores

    g = torch.Generator().manual_seed(0)
    L, H, d, dh, V = 2, 3, 12, 4, 30
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    w = HeadWeights(
        W_Q=rnd(L, H, d, dh),
        W_K=rnd(L, H, d, dh),
        W_V=rnd(L, H, d, dh),
        W_O=rnd(L, H, dh, d),
        b_Q=torch.zeros(L, H, dh),
        b_K=torch.zeros(L, H, dh),
        b_V=torch.zeros(L, H, dh),
        b_O=torch.zeros(L, d),
        W_E=rnd(V, d),
        W_U=rnd(d, V),
        W_pos=None,
        kv_head=[0, 1, 2],
        norm="rmsnorm",
    )
    # make one head a pure copier: W_V W_O maps each embedding onto its own unembedding
    E, U = w.W_E.double(), w.W_U.double()
    w.W_V[0, 0] = (torch.linalg.pinv(E) @ E)[:, :dh].float()
    got = copying_direct_scores(w).numpy()
    X = rnd(V, d).double()  # an effective embedding, read with LayerNorm's centring and TL's center_unembed
    w.norm = "layernorm"
    eff = copying_scores(w, X).numpy()
    Xc, Uc = X - X.mean(-1, keepdim=True), U - U.mean(0, keepdim=True)
    Uc = Uc - Uc.mean(1, keepdim=True)
    for l in range(L):
        for h in range(H):
            full = (E @ w.W_V[l, h].double() @ w.W_O[l, h].double() @ U).numpy()  # [V, V]
            eig = np.linalg.eigvals(full)
            expected = eig.sum().real / np.abs(eig).sum()
            assert abs(got[l, h] - expected) < 1e-4, (l, h)
            Wo = w.W_O[l, h].double() - w.W_O[l, h].double().mean(-1, keepdim=True)
            eig = np.linalg.eigvals((Xc @ w.W_V[l, h].double() @ Wo @ Uc).numpy())
            assert abs(eff[l, h] - eig.sum().real / np.abs(eig).sum()) < 1e-4, (l, h)


def test_copying_score_is_one_for_an_identity_ov_circuit():
    from headscope.folded_weights import HeadWeights
    from headscope.scores.copying import copying_direct_scores as copying_scores

    d, dh, V = 6, 6, 10
    E = torch.randn(V, d, generator=torch.Generator().manual_seed(1))
    eye = torch.eye(d)[None, None]
    w = HeadWeights(
        W_Q=eye,
        W_K=eye,
        W_V=eye.clone(),
        W_O=eye.clone(),
        b_Q=torch.zeros(1, 1, dh),
        b_K=torch.zeros(1, 1, dh),
        b_V=torch.zeros(1, 1, dh),
        b_O=torch.zeros(1, d),
        W_E=E,
        W_U=E.T.clone(),
        W_pos=None,
        kv_head=[0],
        norm="rmsnorm",
    )
    # OV = I and W_U = W_E^T: the circuit E E^T is positive semi-definite -> all eigenvalues >= 0
    assert abs(copying_scores(w).item() - 1.0) < 1e-5
    w.W_O = -w.W_O  # an anti-copying head
    assert abs(copying_scores(w).item() + 1.0) < 1e-5
