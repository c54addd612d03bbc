"""Figures for an :class:`~headscope.results.scan_result.InductionResult`."""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib.ticker
import numpy as np

from ..head_labels import head_label
from ..results.scan_result import InductionResult
from ..scan.attention_sample import AttentionSample
from ..scores import score as declared
from ._mpl import attention_heatmap, cell_fontsize, decimals_for, plt, signed_limit, tex_safe, tight_layout


def score_heatmap(res: InductionResult, score: str = "induction", ax=None):
    """Layer x head heatmap of one score, the thresholded heads outlined."""
    import seaborn as sns

    a = res.scores[score]
    L, H = a.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.55 * H + 2.5), max(3.5, 0.32 * L + 1.5)), layout="constrained")
    decl = declared(score)
    lo, hi = decl.vmin, decl.vmax
    digits, clipped = 2, False
    if lo is None or hi is None:  # signed, in its own units: symmetric around 0
        lim, clipped = signed_limit(a)  # one outlying head would leave the rest the colour of 0
        lo, hi = -lim, lim
        digits = decimals_for(a)  # a 1e-4 logit effect is not "0.00"
    annot = H * L <= 400
    sns.heatmap(
        a,
        ax=ax,
        vmin=lo,
        vmax=hi,
        cmap="RdBu_r" if lo < 0 else "rocket_r",
        annot=annot,
        fmt=f".{digits}f",
        annot_kws={"fontsize": 6},
        cbar_kws={
            "label": score.replace("_", "-") + (" (colour clipped)" if clipped else ""),
            "extend": "both" if clipped else "neither",
        },
    )
    if annot and ax.texts:
        size = cell_fontsize(ax, L, H, max(len(t.get_text()) for t in ax.texts))
        for t in ax.texts:
            t.set_fontsize(size)
            if t.get_text().startswith("-") and not t.get_text().strip("-0."):
                t.set_text(t.get_text()[1:])  # a cell that shows 0 is not "-0.00"
    thr = res.thresholds.get(score)
    if annot and ax.texts and thr is not None:
        for t in ax.texts:  # 0.3993 under "outlined: ≥ 0.4" must not read "0.40"
            x, y = t.get_position()
            v = float(a[int(y), int(x)])
            t.set_text(below_threshold_text(v, thr, digits, t.get_text()))
    if thr is not None:
        for l, h in zip(*np.nonzero(a >= thr)):
            ax.add_patch(plt.Rectangle((h, l), 1, 1, fill=False, edgecolor="#00b4d8", lw=1.5))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    unmeasured = bool(np.isnan(a).all())
    ax.set_title(
        f"{decl.title}\n{tex_safe(res.model['name'])}"  # own line: a long score title and name overran the figure
        + ("\n(not measured on this model: see the notes)" if unmeasured else "")
        + (f"\n(outlined: ≥ {thr})" if thr is not None and not unmeasured else ""),
        fontsize=10,
    )
    return ax.figure


def below_threshold_text(value: float, threshold: float, digits: int, shown: str) -> str:
    """``shown``, or ``value`` with as many more decimals as it takes to read below ``threshold``.

    A heatmap cell is outlined when its score is at least the threshold; a score just under it
    must not print as the threshold itself (0.3993 at 2 places is "0.40").

    >>> below_threshold_text(0.3993, 0.4, 2, "0.40")
    '0.399'
    >>> below_threshold_text(0.41, 0.4, 2, "0.41")
    '0.41'
    """
    if not (value < threshold) or float(shown) < threshold:
        return shown
    for d in range(digits + 1, 10):
        text = f"{value:.{d}f}"
        if float(text) < threshold:
            return text
    return shown


def loss_by_position(res: InductionResult, ax=None):
    """Per-position loss with the repeats marked: first repeat high, later repeats low if induction works."""
    s = res.settings
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    y = res.per_position_loss
    x = np.arange(1, len(y) + 1)  # target position
    ax.plot(x, y, lw=1.2, color="#3a0ca3")
    offset = int(s["bos"])
    for k in range(2, s["repeats"] + 1):
        ax.axvline(offset + (k - 1) * s["seq_len"] - 0.5, color="grey", ls="--", lw=0.8)
    ax.axhline(
        math.log(res.model.get("d_vocab", 2)),
        color="#e76f51",
        ls=":",
        lw=1,
        label=f"ln(vocab) = {math.log(res.model.get('d_vocab', 2)):.1f}",
    )
    ax.set_xlabel("target token position (dashed: start of each repeat)")
    ax.set_ylabel("loss (nats)")
    ax.set_title(
        f"Loss by position — first repeat {res.loss_first_repeat:.2f}, later repeats {res.loss_later_repeats:.2f} nats",
        fontsize=10,
    )
    # headroom above the highest line for the legend: on an untrained model the loss runs along
    # ln(vocab) at the top, where the legend covered it and the axes cut it off
    top = float(np.nanmax(np.append(y, math.log(res.model.get("d_vocab", 2)))))
    ax.set_ylim(0, top * 1.2 if np.isfinite(top) and top > 0 else None)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # positions are whole tokens
    ax.legend(loc="upper right", fontsize=8)
    return ax.figure


