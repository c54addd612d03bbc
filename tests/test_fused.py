"""The fused scan path: scores from q, k and the kernel's logsumexp equal the eager pattern's,
no n x n tensor is ever built, and ablations restarted from the clean residual stream equal
today's full-pass ablations."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from headscope.scan import ablation as A
from headscope.scan import fused as F
from headscope.scan import scores as S
from headscope.scan.induction import ablated_later_loss, score_pass
from headscope.scan.sequences import RepeatLayout, repeated_tokens

TOL = 1e-5


# --- pure functions against an explicit softmax -----------------------------------------------

def explicit_attention(q, k, v, scale):
    """The textbook computation: [b, h, n, n] pattern, output and row logsumexp."""
    n = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1), scores.softmax(-1) @ v, scores.logsumexp(-1)


def test_kernel_returns_the_explicit_output_and_logsumexp():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 16) for _ in range(3))
    _, out_ref, lse_ref = explicit_attention(q, k, v, 0.7)
    out, lse = F.attention_with_lse(q, k, v, 0.7)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, lse_ref, atol=1e-5, rtol=1e-5)


def test_entries_from_q_k_lse_equal_the_explicit_pattern_scores():
    # a sharp scale so the pattern is far from uniform and a wrong entry shows
    torch.manual_seed(1)
    layout = RepeatLayout(seq_len=9, repeats=3, bos=True)
    n = layout.n_tokens
    tokens = torch.randint(0, 5, (2, n))  # a 5-token vocabulary: many prefix matches
    q, k, v = (torch.randn(2, 4, n, 8) for _ in range(3))
    pattern, _, _ = explicit_attention(q, k, v, 1.5)
    _, lse = F.attention_with_lse(q, k, v, 1.5)
    pairs = F.prefix_pairs(tokens, layout)
    got = F.attention_score_sums(q, k, lse, 1.5, layout, pairs)
    want = {
        "induction": S.induction_sum(pattern, layout),
        "previous_token": S.previous_token_sum(pattern, layout),
        "duplicate_token": S.duplicate_token_sum(pattern, layout),
        "prefix_matching": S.prefix_matching_sum(pattern, S.prefix_mask(tokens, layout).float(), layout),
    }
    for name, (s, c) in want.items():
        assert got[name][1] == c, name
        torch.testing.assert_close(got[name][0], s, atol=1e-5, rtol=1e-5, msg=name)
        assert s.abs().max() > 0.05, name  # the check compares real mass, not zeros


def test_prefix_pairs_are_exactly_the_prefix_mask():
    layout = RepeatLayout(seq_len=12, repeats=4, bos=False)
    tokens = torch.randint(0, 4, (3, layout.n_tokens), generator=torch.Generator().manual_seed(2))
    b, i, j = F.prefix_pairs(tokens, layout)
    dense = torch.zeros(3, layout.n_tokens - layout.later_start, layout.n_tokens, dtype=torch.bool)
    dense[b, i - layout.later_start, j] = True
    assert len(b) == int(dense.sum())  # no pair listed twice
    assert torch.equal(dense, S.prefix_mask(tokens, layout))


# --- the routed model ---------------------------------------------------------------------------

def check_fused_equals_eager(model, seq_len, batch, chunk):
    assert F.fused_supported(model), F.fused_unsupported_reason(model)
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=3, seed=0)
    eager, eager_loss, eager_z = score_pass(model, rt, chunk, keep_z_mean=True)
    fused, fused_loss, fused_z, resid = F.fused_score_pass(model, rt, chunk, keep_z_mean=True, keep_residuals=[1])
    for name in S.ATTENTION_SCORES:
        diff = abs(fused[name] - eager[name]).max()
        assert diff < TOL, f"{name}: fused and eager differ by {diff}"
    # logits go through every layer in float32: compare the loss relative to its size (~ln vocab)
    torch.testing.assert_close(fused_loss, eager_loss, rtol=2e-6, atol=1e-5)
    torch.testing.assert_close(fused_z, eager_z, rtol=1e-5, atol=1e-6)
    assert resid[1].shape == (batch, rt.layout.n_tokens, model.cfg.d_model)
    return eager


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_scores_equal_eager_on_tiny_models(name, request):
    model = request.getfixturevalue(name)
    check_fused_equals_eager(model, seq_len=11, batch=3, chunk=2)


@pytest.mark.smollm2
def test_fused_scores_equal_eager_on_smollm2(smollm2):
    eager = check_fused_equals_eager(smollm2, seq_len=20, batch=4, chunk=4)
    assert eager["induction"].max() > 0.5  # real induction heads: the comparison has teeth


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_pass_fires_z_and_residual_hooks_but_not_the_pattern(name, request):
    model = request.getfixturevalue(name)
    fired = []
    names = [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers)
             for h in ("attn.hook_z", "hook_resid_pre", "attn.hook_pattern")]
    hooks = [(name, lambda x, hook, name=name: fired.append(name)) for name in names]
    with torch.no_grad(), F.fused_attention(model):
        model.run_with_hooks(torch.arange(100, 120)[None], fwd_hooks=hooks, use_cache=False)
    assert sorted(fired) == sorted(f"blocks.{l}.{h}" for l in range(model.cfg.n_layers)
                                   for h in ("attn.hook_z", "hook_resid_pre"))


class QuadraticTensors(TorchDispatchMode):
    """Records every tensor an aten op returns with two axes of length ``n``."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and sum(s == self.n for s in t.shape) >= 2:
                self.seen.append((str(func), tuple(t.shape)))
        return out


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_scan_never_builds_an_n_by_n_tensor(name, request):
    model = request.getfixturevalue(name)
    layout = RepeatLayout(seq_len=23, repeats=2, bos=True)  # n = 47: no model dimension is 47
    n = layout.n_tokens
    tokens = torch.randint(100, 1000, (2, n))
    L, H = model.cfg.n_layers, model.cfg.n_heads
    sums = {s: torch.zeros(L, H) for s in S.ATTENTION_SCORES}
    counts = dict.fromkeys(S.ATTENTION_SCORES, 0)
    with torch.no_grad():
        with QuadraticTensors(n) as eager:
            model(tokens)
        assert eager.seen, "the detector must see the eager pattern, or it proves nothing"
        hooks = F.score_hooks(sums, counts, layout, F.prefix_pairs(tokens, layout))
        with F.fused_attention(model, hooks), QuadraticTensors(n) as fused:
            model(tokens)  # HF's default use_cache=True too: a prefill cache is harmless
    assert fused.seen == []
    assert counts["induction"] == 2 * (n - layout.later_start)


