"""The causal check's targets and noise model (issue 19 items 2 and 6).

- Later-repeat targets (:func:`~headscope.scores.layout.later_repeat_targets`) against a hand-built
  layout and an independent rule: a target counts when its (previous, current) token pair occurred
  earlier in the sequence, which is exactly when some context can predict it.
- The bootstrap against cases whose answer is known by hand or by the normal approximation.
- Every ablation entry's interval is the bootstrap of per-sequence differences measured by full
  passes from the embedding; resample ablation replaces a head's output by another sequence's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headscope.results.scan_result import InductionResult
from headscope.scan import ablation as A
from headscope.scan.causal import ablation_plan, causal_check, control_heads
from headscope.scan.induction_scan import (
    ablated_losses_full,
    first_repeat_mean,
    later_repeat_mean,
    scan_induction,
    score_pass,
)
from headscope.scan.sequences import RepeatedTokens, repeated_tokens
from headscope.scores import ablation_verdict
from headscope.scores.layout import RepeatLayout, first_repeat_targets, later_repeat_targets
from headscope.stats import bootstrap_interval, signed, spread

# --- item 2: which later-repeat targets count ---------------------------------------------------


def pair_rule_targets(tokens: list[int]) -> list[int]:
    """Scored positions p (p predicts token p + 1) whose (token p, token p + 1) pair occurred earlier."""
    seen, out = set(), []
    for p in range(len(tokens) - 1):
        pair = (tokens[p], tokens[p + 1])
        if pair in seen:
            out.append(p)
        seen.add(pair)
    return out


def test_later_targets_of_a_hand_built_layout():
    # B r0 r1 r2 r3 | r0 r1 r2 r3 | r0 r1 r2 r3: token 5 (r0 after r3) opens repeat 2 after a pair seen
    # nowhere before; token 9 (r0 after r3 again) follows the pair seen at tokens 4-5, so it counts
    lay = RepeatLayout(seq_len=4, repeats=3, bos=True)
    assert later_repeat_targets(lay).tolist() == [5, 6, 7, 8, 9, 10, 11]
    assert first_repeat_targets(lay).tolist() == [0, 1, 2, 3]
    lay = RepeatLayout(seq_len=2, repeats=2, bos=False)  # r0 r1 r0 r1
    assert later_repeat_targets(lay).tolist() == [2]
    assert first_repeat_targets(lay).tolist() == [0]


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("repeats", [2, 3, 5])
@pytest.mark.parametrize("seq_len", [2, 3, 7, 50])
def test_later_targets_are_the_targets_an_earlier_pair_predicts(seq_len, repeats, bos):
    r = (torch.randperm(1000)[:seq_len] + 1).tolist()  # distinct tokens: no pair repeats by chance
    tokens = ([0] if bos else []) + r * repeats
    lay = RepeatLayout(seq_len, repeats, bos)
    assert later_repeat_targets(lay).tolist() == pair_rule_targets(tokens)


def test_loss_means_read_exactly_those_targets():
    lay = RepeatLayout(seq_len=3, repeats=3, bos=True)  # 10 tokens, 9 scored positions
    per_pos = torch.arange(18, dtype=torch.float32).reshape(2, 9)
    torch.testing.assert_close(later_repeat_mean(per_pos, lay), torch.tensor([6.0, 15.0]))
    torch.testing.assert_close(first_repeat_mean(per_pos, lay), torch.tensor([1.0, 10.0]))


def test_scan_loss_and_direct_effect_leave_out_the_unpredictable_targets(tiny_gpt2):
    res = scan_induction(tiny_gpt2, seq_len=6, batch=3, ablate=False, sample=False, progress=False)
    rt = repeated_tokens(tiny_gpt2, seq_len=6, batch=3, seed=0)
    for row in rt.tokens.tolist():  # the pair rule applies to these sequences as built
        assert pair_rule_targets(row) == later_repeat_targets(rt.layout).tolist()
    keep = pair_rule_targets(rt.tokens[0].tolist())
    assert res.loss_later_repeats == pytest.approx(float(res.per_position_loss[keep].mean()), abs=1e-5)


# --- item 6: the bootstrap ----------------------------------------------------------------------


def test_bootstrap_of_two_values_spans_them():
    # resampled means of [0, 1]: 0, 0.5, 1 with probability 1/4, 1/2, 1/4: 2.5% and 97.5% are 0 and 1
    assert bootstrap_interval([0.0, 1.0], resamples=4000, seed=1) == (0.0, 1.0)


def test_bootstrap_matches_the_normal_approximation_on_a_large_sample():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_interval(x, seed=2)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.03) and hi == pytest.approx(x.mean() + half, abs=0.03)
    assert bootstrap_interval(x, seed=2) == (lo, hi)  # seeded: repeats exactly


def test_bootstrap_refuses_what_it_cannot_state():
    for bad in ([], [1.0, float("nan")], [[1.0, 2.0]]):
        with pytest.raises(ValueError):
            bootstrap_interval(bad)


def test_spread_of_draws():
    s = spread([3.0, -1.0, 10.0, 0.5])  # the range is two of the draws, never a value between or past them
    assert (s["median"], s["min"], s["max"], s["n"]) == (1.75, -1.0, 10.0, 4)


def test_verdict_needs_the_whole_interval_on_one_side():
    assert ablation_verdict(1e-9, 2.0) == "raises"
    assert ablation_verdict(0.0, 2.0) == "no clear change"
    assert ablation_verdict(-2.0, -1e-9) == "lowers"


# --- item 6: the causal check ------------------------------------------------------------------


def test_donors_are_always_another_sequence():
    for b in (2, 3, 10):
        for seed in range(5):
            d = A.donor_order(b, seed)
            assert sorted(d.tolist()) == list(range(b)) and (d != np.arange(b)).all()
    with pytest.raises(ValueError):
        A.donor_order(1)


def test_control_draws_differ_and_avoid_the_top_heads():
    top = [(1, 0), (1, 1)]
    draws = [tuple(control_heads(2, 4, top, 0, d)) for d in range(10)]
    assert len(set(draws)) > 1 and not any(set(top) & set(d) for d in draws)
    plan = ablation_plan(2, 4, top, 0, controls=3)
    assert [k for k, _ in plan] == ["head", "head", "all_top", "control", "control", "control"]


@pytest.mark.parametrize("ablation", ["mean", "zero", "resample"])
def test_each_interval_is_the_bootstrap_of_full_pass_differences(tiny_llama, ablation):
    rt = repeated_tokens(tiny_llama, seq_len=8, batch=5, seed=2)
    scan = score_pass(tiny_llama, rt, 5, keep_z_mean=True, attention="eager", keep_residuals=range(3))
    top = [(2, 1), (1, 3)]
    entries = causal_check(
        tiny_llama,
        rt,
        top,
        (scan.later_by_sequence, scan.first_by_sequence),
        ablation=ablation,
        z_mean=scan.z_mean,
        residuals=scan.residuals,
        chunk=2,
        fused=True,
        seed=4,
        controls=3,
    )
    assert [e["kind"] for e in entries] == ["head", "head", "all_top", "control", "control", "control"]
    every = sorted({tuple(h) for e in entries for h in e["heads"]})
    repl = _reference_replacement(tiny_llama, rt, every, ablation, scan.z_mean, seed=4)
    clean_later, clean_first = ablated_losses_full(tiny_llama, rt, [], 5, None)  # no head ablated: clean
    for e in entries:
        later, first = ablated_losses_full(tiny_llama, rt, [tuple(h) for h in e["heads"]], 5, repl)
        d, d1 = later - clean_later, first - clean_first
        assert e["loss_increase"] == pytest.approx(d.mean(), abs=1e-4)
        assert e["first_repeat_increase"] == pytest.approx(d1.mean(), abs=1e-4)
        np.testing.assert_allclose(e["interval"], bootstrap_interval(d, seed=4), atol=1e-4)
        np.testing.assert_allclose(e["first_repeat_interval"], bootstrap_interval(d1, seed=4), atol=1e-4)
        assert e["verdict"] == ablation_verdict(*e["interval"])


def _reference_replacement(model, rt, heads, ablation, z_mean, seed):
    """The replacement built independently: for resample, every head's clean z read from a full eager pass."""
    if ablation != "resample":
        return None if ablation == "zero" else z_mean
    _, cache = model.run_with_cache(rt.tokens, names_filter=lambda n: n.endswith("hook_z"))
    donor = A.donor_order(rt.tokens.shape[0], seed)
    return A.Replacement("resample", donor_z={(l, h): cache[f"blocks.{l}.attn.hook_z"][donor, :, h] for l, h in heads})