def ablation_chart(res: InductionResult, ax=None):
    """The causal check: each change in later-repeat loss with its 95% interval, first-repeat change beside it.

    Heads and all-together: bar = mean over sequences, whisker = bootstrap interval. Control:
    bar = median over the random draws, whisker = their range (lowest to highest), dots = the draws.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
    labels, values, lows, highs, firsts, colors = [], [], [], [], [], []
    for e in res.ablation:
        if e["kind"] == "control":
            continue
        labels.append(head_label(e["layer"], e["head"]) if e["kind"] == "head" else f"all {len(e['heads'])} top")
        colors.append("#2a9d8f" if e["kind"] == "head" else "#264653")
        values.append(e["loss_increase"])
        lows.append(e["interval"][0])
        highs.append(e["interval"][1])
        firsts.append(e["first_repeat_increase"])
    draws: list[float] = []
    c = res.control_spread()
    if c is not None:
        labels.append(f"control\n({c['n']} draw{'s' if c['n'] != 1 else ''} of {c['n_heads']})")
        colors.append("#adb5bd")
        values.append(c["median"])
        lows.append(c["min"])
        highs.append(c["max"])
        firsts.append(c["first_repeat"]["median"])
        draws = [e["loss_increase"] for e in res.ablation if e["kind"] == "control"]
        ax.scatter(
            [len(values) - 1] * len(draws), draws, s=8, color="#495057", zorder=3, label="control: one dot per draw"
        )
    x = np.arange(len(values))
    v = np.asarray(values)
    err = np.vstack([v - np.asarray(lows), np.asarray(highs) - v])
    ax.bar(x, v, color=colors, yerr=err, capsize=3, error_kw={"lw": 0.8})
    ax.scatter(x, firsts, marker="x", color="#e76f51", zorder=4, label="change in first-repeat loss")
    # room above the highest whisker for the value printed on it and for the legend (upper left),
    # which otherwise sat on the first bar's label or whisker and ran the labels into the frame
    shown = np.asarray([*values, *lows, *highs, *firsts, *draws, 0.0], dtype=float)
    shown = shown[np.isfinite(shown)]
    lo, hi = float(shown.min()), float(shown.max())
    span = (hi - lo) or 1.0
    ax.set_ylim(lo - 0.05 * span, hi + 0.4 * span)
    digits = decimals_for(values)  # a 0.001-nat change is not "+0.00"
    # each value goes above its whisker's cap and its first-repeat cross, not on them
    tops = [np.nanmax([val, hi, f]) + 0.02 * span for val, hi, f in zip(values, highs, firsts)]
    for i, (val, top) in enumerate(zip(values, tops)):
        if draws and i == len(values) - 1:  # the control's median beside its bar, right of the dots and whisker:
            # above the highest dot it read as that draw's value
            ax.text(i + 0.1, val + 0.02 * span, f"median\n{val:+.{digits}f}", ha="left", va="bottom", fontsize=7)
        else:
            ax.text(i, top, f"{val:+.{digits}f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("change in later-repeat loss (nats)")
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    kind = res.settings.get("ablation") or "mean"
    ax.set_title(
        f"Causal check: {kind}-ablating heads' outputs (clean loss {res.loss_later_repeats:.2f} nats)\n"
        "whiskers: 95% bootstrap interval over sequences; control: median and range of its draws",
        fontsize=9,
    )
    return ax.figure


def attention_grid(sample: AttentionSample, scores: dict[str, np.ndarray] | None = None):
    """One heatmap per head of ``sample``, queries down and keys across."""
    k = len(sample.heads)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    n = len(sample.tokens)
    side = 3.5 + n * 0.11
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    for ax, (l, h), pat in zip(axes.flat, sample.heads, sample.patterns):
        extra = f" (induction {scores['induction'][l, h]:.2f})" if scores is not None else ""
        attention_heatmap(ax, pat, sample.tokens, f"{head_label(l, h)}{extra}")
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle(tex_safe(sample.title + (f"\n{sample.note}" if sample.note else "")), fontsize=11)
    tight_layout(fig)
    return fig


def named_figures(res: InductionResult, texts: list[AttentionSample]) -> list[tuple[str, Callable]]:
    """``[(file name, draw)]`` of every figure of an induction run; ``draw()`` returns the figure.

    Names depend only on what the run holds, so they can be listed before anything is drawn.
    """
    jobs: list[tuple[str, Callable]] = [
        (f"heatmap_{name}.png", lambda name=name: score_heatmap(res, name)) for name in res.score_order()
    ]
    jobs.append(("loss_by_position.png", lambda: loss_by_position(res)))
    if res.ablation:
        jobs.append(("ablation.png", lambda: ablation_chart(res)))
    for sample in res.samples[:1]:
        jobs.append(("attention_repeated.png", lambda sample=sample: attention_grid(sample, res.scores)))
    for i, sample in enumerate(texts, 1):
        jobs.append((f"attention_text_{i}.png", lambda sample=sample: attention_grid(sample, res.scores)))
    return jobs
