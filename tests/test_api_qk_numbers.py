"""Counts the QK functions take are checked up front: BadInput, never a negative-size slice or an IndexError."""

from __future__ import annotations

import pytest

import headscope


@pytest.mark.parametrize(("n", "says"), [(-3, "at least 1"), (0, "at least 1"), (8.0, "whole number")])
def test_positional_qk_refuses_a_bad_number_of_positions(tiny_gpt2, tiny_llama, n, says):
    for model in (tiny_gpt2, tiny_llama):  # learned positions once gave a 253 x 253 matrix for -3
        with pytest.raises(headscope.BadInput, match=f"n_positions.*{says}"):
            headscope.positional_qk(model, "1.2", n_positions=n)


def test_token_qk_directions_are_at_most_the_rank(tiny_gpt2):
    assert len(headscope.token_qk(tiny_gpt2, "1.2", [5, 6], directions=16).directions) == 16
    with pytest.raises(headscope.BadInput, match="directions must be 0..16 \\(got 100\\)"):
        headscope.token_qk(tiny_gpt2, "1.2", [5, 6], directions=100)
    with pytest.raises(headscope.BadInput, match="per_direction"):
        headscope.token_qk(tiny_gpt2, "1.2", [5, 6], per_direction=-1)


@pytest.mark.parametrize(("b", "says"), [(-1, "at least 2"), (0, "at least 2"), (2.0, "whole number")])
def test_composition_baseline_samples_are_checked(tiny_gpt2, b, says):
    with pytest.raises(headscope.BadInput, match=f"baseline_samples.*{says}"):
        headscope.composition_scores(tiny_gpt2, baseline_samples=b)


def test_composition_kinds_none_is_bad_input(tiny_gpt2):
    with pytest.raises(headscope.BadInput, match="no composition kinds given"):
        headscope.composition_scores(tiny_gpt2, kinds=None)


def test_analyze_qk_checks_the_query_on_every_text_before_any_forward_pass(tiny_gpt2, monkeypatch):
    from headscope.qk import analysis

    def no_scan(model):
        raise AssertionError("the quick scan ran before the query was checked")

    monkeypatch.setattr(analysis, "quick_scan", no_scan)
    with pytest.raises(headscope.BadInput, match="query position 4 is outside the sequence of 3 tokens"):
        headscope.analyze_qk(tiny_gpt2, ["one two three four", "one two"], query=4)
    with pytest.raises(headscope.BadInput, match="query must be a whole number"):
        headscope.analyze_qk(tiny_gpt2, "one two", query=1.0)
