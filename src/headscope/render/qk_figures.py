"""Figures of the QK analysis, drawn from result objects (:mod:`headscope.results.qk_results`), never models.

Token heatmaps put queries down and keys across; masked (causal) cells are grey, not zero.
Token labels show whitespace ('·' for a space, '↵' for a newline, '⇥' for a tab) and escape
``$`` so matplotlib never reads a label as mathtext.
"""

from __future__ import annotations

import textwrap

import matplotlib.ticker
import numpy as np

from ..head_labels import head_label
from ..results.qk_results import WEIGHT_PRODUCT
from ._mpl import plt, show_token, signed_limit, tight_layout

KIND_COLOURS = {"embed": "#4c72b0", "head": "#dd8452", "mlp": "#55a868", "bias": "#8172b3", "rounding": "#bbbbbb"}


def _wrap(text: str, width: int = 110) -> str:
    return "\n".join(textwrap.wrap(text.replace("$", r"\$"), width))


def _grey_cmap(name: str):
    return plt.get_cmap(name).with_extremes(bad="#d0d0d0")


def token_heatmap(
    ax,
    data: np.ndarray,
    labels: list[str],
    title: str,
    cbar: str,
    cmap: str = "viridis",
    vmin=None,
    vmax=None,
    ticks: bool = True,
):
    """``data [query, key]`` as a heatmap; NaN cells drawn grey as 'masked'."""
    n = len(labels)
    im = ax.imshow(
        np.ma.masked_invalid(data), cmap=_grey_cmap(cmap), vmin=vmin, vmax=vmax, aspect="equal", interpolation="nearest"
    )
    if ticks:
        fs = max(4.0, min(9.0, 520 / max(n, 1)))
        safe = [show_token(t) for t in labels]
        ax.set_xticks(range(n), safe, rotation=90, fontsize=fs)
        ax.set_yticks(range(n), safe, fontsize=fs)
    else:
        ax.set_xticks([]), ax.set_yticks([])
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(cbar)
    return im


def _side(n_tokens: int) -> float:
    return float(np.clip(n_tokens * 0.2 + 2.0, 5.0, 16.0))


def _masked_pattern(p: np.ndarray) -> np.ndarray:
    p = p.astype(float).copy()
    p[np.triu_indices_from(p, 1)] = np.nan
    return p


def plot_live(scores, sequence: int, n: int):
    """One head on one sequence: pre-softmax scores (masked grey) beside the attention pattern."""
    seq = scores.sequences[sequence]
    layer, head = scores.heads[n]
    side = _side(len(seq))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side), layout="constrained")
    token_heatmap(
        axes[0],
        scores.scores[sequence][n],
        seq.labels,
        "pre-softmax score q·k/√d_head (grey = masked)",
        "score",
        cmap="magma",
    )
    token_heatmap(
        axes[1],
        _masked_pattern(scores.patterns[sequence][n]),
        seq.labels,
        "attention pattern (softmax)",
        "attention",
        vmin=0,
        vmax=1,
    )
    fig.suptitle(
        _wrap(f"{scores.model_name}, head {head_label(layer, head)}, text {sequence + 1}: {seq.text[:90]!r}"),
        fontsize=11,
    )
    for note in seq.notes:
        fig.text(0.01, -0.01, _wrap(note), fontsize=8, color="#a00", va="top")
    return fig


def plot_live_grid(scores, sequence: int):
    """The attention patterns of every chosen head on one sequence, side by side."""
    seq = scores.sequences[sequence]
    k = len(scores.heads)
    cols = min(k, 3)
    rows = (k + cols - 1) // cols
    side = min(_side(len(seq)), 7.0)
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * (side + 1.2), rows * side), squeeze=False, layout="constrained"
    )
    show = len(seq) <= 48
    for n, (layer, head) in enumerate(scores.heads):
        token_heatmap(
            axes.flat[n],
            _masked_pattern(scores.patterns[sequence][n]),
            seq.labels,
            f"head {head_label(layer, head)}",
            "attention",
            vmin=0,
            vmax=1,
            ticks=show,
        )
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle(
        _wrap(f"{scores.model_name}: attention of the chosen heads on {seq.text[:80]!r} (grey = masked)"), fontsize=11
    )
    return fig


def _bars(ax, names, kinds, contrib, rel, top: int, title: str) -> set[str]:
    """The ``top`` largest contributions as bars; returns the kinds of the bars drawn."""
    order = np.argsort(-np.abs(contrib))[:top][::-1]
    y = np.arange(len(order))
    ax.barh(y, contrib[order], color=[KIND_COLOURS.get(kinds[i], "#999") for i in order], label="contribution")
    ax.scatter(rel[order], y, marker="|", s=160, color="black", zorder=3, label="vs mean over keys")
    ax.set_yticks(y, [names[i] for i in order], fontsize=8)
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_xlabel("contribution to the score (q·k/√d_head units)")
    ax.set_title(title, fontsize=10)
    return {kinds[i] for i in order}


