"""The phase-change figure of a sweep: induction score and later-repeat loss against step or model."""

from __future__ import annotations

from ._mpl import plt, tex_safe, tight_layout

PANELS = (
    ("induction_top", "induction score\n(top head)"),
    ("induction_sum", "induction score\n(sum over heads)"),
    ("loss_later_repeats", "loss (nats)\n(later and first repeat)"),
)


def sweep_figure(frame, axes=None):
    """Three panels sharing the x axis: top-head induction score, its sum over heads, later-repeat loss.

    ``frame`` is :meth:`SweepResult.to_frame` (one row per entry; rows not ``done`` are
    skipped). When every finished entry has a training ``step`` the x axis is the step (one
    line per training run, ``series``; logarithmic when the steps span more than two decades, as Pythia's
    do), otherwise the entries in sweep order as unjoined markers (different models are not points
    on one curve). The first-repeat loss is drawn under the later-repeat loss in hollow markers (joined by a
    dashed line along the steps): the gap between them is what induction buys. Every series has markers,
    so an entry that is the only finished one of its run is still drawn.
    """
    done = frame[frame["status"] == "done"]
    if axes is None:
        width = max(6.0, min(14.0, 0.45 * len(done) + 4))
        _, axes = plt.subplots(len(PANELS), 1, figsize=(width, 7.5), sharex=True)
    by_step = len(done) > 0 and done["step"].notna().all()
    series = (
        [(m, done[done["series"] == m].sort_values("step")) for m in done["series"].unique()]
        if by_step
        else [(None, done)]
    )
    for ax, (col, ylabel) in zip(axes, PANELS):
        for model, rows in series:
            x = rows["step"].astype(float).tolist() if by_step else list(range(len(rows)))
            name = tex_safe(str(model)) if model is not None and len(series) > 1 else None
            if name is None and col == "loss_later_repeats":
                name = "later repeats"
            joined = {"lw": 1.4} if by_step else {"ls": "none", "ms": 7}
            (line,) = ax.plot(x, rows[col].tolist(), marker="o", **{"ms": 4, **joined}, label=name)
            if col == "loss_later_repeats":
                # hollow markers in both layouts: a run of one finished checkpoint is a single point, which
                # a dashed line alone does not draw
                first = {"ls": "--", "lw": 1, "ms": 5} if by_step else {"ls": "none", "ms": 7}
                ax.plot(
                    x,
                    rows["loss_first_repeat"].tolist(),
                    color=line.get_color(),
                    alpha=0.6,
                    marker="o",
                    mfc="none",
                    mew=1.2,
                    label="first repeat" if len(series) == 1 else None,
                    **first,
                )
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        if col == "induction_top":
            ax.set_ylim(0, 1.02)
        if col != "induction_top":
            ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
    axes[-1].legend(fontsize=8, loc="best")
    bottom = axes[-1]
    if by_step:
        steps = done["step"].astype(float)
        positive = steps[steps > 0]
        if len(positive) > 1 and positive.max() / positive.min() > 100:
            if (steps == 0).any():  # Pythia's step0: linear between 0 and 1, logarithmic above
                bottom.set_xscale("symlog", linthresh=1.0)
                bottom.set_xlim(left=0)
            else:
                bottom.set_xscale("log")
        bottom.set_xlabel("training step")
    else:
        bottom.set_xticks(
            range(len(done)),
            [tex_safe(str(s)) for s in done["label"]],
            rotation=30 if len(done) > 3 else 0,
            ha="right" if len(done) > 3 else "center",
            fontsize=8,
        )
        bottom.set_xlabel("model")
    fig = axes[0].figure
    n_fail = int((frame["status"] != "done").sum())
    fig.suptitle(
        "Induction heads across the sweep" + (f" ({n_fail} of {len(frame)} entries not finished)" if n_fail else ""),
        fontsize=11,
    )
    tight_layout(fig)
    return fig
