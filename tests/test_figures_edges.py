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


def test_a_signed_cell_that_shows_zero_has_no_minus_sign(scan):
    """A cell of -1e-5 beside a 0.4 printed "-0.00": a negative sign on a number that reads as zero."""
    from headscope.render.induction_figures import score_heatmap

    a = np.array([[0.4, -1e-5, 0.2, -0.1], [1e-5, 0.0, -0.3, 0.1]])
    fig = score_heatmap(_with(scan, direct_logit_later=a), "direct_logit_later")
    shown = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert "-0.30" in shown and "-0.10" in shown  # real negatives keep their sign
    assert not any(s.startswith("-") and not s.strip("-0.") for s in shown), shown


def test_a_score_just_under_its_threshold_does_not_print_as_the_threshold(scan):
    """0.3993 printed "0.40" in a cell left without the outline of "outlined: >= 0.4"."""
    from headscope.render.induction_figures import score_heatmap

    thr = scan.thresholds["induction"]
    a = np.array([[thr - 7e-4, thr, 0.2, thr + 0.05]])
    fig = score_heatmap(_with(scan, induction=a), "induction")
    shown = [t.get_text() for t in fig.axes[0].texts]
    outlined = len(fig.axes[0].patches)
    plt.close(fig)
    assert float(shown[0]) < thr and f"{thr:.2f}" != shown[0], shown
    assert shown[1:] == [f"{thr:.2f}", "0.20", f"{thr + 0.05:.2f}"]
    assert outlined == 2  # the two cells at or over the threshold


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_loss_legend_leaves_a_flat_untrained_loss_visible(scan):
    """On an untrained model the loss runs along ln(vocab): the legend sat on it and the top of the axes cut it."""
    from headscope.render.induction_figures import loss_by_position

    res = copy.copy(scan)
    ln_v = np.log(res.model["d_vocab"])
    res.per_position_loss = ln_v + 0.15 * np.sin(np.arange(len(scan.per_position_loss)))
    fig = loss_by_position(res)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    pts = ax.lines[0].get_transform().transform(ax.lines[0].get_xydata())
    inside = (pts[:, 0] > legend.x0) & (pts[:, 0] < legend.x1) & (pts[:, 1] > legend.y0) & (pts[:, 1] < legend.y1)
    assert not inside.any()
    assert ax.get_ylim()[1] > res.per_position_loss.max() * 1.05  # headroom, not the frame on the curve
    plt.close(fig)


def test_causal_chart_prints_small_changes_and_keeps_labels_clear_of_the_legend(scan):
    """Changes of a thousandth of a nat printed '+0.00' and '-0.00', and the labels ran into the legend and frame."""
    from headscope.render.induction_figures import ablation_chart

    res = copy.copy(scan)
    res.ablation = [dict(e) for e in scan.ablation]
    assert res.ablation
    for n, e in enumerate(res.ablation):
        e["loss_increase"] = (-1) ** n * 0.0012 * (n + 1)
        e["interval"] = [e["loss_increase"] - 0.003, e["loss_increase"] + 0.004]
        e["first_repeat_increase"] = 0.001
    fig = ablation_chart(res)
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text()]
    assert not any(t.get_text().strip("+-") == "0.00" for t in labels), [t.get_text() for t in labels]
    legend = ax.get_legend().get_window_extent()
    frame = ax.get_window_extent()
    for t in labels:
        box = t.get_window_extent()
        assert not _boxes_overlap(box, legend), t.get_text()
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1, t.get_text()
    plt.close(fig)


def test_the_controls_median_is_labelled_at_its_bar_not_above_its_highest_draw(scan, tmp_path):
    """The control's "+0.13" sat over its one draw of +6.6 and read as that draw's value."""
    from headscope.render.induction_figures import ablation_chart

    res = copy.copy(scan)
    draws = [6.6, 1.1, 0.35, 0.2, 0.13, 0.13, 0.1, 0.05, 0.0, -0.002]
    controls = [e for e in scan.ablation if e["kind"] == "control"]
    res.ablation = [dict(e) for e in scan.ablation if e["kind"] != "control"] + [
        {**controls[0], "loss_increase": d, "first_repeat_increase": 0.0} for d in draws
    ]
    fig = ablation_chart(res)
    fig.savefig(tmp_path / "ablation.png")
    ax = fig.axes[0]
    (label,) = [t for t in ax.texts if t.get_text().startswith("median")]
    assert label.get_text().endswith("+0.13") and label.get_position()[1] < 1.0  # beside the median, not at 6.6
    box = label.get_window_extent()
    dots = ax.collections[0].get_offsets()
    for x, y in ax.transData.transform(dots):
        assert not (box.x0 - 3 <= x <= box.x1 + 3 and box.y0 - 3 <= y <= box.y1 + 3), (x, y)
    assert box.x1 <= ax.get_window_extent().x1  # inside the frame
    plt.close(fig)


