"""Figures under edge conditions (one head, many heads, tiny values, short texts): read back from the
matplotlib figure what a reader would see (font sizes, printed numbers, overlaps, colour limits)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from headscope.render._mpl import plt


@pytest.fixture(scope="module")
def scan(tiny_gpt2):
    from headscope.scan.induction_scan import scan_induction

    return scan_induction(tiny_gpt2, seq_len=6, batch=3, top_k=2, sample=False, progress=False)


def _with(res, **scores):
    out = copy.copy(res)
    out.scores = {**res.scores, **scores}
    return out


def test_heatmap_numbers_grow_with_their_cells(scan):
    """A 1 x 1 (or 2 x 4) grid printed its numbers at a fixed 6 pt in cells an inch wide."""
    from headscope.render.induction_figures import score_heatmap

    for a in (np.array([[0.06]]), scan.scores["induction"]):
        fig = score_heatmap(_with(scan, induction=a), "induction")
        sizes = {t.get_fontsize() for t in fig.axes[0].texts}
        plt.close(fig)
        assert sizes and min(sizes) >= 9, sizes


def test_a_signed_score_of_small_values_prints_its_digits_not_zeros(scan):
    """Direct logit effects of 1e-4 printed as '0.00' and '-0.00' in every cell under a colour scale of +-4e-4."""
    from headscope.render.induction_figures import score_heatmap

    a = np.array([[3e-5, -2.0e-4, 1.3e-4, -4.1e-4], [2.4e-4, -9e-5, 4.0e-5, 1.1e-4]])
    fig = score_heatmap(_with(scan, direct_logit_later=a), "direct_logit_later")
    shown = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert not any(s.strip("-+") == "0.00" for s in shown), shown
    assert "-0.00041" in shown and "0.00024" in shown
