"""top_k takes any 2-D array of scores, torch tensors too; anything else is BadInput saying what to pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headscope

SCORES = [[0.5, 0.9], [0.75, 0.125]]
RANKED = [(0, 1, 0.9), (1, 0, 0.75)]


@pytest.mark.parametrize(
    "scores",
    [
        torch.tensor(SCORES, dtype=torch.bfloat16),
        torch.tensor(SCORES, requires_grad=True),
        torch.tensor(SCORES, dtype=torch.float16),
        np.array(SCORES, dtype=np.float32),
        SCORES,
    ],
)
def test_tensors_of_any_dtype_and_with_grad_are_ranked(scores):
    got = headscope.top_k(scores, 2)
    assert [(l, h) for l, h, _ in got] == [(l, h) for l, h, _ in RANKED]
    assert [v for _, _, v in got] == pytest.approx([v for _, _, v in RANKED], abs=3e-3)


@pytest.mark.parametrize(
    ("scores", "says"),
    [
        (np.array([0.5, 0.9]), "got one of shape \\(2,\\)"),
        (np.zeros((2, 2, 2)), "got one of shape \\(2, 2, 2\\)"),
        (torch.zeros(3), "got one of shape \\(3,\\)"),
        (3.0, "got one of shape \\(\\)"),
        ([["a", "b"]], "top_k ranks an array of numbers"),
    ],
)
def test_anything_but_a_2d_array_is_bad_input(scores, says):
    with pytest.raises(headscope.BadInput, match=says) as err:
        headscope.top_k(scores, 1)
    assert "result.scores['induction']" in err.value.hint