def plot_decomposition(dec, top: int = 12):
    """Top components on the key side and the query side; bars sum (over all components) to the score."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * top + 2.6))
    drawn = _bars(
        axes[0],
        dec.key_names,
        dec.key_kinds,
        dec.key_contrib,
        dec.key_vs_mean,
        top,
        f"key side: what the key carries ({len(dec.key_names)} components)",
    )
    drawn |= _bars(
        axes[1],
        dec.query_names,
        dec.query_kinds,
        dec.query_contrib,
        dec.query_vs_mean,
        top,
        f"query side: what the query brings ({len(dec.query_names)} components)",
    )
    kinds = [k for k in KIND_COLOURS if k in drawn]  # only the kinds of the bars shown
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLOURS[k]) for k in kinds]
    fig.legend(
        handles + [axes[1].collections[0]],
        kinds + ["vs mean over keys"],
        fontsize=7,
        loc="lower right",
        ncols=6,
        frameon=False,
    )
    seq = dec.sequence
    i, j = dec.pairs[0]
    where = (
        f"{dec.how}"
        if len(dec.pairs) > 1
        else f"query {i} {show_token(seq.labels[i])!r} -> key {j} {show_token(seq.labels[j])!r}"
    )
    fig.suptitle(
        _wrap(
            f"{dec.model_name}, head {dec.label}, text {dec.sequence_index + 1}: its score split over residual "
            f"components -- {where}; score {dec.score:.3f} (model {dec.model_score:.3f})"
            + ("" if "mean attention" in where else f", mean attention there {dec.attention:.2f}")  # said once
        ),
        fontsize=10,
    )
    fig.text(
        0.01,
        -0.04,
        _wrap(
            dec.note + ". Bars: each component's contribution (all of them sum to the score); "
            "ticks: the same minus its mean over all keys the query sees.",
            160,
        ),
        fontsize=7,
        color="#333",
    )
    tight_layout(fig, rect=(0, 0.05, 1, 0.93))
    return fig


def plot_positional(pos):
    """Offset curves of every head (and the learned-position heatmaps where there are any)."""
    k = len(pos.heads)
    with_mats = pos.matrix is not None
    cols = k + 1 if with_mats else 1
    fig, axes = plt.subplots(1, cols, figsize=(5.2 * cols if with_mats else 8, 5), squeeze=False, layout="constrained")
    ax = axes[0, 0]
    for n, (layer, head) in enumerate(pos.heads):
        ax.plot(pos.offsets, pos.offset_curve[n], marker=".", ms=4, label=f"head {head_label(layer, head)}")
    ax.set_xlabel("offset i - j (query minus key position)")
    ax.set_ylabel("expected score from position alone")
    ax.set_title("positional QK by relative offset", fontsize=10)
    ax.axvline(1, color="#999", ls=":", lw=1, label="offset 1 (the previous token)")
    # beside the axes, not on them: with several heads the legend sat on the curves
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if with_mats:
        n_pos = pos.matrix.shape[-1]
        for n, (layer, head) in enumerate(pos.heads):
            token_heatmap(
                axes[0, n + 1],
                pos.matrix[n],
                [str(p) for p in range(n_pos)],
                f"W_pos W_Q W_Kᵀ W_posᵀ, head {head_label(layer, head)}",
                "score",
                cmap="RdBu_r",
                ticks=False,
            )
            axes[0, n + 1].set_xlabel("key position"), axes[0, n + 1].set_ylabel("query position")
    fig.suptitle(
        f"{pos.model_name}: positional QK circuit" + (f" (rope_theta {pos.rope_theta:g})" if pos.rope_theta else ""),
        fontsize=11,
    )
    fig.text(0.01, -0.01, _wrap("method: " + pos.method, 140), fontsize=7, color="#333", va="top")
    return fig


def plot_token_qk(tq):
    """The token QK circuit on a token set (queries down) and the top directions of its full SVD."""
    n = len(tq.labels)
    side = _side(n)
    fig, (ax, tx) = plt.subplots(
        1, 2, figsize=(side + 6.5, side), gridspec_kw={"width_ratios": [side, 5]}, layout="constrained"
    )
    lim = float(np.nanmax(np.abs(tq.matrix))) or 1.0
    token_heatmap(
        ax,
        tq.matrix,
        tq.labels,
        f"token QK circuit, head {tq.label}, {tq.where}",
        "score",
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
    )
    ax.set_xlabel("key token"), ax.set_ylabel("query token")
    lines = [f"Full-vocabulary SVD ({tq.where}, from rank-d_head factors):"]
    for d, info in enumerate(tq.directions):
        lines += [
            f"#{d + 1}  σ = {info['singular_value']:.4g}",
            " +queries: " + " ".join(show_token(t, 10) for t in info["queries_plus"][:5]),
            "  -> keys: " + " ".join(show_token(t, 10) for t in info["keys_plus"][:5]),
            " -queries: " + " ".join(show_token(t, 10) for t in info["queries_minus"][:5]),
            "  -> keys: " + " ".join(show_token(t, 10) for t in info["keys_minus"][:5]),
            "",
        ]
    tx.axis("off")
    tx.text(0, 1, "\n".join(lines), va="top", family="DejaVu Sans Mono", fontsize=7.5)
    fig.suptitle(f"{tq.model_name}: head {tq.label} token QK circuit ({tq.where})", fontsize=11)
    fig.text(0.01, -0.01, _wrap(tq.method, 150), fontsize=7, color="#333", va="top")
    return fig


def plot_composition(comp, kind: str | None = None):
    """Composition scores minus the random baseline, earlier heads down, later heads across."""
    kinds = [kind] if kind else list(comp.scores)
    L, H = comp.shape
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.2 * len(kinds), 5.8), squeeze=False, layout="constrained")
    for ax, kd in zip(axes[0], kinds):
        ex = comp.excess(kd).reshape(L * H, L * H)
        lim, clipped = signed_limit(ex, bulk=99.5)  # the few strongest pairs left the rest the colour of 0
        im = ax.imshow(
            np.ma.masked_invalid(ex), cmap=_grey_cmap("RdBu_r"), vmin=-lim, vmax=lim, interpolation="nearest"
        )
        step = max(1, L // 10)
        ticks = [layer * H for layer in range(0, L, step)]
        ax.set_xticks(ticks, [str(layer) for layer in range(0, L, step)], fontsize=7)
        ax.set_yticks(ticks, [str(layer) for layer in range(0, L, step)], fontsize=7)
        for b in range(H, L * H, H):
            ax.axhline(b - 0.5, color="white", lw=0.3), ax.axvline(b - 0.5, color="white", lw=0.3)
        ax.set_xlabel("later head (layer; heads within)")
        ax.set_ylabel("earlier head's OV (layer; heads within)")
        at = "" if kd == "V" or comp.offset is None else f", offset {comp.offset}"
        ax.set_title(f"{kd}-composition minus baseline {comp.baseline:.3f}{at}", fontsize=10)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, extend="both" if clipped else "neither")
        bar.set_label("score minus baseline" + (" (colour clipped)" if clipped else ""))
    fig.suptitle(f"{comp.model_name}: composition scores (grey = not an earlier->later pair)", fontsize=11)
    return fig


def plot_k_sources(
    comp, heads: list[tuple[int, int]], prev_token: np.ndarray | None = None, k: int = 8, prev_from: str | None = None
):
    """For each head, its strongest K-composition sources, labelled with their previous-token score.

    A weight product, and the figure says so (:data:`~headscope.results.qk_results.WEIGHT_PRODUCT`);
    ``prev_from``: where the previous-token scores come from (default: the run's induction scan).
    """
    cols = min(len(heads), 3)
    rows = (len(heads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows), squeeze=False)
    for ax in list(axes.flat)[len(heads) :]:
        ax.axis("off")
    for ax, (layer, head) in zip(axes.flat, heads):
        src = comp.top_sources(layer, head, "K", k)[::-1]
        names = [
            head_label(a, b) + (f"  (prev {prev_token[a, b]:.2f})" if prev_token is not None else "") for a, b, _ in src
        ]
        colours = [
            plt.get_cmap("viridis")(float(prev_token[a, b])) if prev_token is not None else "#dd8452" for a, b, _ in src
        ]
        ax.barh(range(len(src)), [v for *_, v in src], color=colours)
        ax.set_yticks(range(len(src)), names, fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.set_xlabel(f"K-composition minus baseline ({comp.where})")
        ax.set_title(f"heads that could feed {head_label(layer, head)}'s keys", fontsize=10)
    prev = prev_from or "the run's induction scan (qk.json: scan_scores_from)"
    fig.suptitle(
        _wrap(
            f"{comp.model_name}: strongest K-composition sources by the weights ({WEIGHT_PRODUCT}; "
            "headscope circuit measures the path)"
            + (f". Colour and label: the source's previous-token score, from {prev}" if prev_token is not None else ""),
            110,
        ),
        fontsize=10,
    )
    tight_layout(fig)
    return fig