def test_resample_from_identical_sequences_changes_nothing(tiny_gpt2):
    rt0 = repeated_tokens(tiny_gpt2, seq_len=6, batch=1, seed=0)
    rt = RepeatedTokens(rt0.tokens.repeat(4, 1), rt0.layout, rt0.bos_token_id)  # 4 copies: donors are the same
    scan = score_pass(tiny_gpt2, rt, 4, attention="eager", keep_residuals=[0, 1])
    entries = causal_check(
        tiny_gpt2,
        rt,
        [(1, 2)],
        (scan.later_by_sequence, scan.first_by_sequence),
        ablation="resample",
        z_mean=None,
        residuals=scan.residuals,
        chunk=4,
        fused=False,
        controls=2,
    )
    for e in entries:
        assert abs(e["loss_increase"]) < 1e-5 and e["verdict"] == "no clear change"


def test_the_result_states_intervals_verdicts_and_the_control_spread(tiny_gpt2):
    res = scan_induction(tiny_gpt2, seq_len=8, batch=4, top_k=2, sample=False, progress=False, controls=4)
    assert res.settings["controls"] == 4 and len([e for e in res.ablation if e["kind"] == "control"]) == 4
    c = res.control_spread()
    draws = [e["loss_increase"] for e in res.ablation if e["kind"] == "control"]
    assert c["median"] == pytest.approx(float(np.median(draws))) and [c["min"], c["max"]] == pytest.approx(
        [min(draws), max(draws)]
    )
    text = " ".join(res.verdicts())
    assert "4 draws of 2 other heads" in text and "first repeat" in text
    f = c["first_repeat"]  # the control's first-repeat spread, not only its median (the page gave no range)
    assert f"first repeat: median {signed(f['median'])}, draws from {signed(f['min'])} to {signed(f['max'])}" in text
    assert f"draws from {signed(min(draws))} to {signed(max(draws))} (" in text
    doc = res.to_dict()
    assert doc["ablation_control"]["n"] == 4 and all(len(e["interval"]) == 2 for e in doc["ablation"])
    frame = res.to_frame()
    (l, h), e = next(((e["layer"], e["head"]), e) for e in res.ablation if e["kind"] == "head")
    row = frame[(frame["layer"] == l) & (frame["head"] == h)].iloc[0]
    assert (row.ablation_low, row.ablation_high, row.ablation_verdict) == (*e["interval"], e["verdict"])


