"""QK circuits from the weights: positional (learned and rotary) and token, never vocab x vocab."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.errors import BadInput
from headscope.folded_weights import head_weights
from headscope.models.inputs import single_tokens as token_set
from headscope.qk import positional_qk, rotary, token_qk
from headscope.qk.circuits import normalise


def test_learned_positional_circuit_is_wpos_wq_wk_wpos(tiny_gpt2):
    w = head_weights(tiny_gpt2)
    pos = positional_qk(tiny_gpt2, ["1.2", "0.3"], n_positions=16)
    P = normalise(w.W_pos[:16], "layernorm")
    ref = (P @ w.W_Q[1, 2].double()) @ (P @ w.W_K[1, 2].double()).T / 16**0.5  # d_head 16
    got = pos.matrix[0]
    lower = np.tril(np.ones((16, 16), dtype=bool))
    np.testing.assert_allclose(got[lower], ref.numpy()[lower], rtol=1e-6, atol=1e-9)
    assert np.isnan(got[~lower]).all()
    assert pos.offset_curve[0][1] == pytest.approx(np.mean(np.diagonal(ref.numpy(), -1)))
    assert "W_pos" in pos.method


def test_rotary_offset_curve_is_the_expected_score_under_hf_rope(tiny_llama):
    """Brute force with transformers' own apply_rotary_pos_emb: E[q_i . k_j] depends only on i - j."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    w = head_weights(tiny_llama)
    g = torch.Generator().manual_seed(0)
    X = normalise(torch.randn(50, 64, generator=g), "rmsnorm")
    pos = positional_qk(tiny_llama, ["1.3"], n_positions=12, residuals={1: X})
    q = (X @ w.W_Q[1, 3].double()).float()
    k = (X @ w.W_K[1, 3].double()).float()
    rot = [m for m in tiny_llama.original_model.modules() if type(m).__name__ == "LlamaRotaryEmbedding"][0]
    cos, sin = rot(q[None], torch.arange(20)[None])
    for i, j in [(5, 5), (7, 6), (11, 3), (19, 8)]:
        qi, _ = apply_rotary_pos_emb(q[None, None], q[None, None], cos[:, i : i + 1], sin[:, i : i + 1])
        _, kj = apply_rotary_pos_emb(k[None, None], k[None, None], cos[:, j : j + 1], sin[:, j : j + 1])
        expected = (qi[0, 0] @ kj[0, 0].T).mean().item() / 4.0  # mean over independent pairs, d_head 16
        assert pos.offset_curve[0][i - j] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert pos.matrix is None and "RoPE" in pos.method and pos.rope_theta == pytest.approx(10000.0)


@pytest.mark.smollm2
def test_smollm2_rotary_base_comes_from_the_model_not_cfg(smollm2):
    assert smollm2.cfg.rotary_base == 10000  # what the bridge's config says...
    assert rotary.rope_theta(smollm2) == pytest.approx(100000.0, rel=1e-4)  # ...and what the model uses


def test_token_circuit_subset_matches_the_explicit_product(tiny_gpt2):
    w = head_weights(tiny_gpt2)
    ids = token_set(tiny_gpt2.tokenizer, [" cat", " dog", " the", " mat"])
    tq = token_qk(tiny_gpt2, "1.2", ids)
    E = normalise(w.W_E[ids], "layernorm")
    ref = (E @ w.W_Q[1, 2].double()) @ (E @ w.W_K[1, 2].double()).T / 4.0
    np.testing.assert_allclose(tq.matrix, ref.numpy(), rtol=1e-4, atol=1e-6)
    assert tq.labels == [" cat", " dog", " the", " mat"]
    assert tq.top_pairs(1)[0][2] == pytest.approx(ref.max().item(), rel=1e-4)


def test_factored_svd_equals_the_svd_of_the_explicit_matrix(tiny_gpt2):
    """On a 300-token vocabulary the full matrix is small enough to check the factored route against."""
    w = head_weights(tiny_gpt2)
    E = normalise(w.W_E[:300], "layernorm").float()
    tq = token_qk(tiny_gpt2, "0.1", [5, 6, 7], normalised_embeddings=E, directions=3)
    full = (E @ w.W_Q[0, 1]) @ (E @ w.W_K[0, 1]).T / 4.0
    np.testing.assert_allclose(tq.singular_values, torch.linalg.svdvals(full.double())[:3].numpy(), rtol=1e-4)
    assert len(tq.directions) == 3 and len(tq.directions[0]["queries_plus"]) == 6


def test_token_sets_refuse_strings_that_are_not_one_token_and_say_how_they_split(tiny_gpt2):
    with pytest.raises(BadInput) as exc:
        token_set(tiny_gpt2.tokenizer, [" cat", "antidisestablishment", "elephants"])
    msg = str(exc.value)
    assert "'antidisestablishment' -> 3 tokens ['ant', 'idis', 'establishment']" in msg
    assert "'elephants' -> 3 tokens" in msg and "(' elephants' is one token)" in msg
    assert "' cat' ->" not in msg  # the good one is not blamed
    with pytest.raises(BadInput, match="at least 2 distinct"):
        token_set(tiny_gpt2.tokenizer, [" cat", " cat"])


def test_positional_circuit_on_a_model_without_positions_is_refused(tiny_gpt2):
    w = head_weights(tiny_gpt2)
    w.W_pos = None
    with pytest.raises(BadInput, match="neither learned, rotary nor ALiBi positions") as exc:
        positional_qk(tiny_gpt2, ["0.0"], weights=w)
    assert "skip" not in (exc.value.hint or "")  # no option skips it: the hint names what still runs


@pytest.mark.parametrize(
    "ids, says, hint",
    [
        ([10**7], "token id 10000000 is outside the vocabulary (0..50256)", "use an id below d_vocab"),
        ([5, -1], "token id -1 is outside the vocabulary (0..50256)", "use an id below d_vocab"),
        ([], "no tokens for the token QK circuit", "pass one or more token ids"),
        ([" cat"], "token ids must be a list of integers", "pass one or more token ids"),
    ],
)
@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_token_circuit_refuses_ids_outside_the_vocabulary_and_empty_sets(which, request, ids, says, hint):
    with pytest.raises(BadInput) as exc:
        token_qk(request.getfixturevalue(which), "1.2", ids)
    assert says in exc.value.message and hint in exc.value.hint
    assert token_qk(request.getfixturevalue(which), "1.2", np.array([50256, 7, 50256])).token_ids == [50256, 7]