def test_fused_context_restores_the_eager_model_even_after_an_error(tiny_llama):
    impl = tiny_llama.original_model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"), F.fused_attention(tiny_llama):
        raise RuntimeError("boom")
    assert tiny_llama.original_model.config._attn_implementation == impl
    assert "forward" not in tiny_llama.blocks[0].attn.__dict__
    assert "forward" not in tiny_llama.blocks[0].attn.original_component.__dict__
    seen = []
    with torch.no_grad():
        tiny_llama.run_with_hooks(torch.arange(100, 110)[None],
                                  fwd_hooks=[("blocks.0.attn.hook_pattern", lambda p, hook: seen.append(p.shape))])
    assert seen == [torch.Size([1, 4, 10, 10])]


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_refuses_a_padding_mask_instead_of_dropping_it(name, request):
    model = request.getfixturevalue(name)
    tokens = torch.arange(100, 110)[None]
    mask = torch.ones_like(tokens)
    mask[0, :2] = 0
    with pytest.raises(F.FusedUnsupported, match="padding"), torch.no_grad(), F.fused_attention(model):
        model(tokens, attention_mask=mask, use_cache=False)


def test_unroutable_model_says_why(tiny_gpt2):
    tiny_gpt2.cfg.use_attn_result = True
    try:
        assert "use_attn_result" in F.fused_unsupported_reason(tiny_gpt2)
        with pytest.raises(F.FusedUnsupported, match="use_attn_result"), F.fused_attention(tiny_gpt2):
            pass
    finally:
        tiny_gpt2.cfg.use_attn_result = False
    assert F.fused_supported(tiny_gpt2)


# --- restart-from-residual ablation -------------------------------------------------------------