def _one_head_result(rise: float, interval: list[float], first: float, first_interval: list[float]):
    """A scan result holding one head's causal check, L0H1, with the given changes."""
    entry = {
        "kind": "head",
        "layer": 0,
        "head": 1,
        "heads": [[0, 1]],
        "loss": 3.0,
        "loss_increase": rise,
        "interval": interval,
        "verdict": ablation_verdict(*interval),
        "first_repeat_increase": first,
        "first_repeat_interval": first_interval,
    }
    return InductionResult({}, {}, {}, np.zeros(3), 10.0, 3.0, [entry], {})


def test_a_head_whose_interval_straddles_zero_is_not_said_to_raise():
    res = _one_head_result(0.05, [-0.01, 0.11], 0.0, [-0.01, 0.01])
    assert res.verdicts() == [
        "L0H1: ablating it does not clearly change the later-repeat loss: +0.050 nats [-0.010, +0.110]; "
        "first repeat +0.000 [-0.010, +0.010]"
    ]


def test_a_tiny_model_s_tiny_effects_are_written_out_not_as_zeros():
    """A random model's changes are about 1e-7: they printed "+0.000 nats [-0.000, +0.000]", which says nothing."""
    res = _one_head_result(1.2e-7, [-3.0e-8, 2.5e-7], -0.0, [0.0, 0.0])
    (text,) = res.verdicts()
    assert "+1.2e-07 nats [-3.0e-08, +2.5e-07]" in text and "first repeat +0.000 [+0.000, +0.000]" in text
    assert "-0.000" not in text


def test_a_model_with_too_few_other_heads_gets_one_control_of_all_of_them(tiny_gpt2):
    # 2 x 4 heads, top 4: every "random" draw would be the same 4 other heads
    res = scan_induction(tiny_gpt2, seq_len=5, batch=2, top_k=4, controls=10, sample=False, progress=False)
    controls = [e for e in res.ablation if e["kind"] == "control"]
    top = {(e["layer"], e["head"]) for e in res.ablation if e["kind"] == "head"}
    assert (
        len(controls) == 1
        and set(map(tuple, controls[0]["heads"])) == {(l, h) for l in range(2) for h in range(4)} - top
    )
    said = [v for v in res.verdicts() if v.startswith("control")]
    assert said == [said[0]] and "all 4 other heads (too few to draw at random)" in said[0] and "draws" not in said[0]
    fewer = scan_induction(tiny_gpt2, seq_len=5, batch=2, top_k=2, controls=3, sample=False, progress=False)
    assert sum(e["kind"] == "control" for e in fewer.ablation) == 3
    assert "3 draws of 2 other heads at random" in [v for v in fewer.verdicts() if v.startswith("control")][0]


