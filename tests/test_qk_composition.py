"""Composition scores: known values on constructed matrices, TransformerLens agreement, SmolLM2 finding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headscope
from headscope.errors import BadInput
from headscope.folded_weights import HeadWeights, head_weights
from headscope.qk import composition_scores
from headscope.qk.composition import (
    composition_by_offset,
    dense_score,
    factored_score,
    left_factor,
    random_baseline,
    right_factor,
)


def _weights(W_Q, W_K, W_V, W_O, norm="rmsnorm") -> HeadWeights:
    L, H, d, r = W_Q.shape
    z = torch.zeros(L, H, r)
    return HeadWeights(
        W_Q=W_Q,
        W_K=W_K,
        W_V=W_V,
        W_O=W_O,
        b_Q=z,
        b_K=z,
        b_V=z,
        b_O=torch.zeros(L, d),
        W_E=torch.zeros(10, d),
        W_U=torch.zeros(d, 10),
        W_pos=None,
        kv_head=list(range(H)),
        norm=norm,
    )


def e(i: int, d: int = 6) -> torch.Tensor:
    v = torch.zeros(d, 1)
    v[i] = 1
    return v


def test_identical_rank_one_matrices_compose_fully_and_orthogonal_ones_not_at_all():
    # head 0.0 reads e0 and writes e1; head 1.0's keys read e1 (K-comp 1), its queries read e2 (Q-comp 0),
    # its values read e3 (V-comp 0). Head 1.1 reads everything from directions 0.0 never writes.
    d = 6
    W_Q = torch.zeros(2, 2, d, 1)
    W_K = torch.zeros(2, 2, d, 1)
    W_V = torch.zeros(2, 2, d, 1)
    W_O = torch.zeros(2, 2, 1, d)
    W_V[0, 0], W_O[0, 0] = e(0), e(1).T
    W_V[0, 1], W_O[0, 1] = e(4), e(5).T
    W_Q[1, 0], W_K[1, 0], W_V[1, 0], W_O[1, 0] = e(2), e(1), e(3), e(4).T
    W_Q[1, 1], W_K[1, 1], W_V[1, 1], W_O[1, 1] = e(2), e(3), e(2), e(3).T
    W_Q[0], W_K[0] = e(0).expand(2, d, 1), e(0).expand(2, d, 1)
    c = composition_scores(_weights(W_Q, W_K, W_V, W_O), baseline_samples=50)
    K, Q, V = c.scores["K"], c.scores["Q"], c.scores["V"]
    assert K[0, 0, 1, 0] == pytest.approx(1.0, abs=1e-6)
    assert Q[0, 0, 1, 0] == pytest.approx(0.0, abs=1e-6) and V[0, 0, 1, 0] == pytest.approx(0.0, abs=1e-6)
    assert K[0, 0, 1, 1] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(K[1, :, :, :]).all() and np.isnan(K[0, :, 0, :]).all()  # only earlier -> later pairs
    assert c.top_sources(1, 0, "K", 1)[0][:2] == (0, 0)


def test_identical_rank_r_projections_score_one_over_sqrt_r():
    r, d = 4, 10
    P = torch.eye(d, dtype=torch.float64)[:, :r]  # W_A = W_B = P P^T, a rank-r projection
    assert dense_score(P @ P.T, P @ P.T) == pytest.approx(1 / np.sqrt(r))
    Y = left_factor(P[None], P.T[None])
    Z = right_factor(P[None], P[None])
    assert factored_score(Y, Z).item() == pytest.approx(1 / np.sqrt(r), abs=1e-6)


def test_factored_route_equals_the_definition_on_random_low_rank_matrices():
    g = torch.Generator().manual_seed(1)
    d, r = 40, 5
    A = [torch.randn(d, r, generator=g, dtype=torch.float64) for _ in range(4)]
    W_A, W_B = A[0] @ A[1].T, A[2] @ A[3].T
    got = factored_score(left_factor(A[0][None], A[1].T[None]), right_factor(A[2][None], A[3][None]))
    assert got.item() == pytest.approx(dense_score(W_A, W_B), rel=1e-5)


def test_random_baseline_is_small_and_shrinks_with_width():
    small, _ = random_baseline(64, 8, samples=100)
    big, _ = random_baseline(576, 64, samples=100)
    assert 0 < big < small < 0.5


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_scores_agree_with_transformer_lens(which, request, tiny_gpt2_dir, tiny_llama_dir):
    """TransformerLens's all_composition_scores (fold_ln + centred weights) on a second copy of the model."""
    model = request.getfixturevalue(which)
    ours = composition_scores(model, baseline_samples=20)
    tl = headscope.load_model(str(tiny_gpt2_dir if which == "tiny_gpt2" else tiny_llama_dir), device="cpu")
    tl.enable_compatibility_mode()
    for kind in "QKV":
        ref = tl.all_composition_scores(kind).detach().numpy()
        mask = ~np.isnan(ours.scores[kind])
        np.testing.assert_allclose(ours.scores[kind][mask], ref[mask], atol=1e-6)
    frame = ours.to_frame()
    L, H = ours.shape
    assert len(frame) == 3 * H * H * L * (L - 1) // 2