def check_restart_equals_full(model, seq_len, batch, chunk, head_sets):
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=2, seed=0)
    _, _, z_mean = score_pass(model, rt, chunk, keep_z_mean=True)
    layers = {A.first_layer(h) for h in head_sets}
    residuals = A.capture_residuals(model, rt.tokens, layers, chunk=chunk)
    for heads in head_sets:
        for zm in (z_mean, None):
            full = ablated_later_loss(model, rt, heads, chunk, zm)
            restarted = A.ablated_later_loss_restart(model, rt, heads, chunk, zm, residuals)
            assert abs(full - restarted) < TOL, (heads, zm is None, full, restarted)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_restarted_ablation_equals_full_ablation(name, request):
    model = request.getfixturevalue(name)
    L = model.cfg.n_layers
    check_restart_equals_full(model, 10, 3, 2, [[(L - 1, 1)], [(1, 0), (L - 1, 2)], [(0, 3)]])


@pytest.mark.smollm2
def test_restarted_ablation_equals_full_ablation_on_smollm2(smollm2):
    check_restart_equals_full(smollm2, 20, 4, 4, [[(20, 1), (12, 3)], [(29, 8)]])


def test_restart_skips_the_blocks_below_and_reproduces_the_clean_logits(tiny_llama):
    tokens = torch.arange(100, 130)[None]
    with torch.no_grad():
        clean = tiny_llama(tokens, use_cache=False)
        resid = A.capture_residuals(tiny_llama, tokens, [2])[2]
        calls = []
        handle = tiny_llama.blocks[0].attn.register_forward_hook(lambda *a: calls.append(1))
        try:
            logits = A.restart_from(tiny_llama, resid, 2)
            wrong = A.restart_from(tiny_llama, resid * 0.5, 2)
        finally:
            handle.remove()
    assert calls == []  # block 0 was not computed
    torch.testing.assert_close(logits, clean, atol=1e-5, rtol=1e-5)
    assert (wrong - clean).abs().max() > 1e-2  # the injected residual is what drives the result


# --- copying scores once per model --------------------------------------------------------------

def test_copying_scores_are_computed_once_and_again_after_a_weight_change(tiny_gpt2, monkeypatch):
    from headscope.scan import copying_cache as C
    from headscope.scan.copying import copying_scores
    from headscope.weights import head_weights

    calls = []
    monkeypatch.setattr(C, "copying_scores", lambda w: calls.append(1) or copying_scores(w))
    C._cache.pop(tiny_gpt2, None)
    first = C.copying_scores_once(tiny_gpt2)
    torch.testing.assert_close(first, copying_scores(head_weights(tiny_gpt2)))
    assert torch.equal(C.copying_scores_once(tiny_gpt2), first) and len(calls) == 1
    w = tiny_gpt2.blocks[1].attn.o.original_component.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(-1.0)  # flips every head's OV circuit of layer 1: its copying scores change sign
        changed = C.copying_scores_once(tiny_gpt2)
        assert len(calls) == 2
        torch.testing.assert_close(changed[1], -first[1], atol=1e-5, rtol=1e-4)
    finally:
        with torch.no_grad():
            w.copy_(saved)
        C._cache.pop(tiny_gpt2, None)


def test_nested_blocks_on_two_models_keep_their_callbacks_apart(tiny_gpt2, tiny_llama):
    seen = {"gpt2": [], "llama": [], "llama_inner": []}
    tokens = torch.arange(100, 110)[None]
    with torch.no_grad(), F.fused_attention(tiny_gpt2, lambda l, *a: seen["gpt2"].append(l)):
        with F.fused_attention(tiny_llama, lambda l, *a: seen["llama"].append(l)):
            with F.fused_attention(tiny_llama, lambda l, *a: seen["llama_inner"].append(l)):
                tiny_llama(tokens, use_cache=False)
            tiny_llama(tokens, use_cache=False)  # the inner block's exit left the outer one routed
        tiny_gpt2(tokens, use_cache=False)
    assert seen == {"gpt2": [0, 1], "llama": [0, 1, 2, 0, 1, 2], "llama_inner": [0, 1, 2]}
    assert "forward" not in tiny_llama.blocks[0].attn.__dict__
