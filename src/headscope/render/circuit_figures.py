"""Pictures of patching results: the activation-patching heatmap and the path-patching charts."""

from __future__ import annotations

import numpy as np

from ..errors import BadInput
from ..results.patching_results import ActivationPatching, PathPatching
from ..stats import signed, with_interval
from ._mpl import plt


def gap_title(res) -> str:
    """A title's last line when the clean - corrupted gap is no gap (empty otherwise)."""
    if getattr(res, "normalised_meaningful", True):
        return ""
    g = res.gap
    why = "wrong sign" if g["problem"] and "wrong way round" in g["problem"] else "interval includes 0"
    return f"\nclean − corrupted gap {with_interval(g['mean'], g['low'], g['high'])} ({why}): not normalised"


def _raw(res) -> bool:
    return not res.normalised_meaningful and len(res.change) > 0


def patching_heatmap(res: ActivationPatching, ax=None):
    """Layers x heads, plus the MLP column, the whole sequence patched: coloured by the normalised value (1 = clean,
    0 = corrupted), or by the change in the metric when the clean - corrupted gap is no gap."""
    return _layer_map(res, res.change if _raw(res) else res.values, ", whole sequence" if res.per_position else "", ax)


def patching_by_position(res: ActivationPatching, ax=None):
    """With ``per_position``: the same map, each cell the one position whose patch has the largest effect (the
    change in the metric when the gap is no gap); which position that is, is in ``position_frame()``."""
    if not res.per_position:
        raise BadInput(
            "this activation patching patched the whole sequence only: there is no per-position map",
            hint="activation_patching(..., per_position=True), or headscope circuit --per-position",
        )
    v = res.position_change if _raw(res) else res.position_values
    best = np.abs(v if _raw(res) else res.as_effect(v)).argmax(-1)[..., None]
    return _layer_map(res, np.take_along_axis(v, best, -1)[..., 0], ", best single position", ax)


def _layer_map(res: ActivationPatching, v: np.ndarray, pos: str, ax=None):
    raw = _raw(res)
    if ax is None:
        size = (max(5.0, 1.0 + 0.45 * v.shape[1]), 1.6 + 0.22 * v.shape[0])  # wide enough for the title
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    else:
        fig = ax.figure
    centre = 0.0 if res.direction == "denoise" or raw else 1.0
    # the colour range follows the heads (an MLP such as layer 0's, which carries the tokens, would leave every head
    # the colour of 0); a cell beyond it is clipped, and says so: its number is written on it and the bar has arrows
    lim = max(1e-9 if raw else 0.05, float(np.nanmax(np.abs(v[:, : res.n_heads] - centre))))  # raw: metric units
    im = ax.imshow(
        v, cmap="RdBu_r" if res.direction == "denoise" else "RdBu", vmin=centre - lim, vmax=centre + lim, aspect="auto"
    )
    low, high = clipped_cells(v, centre, lim)
    for l, c in zip(*np.nonzero(low | high)):
        ax.text(c, l, signed(float(v[l, c]), 3 if raw else 2), ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(v.shape[1]), [str(h) for h in range(res.n_heads)] + ["MLP"], fontsize=7)
    ax.set_yticks(range(v.shape[0]), [str(l) for l in range(v.shape[0])], fontsize=7)
    ax.axvline(res.n_heads - 0.5, color="k", lw=0.8)
    ax.set_xlabel("head (and the layer's MLP)")
    ax.set_ylabel("layer")
    what = (
        "clean activation into the corrupted run"
        if res.direction == "denoise"
        else "corrupted activation into the clean run"
    )
    scale = f"change in {res.metric}" if raw else f"{res.metric}, 1 = clean, 0 = corrupted"
    ax.set_title(
        f"Activation patching ({res.direction}: {what}{pos})\n{scale}, n = {res.n_examples}{gap_title(res)}",
        wrap=True,
        fontsize=8,
    )
    clipped = bool(low.any() or high.any())
    label = (f"change in {res.metric}" if raw else "normalised metric") + (
        " (colour clipped: cells beyond it show their value)" if clipped else ""
    )
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (bool(low.any()), bool(high.any())), "neither"
    )
    fig.colorbar(im, ax=ax, fraction=0.04, label=label, extend=extend)
    return fig


def clipped_cells(v: np.ndarray, centre: float, lim: float) -> tuple[np.ndarray, np.ndarray]:
    """The cells of ``v`` below and above the colour range ``centre ± lim`` (drawn in its end colours)."""
    return v < centre - lim, v > centre + lim


#: The receiver of a sender's direct path to the logits (no head in between).
LOGITS = "logits"


def is_direct(res: PathPatching, receiver: str) -> bool:
    """Whether ``receiver`` is the direct path to the logits in a result that mixes it with paths via later heads
    (``L17H4 -> logits: direct and via each later head``)."""
    return receiver == LOGITS and len(set(res.receivers)) > 1