def test_rotary_models_are_labelled_offset_0_by_composition_scores_itself(tiny_llama, tiny_gpt2):
    """Every caller gets the label, not only analyze_qk: Q/K at offset 0 on rotary models, else position-free."""
    rot = composition_scores(tiny_llama, baseline_samples=2)
    assert rot.offset == 0 and rot.where == "Q/K at offset 0" and rot.to_dict()["where"] == "Q/K at offset 0"
    frame = rot.to_frame()
    assert (frame[frame.kind != "V"].offset == 0).all() and frame[frame.kind == "V"].offset.isna().all()
    w = head_weights(tiny_llama)
    same = composition_scores(tiny_llama, ("K",), weights=w, baseline_samples=2)  # precomputed weights, same label
    assert same.where == "Q/K at offset 0" and same.model_name == rot.model_name
    np.testing.assert_allclose(same.scores["K"], rot.scores["K"], atol=1e-12)
    assert composition_scores(w, ("K",), baseline_samples=2).offset is None  # bare weights do not say
    learned = composition_scores(tiny_gpt2, baseline_samples=2)
    assert learned.offset is None and learned.where == "position-free" and learned.to_frame().offset.isna().all()


@pytest.mark.parametrize(
    "kinds, says", [(("X",), "unknown composition kind 'X'"), ((), "no composition kinds given"), ("QZ", "'Z'")]
)
def test_unknown_composition_kinds_are_refused_with_the_valid_ones(tiny_gpt2, kinds, says):
    with pytest.raises(BadInput, match=says) as exc:
        composition_scores(tiny_gpt2, kinds=kinds)
    assert "'Q', 'K', 'V'" in exc.value.hint


def test_composition_by_offset_refuses_v_which_has_no_offset(tiny_llama):
    with pytest.raises(BadInput, match="unknown composition kind 'V'") as exc:
        composition_by_offset(tiny_llama, ["2.0"], range(2), kinds=("V",))
    assert "'Q', 'K'" in exc.value.hint


@pytest.mark.smollm2
def test_smollm2_induction_heads_k_compose_with_previous_token_heads(smollm2):
    scan = headscope.scan_induction(smollm2, seq_len=20, batch=4, ablate=False, sample=False, progress=False)
    comp = composition_scores(smollm2, baseline_samples=50)
    prev = scan.scores["previous_token"]
    for layer, head, score in scan.top_heads("induction", 3):
        assert score > 0.4
        sources = comp.top_sources(layer, head, "K", 3)
        best_prev = max(prev[a, b] for a, b, _ in sources)
        assert best_prev > 0.4, (
            f"{layer}.{head}: K-sources {sources} have previous-token scores "
            f"{[round(float(prev[a, b]), 2) for a, b, _ in sources]}"
        )
