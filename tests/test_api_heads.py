"""Heads as the API takes them: one head or a list, every spelling; wrong ones are BadInput that says why."""

from __future__ import annotations

import numpy as np
import pytest

import headscope

TEXT = "a b c a b c"


@pytest.mark.parametrize("heads", ["1.2", "L1H2", (1, 2), [1, 2], np.array([1, 2]), ["1.2"], [(1, 2)]])
def test_one_head_in_any_spelling(tiny_gpt2, heads):
    assert headscope.qk_scores(tiny_gpt2, heads, TEXT).heads == [(1, 2)]
    assert (
        headscope.decompose_qk(tiny_gpt2, heads, TEXT).layer,
        headscope.decompose_qk(tiny_gpt2, heads, TEXT).head,
    ) == (1, 2)


@pytest.mark.parametrize(
    ("heads", "says"),
    [(None, "no head given"), (1.2, "malformed head 1.2 \\(float\\)"), (7, "malformed head 7 \\(int\\)")],
)
def test_no_head_or_a_bare_number_is_bad_input(tiny_gpt2, heads, says):
    for call in (
        lambda: headscope.qk_scores(tiny_gpt2, heads, TEXT),
        lambda: headscope.positional_qk(tiny_gpt2, heads),
        lambda: headscope.decompose_qk(tiny_gpt2, heads, TEXT),
    ):
        with pytest.raises(headscope.BadInput, match=says):
            call()


@pytest.mark.parametrize("heads", ["1.2,0.1", ["1.2", "0.1"], [(1, 2), (0, 1)]])
def test_a_single_head_analysis_refuses_several_heads(tiny_gpt2, heads):
    for what, call in (
        ("decompose_qk", lambda: headscope.decompose_qk(tiny_gpt2, heads, TEXT)),
        ("ov_circuit", lambda: headscope.ov_circuit(tiny_gpt2, heads, [" cat"])),
        ("token_qk", lambda: headscope.token_qk(tiny_gpt2, heads, [5, 6])),
    ):
        with pytest.raises(headscope.BadInput, match=f"{what} reads one head; 2 were given \\(L1H2, L0H1\\)"):
            call()
