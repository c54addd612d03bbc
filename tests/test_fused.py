"""The fused scan path: every registry score read from q, k and the kernel's logsumexp equals the
eager pattern's, no n x n tensor is ever built, and ablations restarted from the clean residual
stream equal full-pass ablations."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from headscope.scan import ablation as A
from headscope.scan import fused as F
from headscope.scan.induction_scan import (
    ablated_later_loss,
    direct_weights,
    fused_chunk_size_for,
    scan_induction,
    score_pass,
    weight_score_arrays,
)
from headscope.scan.sequences import repeated_tokens
from headscope.scores import attention_scores, prepare, reduce_pattern, reduce_qk, score_names
from headscope.scores.layout import RepeatLayout
from headscope.scores.reads import (
    Column,
    KeySet,
    Stripe,
    on_natural_text,
    pair_plan,
    plan_entries,
    plan_sums,
    prefix_mask,
    prefix_pairs,
    reduce_qk_plan,
)

TOL = 1e-5


# --- pure functions against an explicit softmax -----------------------------------------------


def explicit_attention(q, k, v, scale):
    """The textbook computation: [b, h, n, n] pattern, output and row logsumexp."""
    n = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return scores.softmax(-1), scores.softmax(-1) @ v, scores.logsumexp(-1)


def test_kernel_returns_the_explicit_output_and_logsumexp():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 16) for _ in range(3))
    _, out_ref, lse_ref = explicit_attention(q, k, v, 0.7)
    out, lse = F.attention_with_lse(q, k, v, 0.7)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, lse_ref, atol=1e-5, rtol=1e-5)


def test_the_kernel_takes_the_projections_transposed_views_without_a_copy():
    # transformers hands attention [batch, head, n, d] views of [batch, n, head, d] projections:
    # their last axis is dense, so the CUDA kernel reads them as they are (no copy per layer);
    # only a view whose last axis is strided is copied.
    torch.manual_seed(0)
    view = torch.randn(2, 37, 3, 16).transpose(1, 2)
    assert F._last_axis_dense(view) is view
    strided = torch.randn(2, 3, 16, 37).transpose(2, 3)
    dense = F._last_axis_dense(strided)
    assert dense.is_contiguous() and torch.equal(dense, strided)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the kernel here is the CPU's")
def test_the_cuda_kernel_on_transposed_views_returns_the_explicit_output_and_logsumexp():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 101, 3, 64, device="cuda").transpose(1, 2) for _ in range(3))
    _, out_ref, lse_ref = explicit_attention(q.contiguous(), k.contiguous(), v.contiguous(), 0.125)
    out, lse = F.attention_with_lse(q, k, v, 0.125)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, lse_ref, atol=1e-5, rtol=1e-5)


def test_every_declaration_reads_the_same_entries_from_q_k_lse_as_from_the_pattern():
    # A sharp scale so the pattern is far from uniform and a wrong entry shows. Every score of the
    # registry, plus a Column and a KeySet declared without `pairs` (built from its mask instead).
    torch.manual_seed(1)
    layout = RepeatLayout(seq_len=9, repeats=3, bos=True)
    n = layout.n_tokens
    tokens = torch.randint(0, 5, (2, n))  # a 5-token vocabulary: many prefix matches
    q, k, v = (torch.randn(2, 4, n, 8) for _ in range(3))
    pattern, _, _ = explicit_attention(q, k, v, 1.5)
    _, lse = F.attention_with_lse(q, k, v, 1.5)
    reads = {s.name: s.reads for s in attention_scores()}
    reads["first_token"] = Column(key=0, start=lambda lay: 1)
    reads["late_column"] = Column(key=5, start=lambda lay: 2)  # queries 2..4 cannot see key 5: they add 0
    reads["prefix_from_mask"] = KeySet(mask=prefix_mask, start=lambda lay: lay.later_start)
    for name, r in reads.items():
        want, n_want = reduce_pattern(r, pattern, layout, prepare(r, tokens, layout))
        got, n_got = reduce_qk(r, q, k, lse, 1.5, layout, prepare(r, tokens, layout, fused=True))
        assert n_got == n_want, name
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)
        assert want.abs().max() > 0.05, name  # the check compares real mass, not zeros


def test_one_pair_plan_reads_every_declaration_as_the_pattern_does():
    # The scan's fused route reads all scores in one gather per layer (reads.pair_plan /
    # reduce_qk_plan); each declaration's row must equal its own reduction from the full pattern,
    # with the same count, split into several gathers or one.
    torch.manual_seed(3)
    layout = RepeatLayout(seq_len=9, repeats=3, bos=True)
    n = layout.n_tokens
    tokens = torch.randint(0, 5, (2, n))
    q, k, v = (torch.randn(2, 4, n, 8) for _ in range(3))
    pattern, _, _ = explicit_attention(q, k, v, 1.5)
    _, lse = F.attention_with_lse(q, k, v, 1.5)
    reads = [s.reads for s in attention_scores() if not on_natural_text(s.reads)]
    reads += [Column(key=5, start=lambda lay: 2), KeySet(mask=prefix_mask, start=lambda lay: lay.later_start)]
    plan = pair_plan(reads, tokens, layout)
    for chunk in (7, 1 << 16):  # pairs read a few at a time, across the declarations' boundaries, or at once
        got = reduce_qk_plan(plan, q, k, lse, 1.5, chunk=chunk)
        assert got.shape == (len(reads), 4)
        for row, r, count in zip(got, reads, plan.counts):
            want, n_want = reduce_pattern(r, pattern, layout, prepare(r, tokens, layout))
            assert count == n_want
            torch.testing.assert_close(row, want, atol=1e-5, rtol=1e-5)
            assert want.abs().max() > 0.05
    assert reduce_qk_plan(pair_plan([], tokens, layout), q, k, lse, 1.5).shape == (0, 4)


def test_plan_entries_read_any_layout_and_sum_every_layer_at_once():
    # The scan gathers each layer's entries straight from q, k and lse as the kernel hands them
    # over (q and lse laid out [batch, n, head], k [batch, head, n]) and sums all layers once
    # per chunk (plan_sums over a leading layer axis): the same sums as each layer on its own.
    torch.manual_seed(4)
    layout = RepeatLayout(seq_len=6, repeats=2, bos=True)
    n = layout.n_tokens
    tokens = torch.randint(0, 4, (3, n))
    plan = pair_plan([s.reads for s in attention_scores() if not on_natural_text(s.reads)], tokens, layout)
    layers = []
    for _ in range(2):
        q, k, v = (torch.randn(3, 4, n, 8) for _ in range(3))
        _, lse = F.attention_with_lse(q, k, v, 0.7)
        moved = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, lse)]  # same values, other strides
        assert not moved[0].is_contiguous()
        layers.append((reduce_qk_plan(plan, q, k, lse, 0.7), plan_entries(plan, moved[0], k, moved[1], 0.7)))
    summed = plan_sums(torch.stack([e for _, e in layers]), plan)
    torch.testing.assert_close(summed, torch.stack([want for want, _ in layers]), atol=1e-6, rtol=1e-6)
    assert summed.abs().max() > 0.05


def test_a_stripe_outside_the_causal_past_is_refused_by_the_plan_too():
    layout = RepeatLayout(seq_len=4, repeats=2, bos=False)
    ahead = Stripe(offset=lambda lay: 1, start=lambda lay: 0)
    with pytest.raises(ValueError, match="causal past"):
        pair_plan([ahead], torch.zeros(1, layout.n_tokens, dtype=torch.long), layout)


def test_prefix_pairs_are_exactly_the_prefix_mask():
    layout = RepeatLayout(seq_len=12, repeats=4, bos=False)
    tokens = torch.randint(0, 4, (3, layout.n_tokens), generator=torch.Generator().manual_seed(2))
    b, i, j = prefix_pairs(tokens, layout)
    dense = torch.zeros(3, layout.n_tokens - layout.later_start, layout.n_tokens, dtype=torch.bool)
    dense[b, i - layout.later_start, j] = True
    assert len(b) == int(dense.sum())  # no pair listed twice
    assert torch.equal(dense, prefix_mask(tokens, layout))


# --- the routed model ---------------------------------------------------------------------------


def check_fused_equals_eager(model, seq_len, batch, chunk):
    assert F.fused_supported(model), F.fused_unsupported_reason(model)
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=3, seed=0)
    eager = score_pass(model, rt, chunk, keep_z_mean=True, attention="eager")
    fused = score_pass(model, rt, chunk, keep_z_mean=True, attention="fused", keep_residuals=[1])
    assert (eager.attention, fused.attention) == ("eager", "fused")
    on_scan = {s.name for s in attention_scores() if not on_natural_text(s.reads)}  # attention_sink: natural text
    assert set(fused.means) == set(eager.means) >= on_scan | {"direct_logit_later"}
    for name in eager.means:
        diff = abs(fused.means[name] - eager.means[name]).max()
        assert diff < TOL, f"{name}: fused and eager differ by {diff}"
    # logits go through every layer in float32: compare the loss relative to its size (~ln vocab)
    torch.testing.assert_close(fused.per_position_loss, eager.per_position_loss, rtol=2e-6, atol=1e-5)
    torch.testing.assert_close(fused.z_mean, eager.z_mean, rtol=1e-5, atol=1e-6)
    assert fused.residuals[1].shape == (batch, rt.layout.n_tokens, model.cfg.d_model)
    return eager.means


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_scores_equal_eager_on_tiny_models(name, request):
    check_fused_equals_eager(request.getfixturevalue(name), seq_len=11, batch=3, chunk=2)


@pytest.mark.smollm2
def test_fused_scores_equal_eager_on_smollm2(smollm2):
    eager = check_fused_equals_eager(smollm2, seq_len=20, batch=4, chunk=4)
    assert eager["induction"].max() > 0.5  # real induction heads: the comparison has teeth
    assert abs(eager["direct_logit_later"]).max() > 0.5


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_scores_read_in_one_gather_equal_scores_read_one_by_one(name, request, monkeypatch):
    # The GPU's default (every declaration in one gather per layer, the direct-logit reads kept
    # and reduced after the pass) against the CPU's (one declaration at a time, from views; the
    # direct-logit reads per layer), both on the CPU here, over two chunks of sequences; and the
    # gather with z too large to keep (the direct-logit reads fall back to per layer).
    from headscope.scan import direct

    model = request.getfixturevalue(name)
    rt = repeated_tokens(model, seq_len=12, batch=4, repeats=3, seed=1)
    apart = score_pass(model, rt, 2, attention="fused", reads_together=False)
    runs = [score_pass(model, rt, 2, attention="fused", reads_together=True)]
    monkeypatch.setattr(direct, "KEEP_BYTES", 0)
    runs.append(score_pass(model, rt, 2, attention="fused", reads_together=True))
    for together in runs:
        assert set(apart.means) == set(together.means)
        for name in apart.means:
            np.testing.assert_allclose(together.means[name], apart.means[name], rtol=1e-6, atol=1e-6, err_msg=name)
    assert max(abs(v).max() for v in apart.means.values()) > 0.05


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_pass_fires_the_scan_s_hooks_but_not_the_pattern(name, request):
    # The hooks the scan's own reductions use (the direct-logit pass's, z, residuals) fire on the
    # fused route exactly as on the eager one; the pattern hook fires only on the eager one.
    from headscope.folded_weights import head_weights
    from headscope.scan.direct import DirectPass, unembedding

    model = request.getfixturevalue(name)
    tokens = torch.arange(100, 120)[None]
    w = head_weights(model)
    direct = [n for n, _ in DirectPass(model, tokens, w, unembedding(model, w)).hooks]
    L = model.cfg.n_layers
    names = direct + [f"blocks.{l}.{h}" for l in range(L) for h in ("hook_resid_pre", "attn.hook_pattern")]
    fired = {}
    for route in ("eager", "fused"):
        seen = fired[route] = set()
        hooks = [(n, lambda x, hook, n=n, seen=seen: seen.add(n)) for n in set(names)]
        with torch.no_grad(), F.fused_attention(model) if route == "fused" else nullcontext():
            model.run_with_hooks(tokens, fwd_hooks=hooks, use_cache=False)
    assert {f"blocks.{l}.attn.hook_z" for l in range(L)} | {"hook_embed", "ln_final.hook_scale"} <= set(direct)
    assert fired["eager"] == set(names)
    assert fired["fused"] == {n for n in names if "hook_pattern" not in n}


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
    # The whole pass: every registry score, the direct-logit reduction, the loss, z means.
    model = request.getfixturevalue(name)
    rt = repeated_tokens(model, seq_len=23, batch=2, repeats=2, seed=0)
    n = rt.layout.n_tokens
    assert n == 47 and 47 not in (model.cfg.d_model, model.cfg.n_heads, model.cfg.d_head)
    with QuadraticTensors(n) as eager:
        score_pass(model, rt, 2, attention="eager")
    assert eager.seen, "the detector must see the eager pattern, or it proves nothing"
    with QuadraticTensors(n) as fused:
        res = score_pass(model, rt, 2, keep_z_mean=True, attention="fused")
    assert fused.seen == []
    assert res.means["induction"].max() > 0


def test_fused_context_restores_the_eager_model_even_after_an_error(tiny_llama):
    impl = tiny_llama.original_model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"), F.fused_attention(tiny_llama):
        raise RuntimeError("boom")
    assert tiny_llama.original_model.config._attn_implementation == impl
    assert "forward" not in tiny_llama.blocks[0].attn.__dict__
    assert "forward" not in tiny_llama.blocks[0].attn.original_component.__dict__
    seen = []
    with torch.no_grad():
        tiny_llama.run_with_hooks(
            torch.arange(100, 110)[None],
            fwd_hooks=[("blocks.0.attn.hook_pattern", lambda p, hook: seen.append(p.shape))],
        )
    assert seen == [torch.Size([1, 4, 10, 10])]


def test_fused_norms_skip_the_bridge_s_hook_values_only_while_nothing_hooks_them(tiny_llama):
    # Inside the fused block an unhooked norm runs the HF module alone: the same output as the
    # bridge's norm; a hooked one still fires its hooks, and an edit through them still counts.
    tokens = torch.arange(100, 110)[None]
    norm = tiny_llama.blocks[1].ln1
    with torch.no_grad():
        plain = tiny_llama.run_with_hooks(tokens, fwd_hooks=[])
        with F.fused_attention(tiny_llama):
            assert "forward" in norm.__dict__
            lean = tiny_llama.run_with_hooks(tokens, fwd_hooks=[])
            seen = []
            hooked = tiny_llama.run_with_hooks(
                tokens, fwd_hooks=[("blocks.1.ln1.hook_scale", lambda s, hook: seen.append(s.shape))]
            )
            with pytest.warns(UserWarning, match="edited hook_scale"):  # the bridge's own path ran
                doubled = tiny_llama.run_with_hooks(
                    tokens, fwd_hooks=[("blocks.1.ln1.hook_scale", lambda s, hook: 2 * s)]
                )
    assert "forward" not in norm.__dict__
    torch.testing.assert_close(lean, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
    assert seen == [torch.Size([1, 10, 1])]
    assert not torch.allclose(doubled, plain, atol=1e-3)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_fused_refuses_a_padding_mask_instead_of_dropping_it(name, request):
    model = request.getfixturevalue(name)
    tokens = torch.arange(100, 110)[None]
    mask = torch.ones_like(tokens)
    mask[0, :2] = 0
    with pytest.raises(F.FusedUnsupported, match="padding"), torch.no_grad(), F.fused_attention(model):
        model(tokens, attention_mask=mask, use_cache=False)


def test_unroutable_model_says_why_and_auto_falls_back_to_eager(tiny_gpt2):
    tiny_gpt2.cfg.use_attn_result = True
    try:
        assert "use_attn_result" in F.fused_unsupported_reason(tiny_gpt2)
        with pytest.raises(F.FusedUnsupported, match="use_attn_result"), F.fused_attention(tiny_gpt2):
            pass
        with pytest.raises(F.FusedUnsupported, match="use_attn_result"):
            scan_induction(tiny_gpt2, seq_len=5, batch=1, ablate=False, sample=False, attention="fused")
        res = scan_induction(tiny_gpt2, seq_len=5, batch=1, ablate=False, sample=False, attention="auto")
        assert res.settings["attention"] == "eager"
    finally:
        tiny_gpt2.cfg.use_attn_result = False
    assert F.fused_supported(tiny_gpt2)


def test_unknown_attention_is_refused(tiny_gpt2):
    from headscope.errors import BadInput

    with pytest.raises(BadInput, match="flash"):
        scan_induction(tiny_gpt2, seq_len=5, batch=1, ablate=False, sample=False, attention="flash")


def test_nested_blocks_on_two_models_keep_their_callbacks_apart(tiny_gpt2, tiny_llama):
    seen = {"gpt2": [], "llama": [], "llama_inner": []}
    tokens = torch.arange(100, 110)[None]
    with torch.no_grad(), F.fused_attention(tiny_gpt2, lambda l, *a: seen["gpt2"].append(l)):
        with F.fused_attention(tiny_llama, lambda l, *a: seen["llama"].append(l)):
            with F.fused_attention(tiny_llama.bridge, lambda l, *a: seen["llama_inner"].append(l)):
                tiny_llama(tokens, use_cache=False)  # the wrapper and its bare bridge are one routed model
            tiny_llama(tokens, use_cache=False)  # the inner block's exit left the outer one routed
        tiny_gpt2(tokens, use_cache=False)
    assert seen == {"gpt2": [0, 1], "llama": [0, 1, 2, 0, 1, 2], "llama_inner": [0, 1, 2]}
    assert "forward" not in tiny_llama.blocks[0].attn.__dict__


# --- the whole scan, both routes ------------------------------------------------------------------


def test_scan_induction_fused_equals_eager_scores_roles_and_ablations(tiny_llama):
    kw = dict(seq_len=9, batch=3, top_k=2, sample=False, progress=False)
    eager = scan_induction(tiny_llama, attention="eager", **kw)
    fused = scan_induction(tiny_llama, **kw)  # auto
    assert (eager.settings["attention"], fused.settings["attention"]) == ("eager", "fused")
    assert list(fused.scores) == list(eager.scores) and set(fused.scores) == set(score_names()) - {"attention_sink"}
    for name in eager.scores:
        np.testing.assert_allclose(fused.scores[name], eager.scores[name], atol=TOL, rtol=0, err_msg=name)
    np.testing.assert_allclose(fused.per_position_loss, eager.per_position_loss, atol=2e-5, rtol=2e-6)
    assert [a["heads"] for a in fused.ablation] == [a["heads"] for a in eager.ablation]
    for a, b in zip(fused.ablation, eager.ablation, strict=True):
        assert abs(a["loss"] - b["loss"]) < 2e-5 and abs(a["loss_increase"] - b["loss_increase"]) < 2e-5
    assert fused.roles() == eager.roles()


def test_fused_chunk_rule_has_no_quadratic_term_and_max_memory_bounds_it():
    args = dict(d_model=576, d_mlp=1536, d_vocab=49152, batch=10**6, max_memory_gb=1000.0, n_layers=30, n_heads=9)
    per_seq = {n: 1000.0 * 2**30 / fused_chunk_size_for(n, **args) for n in (1000, 8000)}
    assert 7.5 < per_seq[8000] / per_seq[1000] < 8.5  # linear in n (an n^2 term would make it ~64)
    assert fused_chunk_size_for(8191, **{**args, "max_memory_gb": 0.001}) == 1  # never below one sequence
    assert fused_chunk_size_for(4097, **{**args, "max_memory_gb": 2.0}) == 1  # 1.7 GiB per 4,097-token sequence
    assert fused_chunk_size_for(101, **{**args, "batch": 10}) == 10


def test_scan_records_the_chunk_its_budget_allows(tiny_gpt2):
    small = scan_induction(tiny_gpt2, seq_len=20, batch=4, ablate=False, sample=False, max_memory_gb=0.01)
    large = scan_induction(tiny_gpt2, seq_len=20, batch=4, ablate=False, sample=False, max_memory_gb=2.0)
    assert small.settings["chunk_size"] == 1 and large.settings["chunk_size"] == 4
    np.testing.assert_allclose(small.scores["induction"], large.scores["induction"], atol=1e-6)


# --- restart-from-residual ablation -------------------------------------------------------------


def check_restart_equals_full(model, seq_len, batch, chunk, head_sets, fused, zero=True):
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=2, seed=0)
    z_mean = score_pass(model, rt, chunk, keep_z_mean=True, attention="eager").z_mean
    layers = {A.first_layer(h) for h in head_sets}
    residuals = A.capture_residuals(model, rt.tokens, layers, chunk=chunk, fused=fused)
    for heads in head_sets:
        for zm in (z_mean, None) if zero else (z_mean,):
            full = ablated_later_loss(model, rt, heads, chunk, zm)
            restarted = A.ablated_later_loss_restart(model, rt, heads, chunk, zm, residuals, fused=fused)
            assert abs(full - restarted) < TOL, (heads, zm is None, full, restarted)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_restarted_ablation_equals_full_ablation(name, request):
    model = request.getfixturevalue(name)
    L = model.cfg.n_layers
    check_restart_equals_full(model, 10, 3, 2, [[(L - 1, 1)], [(1, 0), (L - 1, 2)], [(0, 3)]], fused=True)


def test_restarted_ablation_equals_full_ablation_on_the_eager_route(tiny_llama):
    check_restart_equals_full(tiny_llama, 10, 3, 2, [[(2, 1)], [(1, 0), (2, 2)]], fused=False)


@pytest.mark.smollm2
def test_restarted_ablation_equals_full_ablation_on_smollm2(smollm2):
    check_restart_equals_full(smollm2, 20, 4, 4, [[(20, 1), (12, 3)], [(29, 8)]], fused=True, zero=False)


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


def test_scan_without_kept_residuals_recomputes_them_and_gets_the_same_ablation(tiny_gpt2):
    kw = dict(seq_len=12, batch=3, top_k=2, sample=False, progress=False)
    kept = scan_induction(tiny_gpt2, **kw)
    # a budget so small that keeping every layer's residual is refused: they are captured after scoring
    captured = scan_induction(tiny_gpt2, max_memory_gb=1e-4, **kw)
    for a, b in zip(kept.ablation, captured.ablation, strict=True):
        assert a["heads"] == b["heads"] and abs(a["loss"] - b["loss"]) < TOL


# --- copying scores once per model --------------------------------------------------------------


def test_copying_scores_are_computed_once_and_again_after_a_weight_change(tiny_gpt2, monkeypatch, tmp_path):
    from headscope.scores import registry

    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))  # an empty disk cache: the first call computes
    calls = []
    copying = registry.score("copying")
    original = copying.from_weights
    spy = lambda w, inputs: calls.append(1) or original(w, inputs)  # noqa: E731
    monkeypatch.setattr(
        registry,
        "SCORES",
        tuple(s if s.name != "copying" else type(s)(**{**s.__dict__, "from_weights": spy}) for s in registry.SCORES),
    )
    tiny_gpt2.cache.pop("weight_scores", None)
    first = weight_score_arrays(tiny_gpt2)["copying"]
    W_O = direct_weights(tiny_gpt2)[0].W_O.clone()  # the direct-logit reduction's cached weights
    assert np.array_equal(weight_score_arrays(tiny_gpt2)["copying"], first) and len(calls) == 1
    w = tiny_gpt2.blocks[1].attn.o.original_component.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(-1.0)  # flips every head's OV circuit of layer 1: its copying scores change sign
        changed = weight_score_arrays(tiny_gpt2)["copying"]
        assert len(calls) == 2
        np.testing.assert_allclose(changed[1], -first[1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(direct_weights(tiny_gpt2)[0].W_O[1], -W_O[1])  # recomputed too
    finally:
        with torch.no_grad():
            w.copy_(saved)
        tiny_gpt2.cache.pop("weight_scores", None)
        tiny_gpt2.cache.pop("direct_weights", None)


def test_weight_scores_come_back_from_the_disk_cache_for_the_same_weights(tiny_gpt2_dir, monkeypatch, tmp_path):
    import headscope
    from headscope.scores import registry

    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path))
    first = weight_score_arrays(headscope.load_model(str(tiny_gpt2_dir), device="cpu"))
    assert len(list((tmp_path / "scores").glob("*.json"))) == 1  # keyed by a sha256 of the weights
    calls = []
    monkeypatch.setattr(
        registry,
        "SCORES",
        tuple(
            type(s)(**{**s.__dict__, "from_weights": lambda w, inputs: calls.append(1)}) if s.from_weights else s
            for s in registry.SCORES
        ),
    )
    again = weight_score_arrays(headscope.load_model(str(tiny_gpt2_dir), device="cpu"))  # a new process, say
    assert calls == [] and again.keys() == first.keys()
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
