"""decompose_qk's text and positions: None is the first built-in sample, as in logit_attribution; a position
that is not a whole number is BadInput naming it (not an IndexError from inside)."""

from __future__ import annotations

import numpy as np
import pytest

import headscope
from headscope.models.inputs import SAMPLE_TEXTS


def test_no_text_is_the_first_sample_as_in_logit_attribution(tiny_gpt2):
    d = headscope.decompose_qk(tiny_gpt2, "1.2")
    assert d.sequence.text == headscope.logit_attribution(tiny_gpt2).sequence.text == SAMPLE_TEXTS[0]
    assert d == headscope.decompose_qk(tiny_gpt2, "1.2", SAMPLE_TEXTS[0])


@pytest.mark.parametrize(("where", "value"), [("query", 3.0), ("query", "3"), ("key", 1.5), ("query", True)])
def test_a_position_that_is_not_a_whole_number_is_bad_input(tiny_gpt2, where, value):
    kw = {"query": 4, where: value}
    with pytest.raises(headscope.BadInput, match=f"{where} must be a whole number, got {value!r}"):
        headscope.decompose_qk(tiny_gpt2, "1.2", "a b c a b c", **kw)


def test_numpy_positions_still_work(tiny_gpt2):
    d = headscope.decompose_qk(tiny_gpt2, "1.2", "a b c a b c", query=np.int64(4), key=np.int64(2))
    assert d.pairs == [(4, 2)]
