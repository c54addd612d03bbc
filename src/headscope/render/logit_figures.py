"""Figures of the logit analysis, drawn from result objects (:mod:`headscope.results.logit_results`), never models.

Direct effects are signed (a head can push the next token up or down), so every heatmap uses
a diverging map centred on zero with symmetric limits. Token labels show whitespace
(:func:`headscope.tokens.visible_whitespace`) and escape ``$`` for matplotlib.
"""

from __future__ import annotations

import numpy as np

from ._mpl import cell_fontsize, decimals_for, plt, show_token, signed_limit, tex_safe

CMAP = "RdBu_r"
WHICH = {
    "later": "later-repeat targets (the copied token)",
    "first": "first-repeat targets",
    "rise": "later minus first repeat",
}


def _layer_head_heatmap(a: np.ndarray, title: str, ax=None, outline=None):
    """Layers x heads heatmap of a signed ``[L, H]`` array, values written in small grids, ``outline`` boxed."""
    L, H = a.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.6 * H + 2.5), max(3.5, 0.3 * L + 1.5)), layout="constrained")
    lim, clipped = signed_limit(a)
    im = ax.imshow(a, cmap=CMAP, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    if L * H <= 400:
        digits = decimals_for(a)
        shown = [(l, h, f"{a[l, h]:.{digits}f}") for l in range(L) for h in range(H)]
        shown = [
            (l, h, t) for l, h, t in shown if t.strip("-").strip("0.")
        ]  # blank, not "-0.00": find the heads that write
        size = cell_fontsize(ax, L, H, max((len(t) for *_, t in shown), default=1))
        for l, h, t in shown:
            ax.text(
                h, l, t, ha="center", va="center", fontsize=size, color="white" if abs(a[l, h]) > 0.6 * lim else "black"
            )
    for l, h in outline or []:
        ax.add_patch(plt.Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="#00b4d8", lw=1.8))
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02, extend="both" if clipped else "neither")
    bar.set_label("direct effect on centred logit" + (" (colour clipped)" if clipped else ""))
    ax.set_title(title + ("\n(outlined: top induction heads)" if outline else ""), fontsize=9)
    return ax.figure


def repeat_effect_heatmap(res, which: str = "later", ax=None, outline=None):
    """Layers x heads heatmap of each head's mean direct effect on repeated random tokens.

    ``res``: :class:`~headscope.results.logit_results.RepeatLogitEffects`; ``which``: "later",
    "first" or "rise" (later minus first). ``outline``: heads ``[(layer, head)]`` to box,
    e.g. the top induction heads.
    """
    a = {"later": res.later, "first": res.first, "rise": res.later - res.first}[which]
    title = (
        f"Direct logit effect on {WHICH[which]} — {tex_safe(res.model_name)}\n"
        f"mean over {res.settings['batch']} sequences of {res.settings['seq_len']} random tokens"
        f" x {res.settings['repeats']}; model's centred logit: {res.logit_first:.2f} first, "
        f"{res.logit_later:.2f} later"
    )
    return _layer_head_heatmap(a, title, ax, outline)


def scan_effect_heatmap(scan, which: str = "later", ax=None, outline=None):
    """The same heatmap from an induction scan's own ``direct_logit_later`` / ``direct_logit_first`` scores.

    ``scan``: :class:`~headscope.results.scan_result.InductionResult`; ``which``: "later", "first" or
    "rise"; ``outline``: heads to box (default: none).
    """
    later, first = scan.scores["direct_logit_later"], scan.scores["direct_logit_first"]
    a = {"later": later, "first": first, "rise": later - first}[which]
    s = scan.settings
    title = (
        f"Direct logit effect on {WHICH[which]} — {tex_safe(scan.model['name'])}\n"
        f"mean over {s['batch']} sequences of {s['seq_len']} random tokens x {s['repeats']}; loss "
        f"{scan.loss_first_repeat:.2f} nats first, {scan.loss_later_repeats:.2f} later"
    )
    return _layer_head_heatmap(a, title, ax, outline)


def strongest_heads(res, k: int = 8) -> list[tuple[int, int]]:
    """The ``k`` heads whose largest push on the actual next token (any position) is largest."""
    peak = res.heads.max(0)  # [L, H]
    H = peak.shape[1]
    return [(int(i // H), int(i % H)) for i in np.argsort(-peak, axis=None)[:k]]


def token_head_heatmap(res, heads=None, k: int = 8, ax=None):
    """Tokens x heads heatmap of the direct effect on the actual next token, for chosen heads.

    ``res``: :class:`~headscope.results.logit_results.LogitAttribution`; rows are positions,
    labelled ``token → next token``; ``heads``: ``[(layer, head)]`` (default: the ``k``
    strongest, :func:`strongest_heads`).
    """
    heads = list(heads) if heads is not None else strongest_heads(res, k)
    data = np.stack([res.heads[:, l, h] for l, h in heads], axis=1)  # [P, n_heads]
    P = data.shape[0]
    if ax is None:
        _, ax = plt.subplots(
            figsize=(max(4.5, 0.75 * len(heads) + 3.5), float(np.clip(0.22 * P + 1.8, 3.5, 30))), layout="constrained"
        )
    lim, clipped = signed_limit(data)
    im = ax.imshow(data, cmap=CMAP, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    fs = max(4.0, min(9.0, 600 / max(P, 1)))
    rows = [f"{show_token(a, 10)} → {show_token(b, 10)}" for a, b in zip(res.token_labels, res.target_labels)]
    ax.set_yticks(range(P), rows, fontsize=fs)
    ax.set_xticks(range(len(heads)), [f"L{l}H{h}" for l, h in heads], rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("token → next token (the target)")
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02, extend="both" if clipped else "neither")
    bar.set_label("direct effect on centred logit" + (" (colour clipped)" if clipped else ""))
    ax.set_title(
        f"Direct logit attribution — {tex_safe(res.model_name)}\n"
        f"each head's push on the actual next token (red raises it)",
        fontsize=9,
    )
    return ax.figure


def ov_row_bars(ov, index: int = 0, ax=None):
    """Top and bottom tokens of one source token's OV row, as horizontal bars (``ov``: OVRows)."""
    vals = np.concatenate([ov.top_values[index], ov.bottom_values[index][::-1]])
    labels = list(ov.top_labels[index]) + list(ov.bottom_labels[index][::-1])
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 0.28 * len(vals) + 1.5), layout="constrained")
    y = np.arange(len(vals))[::-1]
    ax.barh(y, vals, color=["#c0392b" if v > 0 else "#2e6da4" for v in vals])
    ax.set_yticks(y, [show_token(t, 18) for t in labels], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("OV row (centred logit per unit final scale)")
    src = show_token(ov.token_labels[index], 18)
    ax.set_title(
        f"{ov.label} attending to {src}: promotes / suppresses\n"
        f"{src} itself ranks {int(ov.self_rank[index])} of {ov.d_vocab}",
        fontsize=9,
    )
    return ax.figure
