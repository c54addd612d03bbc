"""A result's accessors refuse what they do not hold with BadInput, not an IndexError, KeyError or a quiet []."""

from __future__ import annotations

import pytest

import headscope

TEXT = "a b c a b c"


@pytest.fixture(scope="module")
def live(tiny_gpt2):
    return headscope.qk_scores(tiny_gpt2, ["1.2", (0, 1)], [TEXT, "x y"])


def test_qk_scores_plot_a_head_it_lacks_or_a_sequence_past_the_end(live):
    with pytest.raises(headscope.BadInput, match="head L1H3 is not in this result; it has L1H2, L0H1"):
        live.plot(0, "1.3")
    with pytest.raises(headscope.BadInput, match="sequence 5 does not exist: this result has 2"):
        live.plot(5, "1.2")
    with pytest.raises(headscope.BadInput, match="sequence 2 does not exist"):
        live.plot_grid(2)
    with pytest.raises(headscope.BadInput, match="not in this result"):
        live.used_offset((1, 3))


def test_decomposition_top_checks_side_by_and_k(tiny_gpt2):
    d = headscope.decompose_qk(tiny_gpt2, "1.2", TEXT)
    assert len(d.top("key", 3, by="vs_mean_key")) == 3
    with pytest.raises(headscope.BadInput, match="unknown side 'keys'"):
        d.top("keys", 3)
    with pytest.raises(headscope.BadInput, match="unknown by 'nope'"):
        d.top("key", 3, by="nope")
    with pytest.raises(headscope.BadInput, match="k=-1"):
        d.top("key", -1)


def test_composition_top_sources_checks_the_head_and_kind(tiny_gpt2):
    c = headscope.composition_scores(tiny_gpt2, kinds=("K",), baseline_samples=4)
    assert len(c.top_sources(1, 2, "K", 2)) == 2
    with pytest.raises(headscope.BadInput, match="two integers"):
        c.top_sources("1.2", "K", 3)
    with pytest.raises(headscope.BadInput, match="L9H2 does not exist"):
        c.top_sources(9, 2, "K")
    with pytest.raises(headscope.BadInput, match="unknown composition kind \\(computed here\\) 'Q'"):
        c.top_sources(1, 2, "Q")


def test_logit_tops_refuse_a_negative_count(tiny_gpt2):
    la = headscope.logit_attribution(tiny_gpt2, TEXT)
    assert len(la.top(0)) == 0
    with pytest.raises(headscope.BadInput, match="k=-1"):
        la.top(-1)
    with pytest.raises(headscope.BadInput, match="unknown sign 2"):
        la.top(3, sign=2)