def shown_paths(res: PathPatching, k: int) -> list[tuple[str, str, float, float, float]]:
    """The rows a chart or table shows: the ``k`` paths with the largest effect (the change in the metric when the
    gap is no gap), after the direct path to the logits wherever the result also has paths via later heads. The
    direct path comes first however small it is: left to the ranking, a direct path of +0.0015 fell below the top 20
    and the section titled "direct and via each later head" showed no direct path."""
    rows = res.top_change(len(res.senders)) if _raw(res) else res.top(len(res.senders))
    direct = [row for row in rows if is_direct(res, row[1])]
    return direct + [row for row in rows if not is_direct(res, row[1])][:k]


def receiver_label(res: PathPatching, receiver: str) -> str:
    """A receiver as charts and tables name it: ``logits (direct)`` for the direct path among paths via later heads."""
    return f"{receiver} (direct)" if is_direct(res, receiver) else receiver


def path_label(res: PathPatching, sender: str, receiver: str) -> str:
    """A path's name in a chart: its sender when every path has one receiver, else ``sender → receiver``
    (:func:`receiver_label`: ``L17H4 → logits (direct)``)."""
    return sender if len(set(res.receivers)) == 1 else f"{sender} → {receiver_label(res, receiver)}"


def path_chart(res: PathPatching, top: int = 20, ax=None):
    """The paths with the largest effect, as bars with their 95% intervals (share of the clean - corrupted gap, or
    the change in the metric when that gap is no gap); the direct path to the logits first, where there is one
    among paths via later heads (:func:`shown_paths`)."""
    raw = _raw(res)
    rows = shown_paths(res, top)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 0.8 + 0.26 * max(1, len(rows))), layout="constrained")
    else:
        fig = ax.figure
    same = len(set(res.receivers)) == 1
    labels = [path_label(res, s, r) for s, r, *_ in rows][::-1]
    eff = np.array([e for _, _, e, _, _ in rows])[::-1]
    lo = np.array([lo for *_, lo, _ in rows])[::-1]
    hi = np.array([hi for *_, hi in rows])[::-1]
    y = np.arange(len(rows))
    ax.barh(y, eff, color=["#c0392b" if e >= 0 else "#2471a3" for e in eff])
    ax.errorbar(eff, y, xerr=[eff - lo, hi - eff], fmt="none", ecolor="k", lw=0.8, capsize=2)
    ax.set_yticks(y, labels, fontsize=7)
    if rows and is_direct(res, rows[0][1]) and len(rows) > 1:  # the direct path on top, set off from the rest
        ax.axhline(len(rows) - 1.5, color="0.5", lw=0.6, ls="--")
        ax.get_yticklabels()[-1].set_fontweight("bold")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel(
        f"change in {res.metric} (95% interval)"
        if raw
        else "share of the clean − corrupted gap this path carries (95% interval)"
    )
    title = f"Path patching → {res.receiver}" if same else f"Path patching: {res.receiver}"
    direct = sum(is_direct(res, r) for _, r, *_ in rows)
    via = len(res.receivers) - direct
    shown = f"\nthe direct path, then the {len(rows) - direct} largest of {via} via a later head" if direct else ""
    ax.set_title(f"{title}\n{res.metric}, {res.direction}, n = {res.n_examples}{shown}{gap_title(res)}", fontsize=8)
    return fig


def sender_map(res: PathPatching, ax=None):
    """For one receiver: every sender head's effect as a layers x heads map."""
    L = 1 + max(int(s[1:].split("H")[0]) for s in res.senders)
    m = np.full((L, res.n_heads), np.nan)
    raw = _raw(res)
    for s, e in zip(res.senders, res.change if raw else res.effect):
        l, h = (int(x) for x in s[1:].split("H"))
        m[l, h] = e
    if ax is None:
        # at least 2.6 in high: one sender layer left a colorbar a fifth of an inch tall, its ticks on each other
        fig, ax = plt.subplots(figsize=(1.2 + 0.4 * res.n_heads, max(2.6, 1.2 + 0.22 * L)), layout="constrained")
    else:
        fig = ax.figure
    lim = max(1e-6, float(np.nanmax(np.abs(m))))
    # a head that is no sender is grey, not white: white is an effect of 0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    unsent = bool(np.isnan(m).any())
    ax.set_xticks(range(res.n_heads), [str(h) for h in range(res.n_heads)], fontsize=7)
    ax.set_yticks(range(L), [str(l) for l in range(L)], fontsize=7)
    ax.set_xlabel("sender head")
    ax.set_ylabel("sender layer")
    ax.set_title(
        f"Senders → {res.receiver}: "
        + (f"change in {res.metric}" if raw else "share of the gap each path carries")
        + f"\n{res.metric}, n = {res.n_examples}"
        + (" (grey: not a sender)" if unsent else "")
        + gap_title(res),
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, fraction=0.04, label=f"change in {res.metric}" if raw else "share of the gap")
    return fig