def test_the_legend_says_how_many_control_draws_the_run_made(tiny_gpt2):
    from headscope.render.views.induction_view import induction_definitions

    res = scan_induction(tiny_gpt2, seq_len=5, batch=2, top_k=2, controls=3, sample=False, progress=False)
    assert "drawn at random, 3 times" in induction_definitions(res)["ablation Δloss"]
    assert "drawn at random, 10 times" in induction_definitions()["ablation Δloss"]


def test_the_control_line_sets_all_top_heads_against_each_draw():
    """'All 5 top heads: +6.97' stood beside a control with a +6.6 draw and nothing compared them."""

    def entry(kind, rise, heads):
        return {"kind": kind, "layer": 0, "head": 0, "heads": heads, "loss_increase": rise, "interval": [rise, rise],
                "verdict": "raises", "first_repeat_increase": 0.0, "first_repeat_interval": [0.0, 0.0]}  # fmt: skip

    top = [[0, 1], [0, 2]]
    draws = [entry("control", d, [[1, 0], [1, 1]]) for d in (6.64, 1.08, 0.2, 7.5)]
    res = InductionResult({}, {}, {}, np.zeros(3), 10.0, 3.0, [entry("all_top", 6.97, top), *draws], {})
    (line,) = [v for v in res.verdicts() if v.startswith("control")]
    assert line.endswith("; all 2 top heads' change (+6.970) is above 3 of the 4 draws")


def test_the_largest_draw_is_compared_paired_over_the_same_sequences():
    """The top set's interval [6.61, 7.31] overlapped the largest draw's [6.43, 6.85], and "above every
    draw" rested on the two means: the difference per sequence (both ablated the same ones) decides."""

    def entry(kind, per_seq, heads):
        d = np.asarray(per_seq)
        lo, hi = bootstrap_interval(d, seed=0)
        return {"kind": kind, "layer": 0, "head": 0, "heads": heads, "loss_increase": float(d.mean()),
                "interval": [lo, hi], "verdict": ablation_verdict(lo, hi), "first_repeat_increase": 0.0,
                "first_repeat_interval": [0.0, 0.0], "sequence_changes": d.tolist()}  # fmt: skip

    rng = np.random.default_rng(0)
    shared = rng.normal(7.0, 0.6, size=10)  # sequences differ a lot, alike for both ablations
    top = entry("all_top", shared + 0.3 + rng.normal(0, 0.05, 10), [[0, 1], [0, 2]])
    near = entry("control", shared + rng.normal(0, 0.05, 10), [[1, 0], [1, 1]])
    far = entry("control", rng.normal(0.1, 0.05, 10), [[1, 2], [1, 3]])
    assert near["interval"][1] > top["interval"][0]  # the two intervals overlap
    res = InductionResult({}, {}, {}, np.zeros(3), 10.0, 3.0, [top, near, far], {})
    (line,) = [v for v in res.verdicts() if v.startswith("control")]
    d = np.asarray(top["sequence_changes"]) - np.asarray(near["sequence_changes"])
    lo, hi = bootstrap_interval(d, seed=0)  # independently: the paired difference's interval
    assert lo > 0 and line.endswith(
        f"is above 2 of the 2 draws; above the largest draw ({signed(near['loss_increase'])}): difference "
        f"{signed(d.mean())} [{signed(lo)}, {signed(hi)}] nats, paired over the same 10 sequences"
    )
    # the same draw without the top set's lead: said to be not clearly different, not "above"
    level = entry("all_top", near["sequence_changes"] + np.tile([0.3, -0.3], 5), [[0, 1], [0, 2]])  # mean lead 0
    res = InductionResult({}, {}, {}, np.zeros(3), 10.0, 3.0, [level, near, far], {})
    (line,) = [v for v in res.verdicts() if v.startswith("control")]
    assert "not clearly different from the largest draw" in line


def test_each_ablation_keeps_its_per_sequence_changes(tiny_gpt2):
    res = scan_induction(tiny_gpt2, seq_len=6, batch=4, top_k=2, controls=3, sample=False, progress=False)
    for e in res.ablation:
        assert len(e["sequence_changes"]) == 4
        assert np.mean(e["sequence_changes"]) == pytest.approx(e["loss_increase"], abs=1e-9)
        assert bootstrap_interval(np.asarray(e["sequence_changes"]), seed=0) == pytest.approx(e["interval"])
    (line,) = [v for v in res.verdicts() if v.startswith("control")]
    assert "paired over the same 4 sequences" in line
