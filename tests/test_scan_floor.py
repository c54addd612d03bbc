"""The scan's shortcuts to the floor (issue 22) compute the same numbers as the long way round.

- the loss from the final norm's output, unembedded a slice at a time and reduced in place,
  equals the cross-entropy of the model's own full logits (and ``torch.nn.functional.cross_entropy``);
- a model whose logits are not its unembedding of that output is detected and keeps full logits;
- the scan's direct-logit reduction (only the counted positions, one product per distinct target)
  equals the complete attribution (:class:`~headscope.scan.direct.DirectPass`, float64) there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.scan import losses as Lo
from headscope.scan.direct import DirectPass, HeadDirectPass, unembedding
from headscope.scan.induction_scan import direct_weights, score_pass
from headscope.scan.sequences import repeated_tokens
from headscope.scores.layout import first_repeat_targets, later_repeat_targets


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_loss_from_the_normed_output_equals_cross_entropy_of_the_full_logits(name, request):
    model = request.getfixturevalue(name)
    rt = repeated_tokens(model, seq_len=9, batch=3, repeats=2, seed=1)
    with torch.no_grad():
        logits = model.run_with_hooks(rt.tokens, fwd_hooks=[], use_cache=False)
        with Lo.normed_output(model):
            normed = model.run_with_hooks(rt.tokens, fwd_hooks=[], use_cache=False)
    assert Lo.normed_route_ok(model)
    assert normed.shape == (*rt.tokens.shape, model.cfg.d_model)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), rt.tokens[:, 1:], reduction="none")
    # 5 rows per slice: the slicing and the in-place reduction are exercised, not one big slice
    got = Lo.losses_from_normed(model, normed, rt.tokens, elements=5 * model.cfg.d_vocab)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    pos = Lo.counted_positions(rt.layout)
    later, first = Lo.repeat_means_at(Lo.losses_from_normed(model, normed, rt.tokens, pos), pos, rt.layout)
    torch.testing.assert_close(later, Lo.later_repeat_mean(ref, rt.layout), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first, Lo.first_repeat_mean(ref, rt.layout), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_the_online_logsumexp_over_vocabulary_slices_equals_cross_entropy(bias):
    # 37-column slices of a 1,000-token vocabulary (the last one short), targets in every slice,
    # rows in several blocks: each step of the running max and rescaled sum is exercised.
    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(16, 1000, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(3 * torch.randn(1000, 16, generator=gen))
        if bias:
            linear.bias.copy_(torch.randn(1000, generator=gen))
    x, tg = torch.randn(70, 16, generator=gen), torch.randint(0, 1000, (70,), generator=gen)
    ref = torch.nn.functional.cross_entropy(linear(x), tg, reduction="none")
    weight, b = Lo._linear_parts(linear)
    assert (b is None) == (not bias)
    got = torch.cat(
        [Lo._lse_minus_target_by_columns(x[r : r + 30], weight, b, tg[r : r + 30], 37) for r in (0, 30, 60)]
    )
    torch.testing.assert_close(got.detach(), ref.detach(), rtol=1e-5, atol=1e-5)


def test_a_zero_bias_is_dropped_and_a_module_that_is_not_linear_is_applied_whole():
    zero = torch.nn.Linear(4, 6)
    with torch.no_grad():
        zero.bias.zero_()
    assert Lo._linear_parts(zero)[1] is None
    assert Lo._linear_parts(torch.nn.Sequential(zero)) is None


def test_a_model_that_changes_its_logits_after_the_unembedding_keeps_full_logits(tiny_llama, monkeypatch):
    # As if the model scaled its logits after the unembedding (as some do, or soft-cap them): the
    # unembedding module alone no longer gives them.
    bridge = tiny_llama.bridge
    hf_forward = type(bridge.original_model).forward

    def scaled(self, *args, **kwargs):
        out = hf_forward(self, *args, **kwargs)
        out.logits = 2 * out.logits if out.logits.shape[-1] == tiny_llama.cfg.d_vocab else out.logits
        return out

    rt = repeated_tokens(tiny_llama, seq_len=6, batch=2, repeats=2, seed=0)
    monkeypatch.setattr(type(bridge.original_model), "forward", scaled)
    monkeypatch.setattr(Lo, "_route_ok", type(Lo._route_ok)())  # forget the earlier answer
    assert not Lo.normed_route_ok(tiny_llama)
    with torch.no_grad():
        logits = tiny_llama.run_with_hooks(rt.tokens, fwd_hooks=[], use_cache=False)
    ref = Lo.token_losses(logits, rt.tokens).mean(0)
    torch.testing.assert_close(score_pass(tiny_llama, rt, 2).per_position_loss, ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(Lo, "_route_ok", type(Lo._route_ok)())


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_scan_direct_effects_equal_the_complete_attribution_at_the_counted_positions(name, request):
    model = request.getfixturevalue(name)
    rt = repeated_tokens(model, seq_len=7, batch=3, repeats=3, seed=2)  # targets repeat 3 times
    w, ue = direct_weights(model)
    pos = np.union1d(first_repeat_targets(rt.layout), later_repeat_targets(rt.layout))
    W_O = w.W_O.reshape(w.n_layers, -1, w.W_O.shape[-1]).float().contiguous()
    fast = HeadDirectPass(rt.tokens, w, ue, pos, W_O)
    full = DirectPass(model, rt.tokens, w, unembedding(model, w))  # float64 products, every position
    with torch.no_grad():
        logits = model.run_with_hooks(rt.tokens, fwd_hooks=fast.hooks + full.hooks, use_cache=False)
    ref = full.finish(logits).heads[:, pos]
    assert np.abs(ref).max() > 1e-3  # not all zero: the comparison can fail
    np.testing.assert_allclose(fast.heads().numpy(), ref, rtol=1e-4, atol=1e-5)


def test_pass_losses_reads_logits_at_the_positions_asked_for():
    gen = torch.Generator().manual_seed(0)
    logits, tokens = torch.randn(2, 7, 11, generator=gen), torch.randint(0, 11, (2, 7), generator=gen)
    full = Lo.token_losses(logits, tokens)
    torch.testing.assert_close(Lo.pass_losses(None, logits, tokens, normed=False), full)
    torch.testing.assert_close(Lo.pass_losses(None, logits, tokens, [5, 0, 3], normed=False), full[:, [5, 0, 3]])
