"""Review findings on the ``headscope circuit`` and ``headscope logits`` pages, each pinned by a test.

- a section "X -> logits: direct and via each later head" shows the direct path, however small, in its chart and
  its table, labelled "direct";
- an activation-patching map whose colour range follows the heads says when a cell (an MLP) lies beyond it: the
  colour bar says "colour clipped" and has arrows on the clipped side, and the clipped cells carry their numbers;
- the logits page's legend defines every number the page shows, headed by the registry's labels (not its keys), and
  says how the copying score differs from the share of tokens at self-rank 1.
"""

from __future__ import annotations

import numpy as np
import pytest

import headscope
from headscope.render._mpl import plt
from headscope.render.circuit_figures import patching_heatmap, path_chart, shown_paths
from headscope.render.lookup import view_of
from headscope.results.patching_results import ActivationPatching, PathPatching

#: The task both hand-built patching results share.
TASK = dict(metric="logit_diff", task="induction", n_examples=6, clean_metric=8.0, corrupt_metric=-1.0)


def _paths(direct_effect: float = 0.0015, n_via: int = 30) -> PathPatching:
    """One sender's direct path to the logits (tiny) and ``n_via`` paths via later heads (all larger), noising."""
    rng = np.random.default_rng(0)
    via = rng.uniform(0.01, 0.1, n_via) * rng.choice([-1, 1], n_via)
    effect = np.concatenate([[direct_effect], via])
    values = 1 - effect  # noising: effect = 1 - value
    return PathPatching(
        senders=["L1H0"] * (n_via + 1),
        receivers=["logits"] + [f"L{2 + i // 4}H{i % 4}.qkv" for i in range(n_via)],
        receiver="L1H0 -> logits: direct and via each later head",
        direction="noise",
        **TASK,
        values=values,
        low=values - 0.002,
        high=values + 0.002,
        n_layers=12,
        n_heads=4,
    )


def test_the_direct_path_is_shown_first_in_the_chart_and_the_table_however_small():
    res = _paths()
    assert res.top(12)[0][1] != "logits"  # left to the ranking, the direct path is not among the top rows
    rows = shown_paths(res, 20)
    assert rows[0][:2] == ("L1H0", "logits") and len(rows) == 21
    assert rows[0][3] == pytest.approx(0.0015 - 0.002) and rows[0][4] == pytest.approx(0.0015 + 0.002)

    cols, table = view_of(res).table_rows(res)
    assert table[0][1] == "logits (direct)" and table[0][3].startswith("[-5.0e-04, +0.00")
    assert sum("logits" in row[1] for row in table) == 1 and len(table) == 13

    fig = path_chart(res)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1] == "L1H0 → logits (direct)"  # the top bar
    assert "the direct path, then the 20 largest of 30 via a later head" in fig.axes[0].get_title()
    plt.close(fig)

    html = view_of(res).sections(res)[0].html
    assert "logits (direct)" in html and "direct path to the logits" in html


def test_a_result_of_one_receiver_has_no_direct_row():
    res = _paths()
    one = PathPatching(**{**res.__dict__, "receivers": ["logits"] * len(res.senders), "receiver": "logits"})
    assert [r[2] for r in shown_paths(one, 5)] == [r[2] for r in one.top(5)]
    assert "(direct)" not in str(view_of(one).table_rows(one))


def _activation(direction: str, mlp0: float, heads_top: float) -> ActivationPatching:
    """3 layers x 2 heads + MLP; heads within ``heads_top`` of the base, MLP0 at ``mlp0``."""
    base = 1.0 if direction == "noise" else 0.0
    v = np.full((3, 3), base)
    v[1, 0] = base + (-heads_top if direction == "noise" else heads_top)
    v[0, 2] = mlp0
    return ActivationPatching(
        direction=direction,
        **TASK,
        n_layers=3,
        n_heads=2,
        values=v,
        low=v - 0.01,
        high=v + 0.01,
    )


def _colour_bar(fig):
    bar = fig.axes[-1]
    return bar.get_ylabel(), fig.axes[0].images[0].colorbar.extend


@pytest.mark.parametrize(
    "direction,mlp0,extend,shown", [("denoise", 0.987, "max", "+0.99"), ("noise", -0.002, "min", "-2.0e-03")]
)
def test_a_patching_map_that_clips_an_mlp_says_so_and_writes_its_number(direction, mlp0, extend, shown):
    fig = patching_heatmap(_activation(direction, mlp0, 0.3))
    label, ext = _colour_bar(fig)
    assert "colour clipped" in label and ext == extend
    assert [t.get_text() for t in fig.axes[0].texts] == [shown]
    plt.close(fig)


def test_a_patching_map_within_its_range_has_no_clipping_note():
    fig = patching_heatmap(_activation("denoise", 0.2, 0.3))
    label, ext = _colour_bar(fig)
    assert "clipped" not in label and ext == "neither" and not fig.axes[0].texts
    plt.close(fig)


@pytest.fixture(scope="module")
def logits_analysis(tiny_gpt2):
    scan = headscope.scan_induction(tiny_gpt2, seq_len=8, batch=2, sample=False, progress=False)
    return headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=1, scan=scan)


def test_the_logits_legend_defines_every_score_the_page_shows_under_its_registry_label(logits_analysis):
    from headscope.scores import score

    a = logits_analysis
    legend = view_of(a).legend(a)
    for name in ("induction", "previous_token", "copying", "direct_logit_later", "direct_logit_first"):
        assert legend[score(name).label] == score(name).definition, name  # the registry's words, as on every page
    assert not any("_" in k for k in legend), list(legend)  # no internal key as a heading
    assert "K-" in legend["composition"] and "excess" in legend["composition"]
    assert "ablation Δloss" in legend and f"{a.scan.settings['ablation']}-ablated" in legend["induction story"]
    rank = next(v for k, v in legend.items() if "self-rank 1" in k)
    assert (
        "eigenvalues" in rank and "a token ranked 2nd or 600th counts as 0" in rank and "without contradicting" in rank
    )

    page = view_of(a).sections(a)[0].html
    assert (
        "share of the texts&#x27; tokens at self-rank 1" in page or "share of the texts' tokens at self-rank 1" in page
    )
    assert "copies (share" not in page and "two different measurements" in page


def test_without_ablation_the_legend_defines_no_delta_loss(tiny_gpt2):
    scan = headscope.scan_induction(tiny_gpt2, seq_len=8, batch=2, ablate=False, sample=False, progress=False)
    a = headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=1, scan=scan)
    legend = view_of(a).legend(a)
    assert "ablation Δloss" not in legend
    assert "-ablated" not in legend["induction story"] and "No ablation ran" in legend["induction story"]


def test_the_story_definition_says_which_ablation_ran_and_whether_paths_were_measured():
    from headscope.results.logit_results import STORY_DEFINITION
    from headscope.results.logit_results import story_definition as _story_definition

    assert _story_definition("mean", False) == STORY_DEFINITION
    zero = _story_definition("zero", True)
    assert "zero-ablated" in zero and "mean-ablated" not in zero
    assert "no path through later components was measured" not in zero and "path patching" in zero


def test_the_story_tables_small_direct_effects_are_not_minus_zero():
    """The story table printed a first-repeat DLA of -4e-4 as "-0.000"."""
    from headscope.render.views.logits_view import _signed

    assert _signed(-4e-4) == "-4.0e-04" and _signed(0.0) == "+0.000" and _signed(None) == "-"
