"""Induction against copy distance (headscope.toy.offsets): the sequences, the read, the aim.

Checked against hand-made attention patterns with a known answer and against an independent
code path (TransformerBridge's ``hook_pattern`` on a toy checkpoint); the trained numbers are
in docs/toy.md, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headscope
from headscope.toy import ToyConfig, build_model, build_tokenizer
from headscope.toy.offsets import OffsetCurves, induction_by_distance, offset_batch, stripe_at


@pytest.mark.parametrize("distance", [3, 4, 17, 40, 61])
def test_each_copied_token_occurs_exactly_once_before_exactly_distance_back(distance):
    tokens, queries = offset_batch(64, 64, distance, 16, torch.Generator().manual_seed(distance))
    k = min(8, distance, 64 - 1 - distance)  # by hand: 3 -> 3, 40 -> 8, 61 -> 2
    assert queries.shape == (16, k) and (tokens[:, 0] == 64).all() and (tokens[:, 1:] < 64).all()
    assert (queries - distance >= 1).all() and (queries < 64).all()
    for row, q in zip(tokens.tolist(), queries.tolist()):
        span = [row[i] for i in q]
        assert len(set(span)) == k  # distinct
        for i in q:
            assert [j for j, t in enumerate(row) if t == row[i]] == [i - distance, i]  # only there


def test_stripe_reads_the_key_right_after_the_earlier_occurrence():
    n, d = 12, 4
    queries = torch.tensor([[6, 7, 8], [8, 9, 10]])
    perfect = torch.zeros(2, 2, n, n)  # head 0: every query on its induction key; head 1: one token too early
    for b in range(2):
        for q in range(n):
            perfect[b, 0, q, max(q - d + 1, 0)] = 1.0
            perfect[b, 1, q, max(q - d, 0)] = 1.0
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]  # query q spreads 1/(q+1)
    uniform = uniform.expand(2, 2, n, n)
    got = stripe_at([perfect, uniform], queries, d)
    by_hand = np.mean([1 / (q + 1) for q in (6, 7, 8, 8, 9, 10)])
    np.testing.assert_allclose(got, [[1.0, 0.0], [by_hand, by_hand]], atol=1e-12)


def test_hf_attention_and_the_bridges_hook_pattern_give_the_same_scores(tmp_path):
    cfg = ToyConfig(seed=3)
    hf = build_model(cfg)
    hf.save_pretrained(tmp_path)
    build_tokenizer(cfg.vocab).save_pretrained(tmp_path)
    distances = [3, 10, 33, 61]
    ours = induction_by_distance(hf, cfg.vocab, cfg.n_ctx, distances, batch=8, seed=5)
    assert ours.shape == (2, 4, 4) and np.isfinite(ours).all()
    bridge = headscope.load_model(str(tmp_path), device="cpu")
    gen = torch.Generator().manual_seed(5)
    for j, d in enumerate(distances):  # the same draws, in the same order
        tokens, queries = offset_batch(cfg.vocab, cfg.n_ctx, d, 8, gen)
        _, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
        patterns = [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(2)]
        np.testing.assert_allclose(stripe_at(patterns, queries, d), ours[..., j], atol=1e-5)


def test_the_every_offset_aim_needs_every_distance_and_the_recheck():
    dist = list(range(3, 62))
    grid = np.full((2, 4, len(dist)), 0.05)
    grid[1, 2] = 0.9
    grid[1, 2, dist.index(7)] = 0.45  # lowest, still above 0.4
    off = OffsetCurves(dist, 32, 0, {100: grid}, recheck=grid.copy(), recheck_batch=256, recheck_seed=1)
    aim = off.aim(100, (1, 2))
    assert aim["induction_head_at_every_offset"] and aim["offset_min_distance"] == 7
    assert aim["offset_min"] == pytest.approx(0.45) and aim["offset_recheck_max_difference"] == 0
    assert off.bins(grid[1, 2])[0] == {"distances": "3-8", "min": 0.45, "mean": pytest.approx((5 * 0.9 + 0.45) / 6)}
    off.recheck[1, 2, 0] = 0.3  # the fresh sample disagrees at distance 3: not shown at every distance
    assert not off.aim(100, (1, 2))["induction_head_at_every_offset"]
    grid[1, 2, -1] = 0.39  # below the threshold at distance 61
    assert not OffsetCurves(dist, 32, 0, {100: grid}).aim(100, (1, 2))["induction_head_at_every_offset"]