def test_one_strong_pair_does_not_wash_out_the_composition_map(tiny_gpt2):
    """One pair far above the rest left every other cell the colour of 0; the colorbar also had no label."""
    from headscope.qk import composition_scores
    from headscope.render.qk_figures import plot_composition

    comp = copy.copy(composition_scores(tiny_gpt2, baseline_samples=8))
    k = comp.scores["K"].copy()
    typical = float(np.nanmax(np.abs(k[0, :, 1, :] - comp.baseline)))
    k[0, 0, 1, 0] = comp.baseline + 50 * typical
    comp.scores = {**comp.scores, "K": k}
    fig = plot_composition(comp, "K")
    image = fig.axes[0].images[0]
    assert image.norm.vmax < 10 * typical  # the bulk keeps the colours, the outlier saturates
    bar = fig.axes[-1]
    assert bar.get_ylabel()  # what the colours measure
    assert "clipped" in bar.get_ylabel()
    plt.close(fig)
    fig = plot_composition(composition_scores(tiny_gpt2, baseline_samples=8), "K")  # no outlier: no clipping
    assert "clipped" not in fig.axes[-1].get_ylabel() and fig.axes[-1].get_ylabel()
    plt.close(fig)


def test_the_offset_legend_of_many_heads_sits_beside_the_curves():
    """With eight heads the legend covered the curves of SmolLM2's previous-token heads."""
    from headscope.render.qk_figures import plot_positional
    from headscope.results.qk_results import PositionalQK

    offsets = np.arange(64)
    curves = np.stack([np.cos(offsets / (n + 1)) * (n + 1) for n in range(8)])
    pos = PositionalQK("m", [(n, 0) for n in range(8)], offsets, curves, None, "rotary", rope_theta=1e4)
    fig = plot_positional(pos)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert not _boxes_overlap(ax.get_legend().get_window_extent(), ax.get_window_extent())
    plt.close(fig)


def test_the_decomposition_legend_names_only_the_kinds_of_the_bars_drawn(tiny_gpt2):
    """The legend listed 'bias' and 'embed' colours on panels that had no such bar."""
    import headscope
    from headscope.render.qk_figures import plot_decomposition

    dec = headscope.decompose_qk(tiny_gpt2, "1.2")
    top = 3
    fig = plot_decomposition(dec, top=top)
    legend = {t.get_text() for t in fig.legends[0].get_texts()} - {"vs mean over keys"}
    drawn = {
        kinds[i]
        for kinds, contrib in ((dec.key_kinds, dec.key_contrib), (dec.query_kinds, dec.query_contrib))
        for i in np.argsort(-np.abs(contrib))[:top]
    }
    plt.close(fig)
    assert legend == drawn


@pytest.mark.parametrize("draw", ["scan_effect", "score_heatmap"])
def test_one_outlying_head_does_not_wash_out_the_direct_effect_maps(scan, draw):
    """SmolLM2's L29H1 (1.1 logits) left the induction heads' 0.1 the colour of zero; small cells printed at 6 pt
    and values under 0.005 were left blank whatever the scale."""
    from headscope.render.induction_figures import score_heatmap
    from headscope.render.logit_figures import scan_effect_heatmap

    a = np.array([[0.01, -0.02, 0.03, 0.1], [0.12, -0.04, 0.02, 1.1]])
    res = _with(scan, direct_logit_later=a, direct_logit_first=np.zeros_like(a))
    fig = scan_effect_heatmap(res, "later") if draw == "scan_effect" else score_heatmap(res, "direct_logit_later")
    ax = fig.axes[0]
    mesh = (ax.images or ax.collections)[0]
    assert mesh.norm.vmax < 0.5  # the outlier saturates, the rest keep their colours
    assert "clipped" in fig.axes[-1].get_ylabel()
    assert min(t.get_fontsize() for t in ax.texts) >= 9
    plt.close(fig)
    tiny = _with(scan, direct_logit_later=a * 1e-3, direct_logit_first=np.zeros_like(a))
    fig = scan_effect_heatmap(tiny, "later")
    shown = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert "0.0011" in shown and "0.0001" in shown  # 1e-4 logits are printed, not blanked


def test_a_sender_map_greys_the_heads_that_send_nothing_and_labels_its_colours(tiny_gpt2):
    """Heads left out of --senders were white, the colour of an effect of 0; the colorbar had no label, and with
    one sender layer it was a fifth of an inch tall."""
    from headscope.circuits import induction_task
    from headscope.circuits.path_patching import Receiver, path_patching
    from headscope.render.circuit_figures import sender_map

    task = induction_task(tiny_gpt2, n_examples=3, seq_len=6, seed=6)
    pp = path_patching(tiny_gpt2, task, [(0, 1), (0, 3)], Receiver("k", 1, 0))
    fig = sender_map(pp)
    ax, bar = fig.axes
    image = ax.images[0]
    data = image.get_array()
    assert np.ma.getmaskarray(data)[0, [0, 2]].all()  # not senders: masked ...
    grey = image.cmap.get_bad()
    assert grey[:3] != pytest.approx(image.cmap(image.norm(0.0))[:3], abs=0.05)  # ... and not drawn as 0
    assert "not a sender" in ax.get_title()
    assert bar.get_ylabel()
    assert fig.get_figheight() >= 2.5
    plt.close(fig)


def test_the_missing_glyph_note_names_the_characters_and_the_figure(monkeypatch, capsys):
    """It said "some token characters are missing" on a report of ASCII text: which, and in which of 36 figures?"""
    from headscope.render import _mpl

    monkeypatch.setattr(_mpl, "_told_missing_glyph", False)
    fig, ax = plt.subplots()
    ax.set_title("OV circuit: promotes 字")
    _mpl.encode_png(fig)
    said = capsys.readouterr().err
    assert "字 (U+5B57)" in said and "'OV circuit: promotes 字'" in said, said
    fig, ax = plt.subplots()
    ax.set_title("again 字")
    _mpl.encode_png(fig)  # once a run, not once a figure
    assert capsys.readouterr().err == ""
