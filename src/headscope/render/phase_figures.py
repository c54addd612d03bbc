"""The phase-change figures of a train-toy run: curves against step, and heatmaps either side.

Pure: they take a :class:`headscope.toy.phase_analysis.PhaseAnalysis` (numbers only) and return a
matplotlib figure; nothing here loads a model or computes a score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._mpl import plt, save, tight_layout

WINDOW_COLOUR = "#f4a261"


def _mark_window(ax, ph) -> None:
    w = ph.window
    if w is not None:
        ax.axvspan(w.before, w.after, color=WINDOW_COLOUR, alpha=0.25, lw=0)


def phase_figure(ph, axes=None):
    """Four panels against training step, the detected window shaded in each.

    1. later-repeat and first-repeat loss (nats) at the checkpoints (markers), and the
       later-repeat loss of the live evaluation during training (thin line, finer steps);
    2. the best induction score over all heads, and the tracked induction head's own;
    3. the best previous-token score in the earlier layer(s), and the tracked head's own;
    4. K-composition of the tracked previous-token head into the tracked induction head,
       with the random-matrix baseline dashed.
    """
    if axes is None:
        _, axes = plt.subplots(4, 1, figsize=(8.5, 9.0), sharex=True)
    x = ph.steps
    c = ph.curves
    ind, prev = ph.induction_head, ph.previous_token_head
    ind_name, prev_name = f"L{ind[0]}H{ind[1]}", f"L{prev[0]}H{prev[1]}"

    ax = axes[0]
    if ph.live:
        ax.plot(
            [r["step"] for r in ph.live],
            [r["loss_later_repeats"] for r in ph.live],
            lw=0.8,
            color="C0",
            alpha=0.45,
            label="later repeat (live, during training)",
        )
    ax.plot(x, c["loss_later_repeats"], marker="o", ms=3.5, lw=1.4, color="C0", label="later repeat")
    ax.plot(x, c["loss_first_repeat"], marker="o", ms=3, lw=1.0, ls="--", color="0.45", label="first repeat")
    ax.set_ylabel("loss (nats)")
    ax.set_ylim(0, max(c["loss_first_repeat"] + c["loss_later_repeats"]) * 1.08)

    ax = axes[1]
    ax.plot(x, c["induction_best"], marker="o", ms=3.5, lw=1.4, color="C3", label="best head")
    ax.plot(x, c["induction_pair"], lw=1.0, ls=":", color="C3", label=f"{ind_name} (tracked)")
    ax.set_ylabel("induction score")
    ax.set_ylim(0, 1.02)

    ax = axes[2]
    layers = "layer 0" if ind[0] == 1 else f"layers 0-{ind[0] - 1}"
    ax.plot(x, c["previous_token_best"], marker="o", ms=3.5, lw=1.4, color="C2", label=f"best head in {layers}")
    ax.plot(x, c["previous_token_pair"], lw=1.0, ls=":", color="C2", label=f"{prev_name} (tracked)")
    ax.set_ylabel("previous-token\nscore")
    ax.set_ylim(0, 1.02)

    ax = axes[3]
    ax.plot(x, c["k_composition"], marker="o", ms=3.5, lw=1.4, color="C4", label=f"{prev_name} -> {ind_name}")
    ax.axhline(ph.k_baseline, ls="--", lw=1, color="0.5", label="random matrices")
    ax.set_ylabel("K-composition")
    ax.set_ylim(0, max(max(c["k_composition"]), ph.k_baseline) * 1.15)
    ax.set_xlabel("training step")

    for ax in axes:
        _mark_window(ax, ph)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="best", framealpha=0.8)
    w = ph.window
    if w is None:
        title = "No abrupt change in the later-repeat loss was detected"
    else:
        title = (
            f"Induction head {ind_name} forms between steps {w.before:.0f} and {w.after:.0f} (shaded): "
            f"later-repeat loss {w.value_before:.2f} -> {w.value_after:.2f} nats"
        )
    fig = axes[0].figure
    fig.suptitle(title, fontsize=10.5)
    tight_layout(fig)
    return fig


def phase_heatmaps(ph):
    """Score grids before and after the window (rows): induction ``[L, H]``, previous-token
    ``[L, H]``, and K-composition ``[H, H]`` from the earlier layer's heads (rows) into the
    induction head's layer (columns). Tracked heads are outlined."""
    steps = ph.heatmap_steps()
    ind, prev = ph.induction_head, ph.previous_token_head
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.6))
    kmax = max(float(np.nanmax(ph.k_comp[s])) for s in steps)
    for row, step in enumerate(steps):
        panels = (
            (ph.scores[step]["induction"], "induction score", (1.0, "viridis"), ind, "layer", "head"),
            (ph.scores[step]["previous_token"], "previous-token score", (1.0, "viridis"), prev, "layer", "head"),
            (
                ph.k_comp[step],
                f"K-composition L{prev[0]} -> L{ind[0]} (random {ph.k_baseline:.2f})",
                (kmax, "magma"),
                (prev[1], ind[1]),
                f"head in L{prev[0]} (writes)",
                f"head in L{ind[0]} (keys read)",
            ),
        )
        for ax, (grid, name, (vmax, cmap), mark, ylab, xlab) in zip(axes[row], panels):
            grid = np.asarray(grid, dtype=np.float64)
            im = ax.imshow(grid, vmin=0, vmax=vmax, cmap=cmap, aspect="auto", interpolation="nearest")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(
                    j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 * vmax else "black"
                )
            ax.add_patch(plt.Rectangle((mark[1] - 0.5, mark[0] - 0.5), 1, 1, fill=False, ec="red", lw=2))
            ax.set_xticks(range(grid.shape[1]))
            ax.set_yticks(range(grid.shape[0]))
            ax.set_xlabel(xlab, fontsize=8)
            ax.set_ylabel(ylab, fontsize=8)
            which = "before" if row == 0 and ph.window is not None else "after" if ph.window is not None else ""
            ax.set_title(f"{name}\nstep {step}" + (f" ({which} the window)" if which else ""), fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(
        "Scores either side of the detected window (tracked heads outlined in red)"
        if ph.window is not None
        else "Scores at the first and last checkpoint (no window detected)",
        fontsize=10.5,
    )
    tight_layout(fig)
    return fig


def offset_steps(ph) -> list[tuple[int, str]]:
    """The checkpoints the distance figure and table show: either side of the window (when there is one)
    and the last, each with a name."""
    last = ph.steps[-1]
    if ph.window is None:
        return [(ph.steps[0], "first"), (last, "last")]
    shown = [(int(ph.window.before), "before the window"), (int(ph.window.after), "after the window")]
    return shown + ([(last, "last")] if last != shown[-1][0] else [])


def offsets_figure(ph):
    """Induction against copy distance for the tracked induction head.

    Left: its score at every distance (rows) at every checkpoint (columns), the window
    marked. Right: its score against distance at the checkpoints of :func:`offset_steps`,
    the last one's fresh, larger recheck sample dotted and the induction role threshold dashed.
    """
    off = ph.offsets
    il, ih = ph.induction_head
    name = f"L{il}H{ih}"
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1.25, 1]})
    grid = np.stack([off.head(s, ph.induction_head) for s in ph.steps], axis=1)  # [D, steps]
    d = off.distances
    im = ax0.imshow(
        grid,
        vmin=0,
        vmax=1,
        cmap="viridis",
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=(-0.5, len(ph.steps) - 0.5, d[0] - 0.5, d[-1] + 0.5),
    )
    ticks = list(range(0, len(ph.steps), max(1, len(ph.steps) // 8)))
    ax0.set_xticks(ticks, [str(ph.steps[i]) for i in ticks], fontsize=8)
    if ph.window is not None:
        for edge in (ph.window.before, ph.window.after):
            ax0.axvline(ph.steps.index(int(edge)), color=WINDOW_COLOUR, lw=1.5, ls="--")
    ax0.set_xlabel("training step (checkpoint)")
    ax0.set_ylabel("copy distance (tokens back)")
    ax0.set_title(f"{name}: induction score at each distance", fontsize=9.5)
    fig.colorbar(im, ax=ax0, fraction=0.046, pad=0.03)

    for i, (step, label) in enumerate(offset_steps(ph)):
        ax1.plot(d, off.head(step, ph.induction_head), lw=1.4, color=f"C{i}", label=f"step {step} ({label})")
    if off.recheck is not None:
        ax1.plot(
            d,
            off.recheck[il, ih],
            lw=1.2,
            ls=":",
            color="k",
            label=f"step {ph.steps[-1]}, fresh sample ({off.recheck_batch} per distance)",
        )
    ax1.axhline(off.threshold, ls="--", lw=1, color="0.5", label=f"induction threshold {off.threshold:g}")
    ax1.set_ylim(0, 1.02)
    ax1.set_xlabel("copy distance (tokens back)")
    ax1.set_ylabel("induction score")
    ax1.set_title(f"{name} against distance ({off.batch} sequences per distance)", fontsize=9.5)
    ax1.grid(alpha=0.3)
    # below the axes: a short run's curves lie low, a trained head's high, and "best" still sat on one
    ax1.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle(f"Is {name} an induction head at every distance, or only at some?", fontsize=10.5)
    tight_layout(fig)
    return fig


def save_phase_figures(ph, out_dir: str | Path) -> list[Path]:
    """``phase.png``, ``phase_heatmaps.png`` and (when measured) ``phase_offsets.png`` in ``out_dir``."""
    out = Path(out_dir)
    save(phase_figure(ph), out / "phase.png")
    save(phase_heatmaps(ph), out / "phase_heatmaps.png")
    written = [out / "phase.png", out / "phase_heatmaps.png"]
    if ph.offsets is not None:
        save(offsets_figure(ph), out / "phase_offsets.png")
        written.append(out / "phase_offsets.png")
    return written
