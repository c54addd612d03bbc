"""The view of a toy run's phase change: curves with the window, before/after heatmaps, aims; terminal table.

Draws a :class:`~headscope.results.phase_change.PhaseAnalysis`.
"""

from __future__ import annotations

from rich.table import Table

from ...head_labels import head_label
from ...results.phase_change import PhaseAnalysis
from ..html import esc, figure_html, fmt, kv_html, table_html
from ..lookup import register
from ..phase_figures import phase_figure, phase_heatmaps
from ..view_base import Section, View


def phase_sections(ph) -> list[tuple[str, str, str]]:
    """The curves against step with the detected window, the aims, and the before/after heatmaps."""
    from ..phase_figures import phase_figure, phase_heatmaps

    w = ph.window
    facts = {
        "run": str(ph.run_dir),
        "checkpoints": f"{len(ph.steps)} (steps {ph.steps[0]}..{ph.steps[-1]})",
        "tracked heads": f"previous-token {head_label(*ph.previous_token_head)} -> induction "
        f"{head_label(*ph.induction_head)}",
        "window (later-repeat loss)": "none detected"
        if w is None
        else f"steps {int(w.before)}..{int(w.after)} ({w.width / ph.total_steps:.0%} of the run), loss x{w.ratio:.2f}",
    }
    aims = [
        [k.replace("_", " "), (esc(fmt(v) if isinstance(v, float) else str(v)), str(v))] for k, v in ph.aims().items()
    ]
    return [
        (
            "phase",
            "Phase change during training",
            kv_html(facts)
            + figure_html(phase_figure(ph))
            + "<h3>Before and after the window</h3>"
            + figure_html(phase_heatmaps(ph))
            + offsets_html(ph)
            + "<h3>Aims</h3>"
            + table_html(["aim", "value"], aims),
        )
    ]


def offsets_html(ph) -> str:
    """Induction against copy distance: the figure, then a table of the tracked head's score (min and mean)
    over each range of distances at the checkpoints the figure shows, and on the fresh recheck sample."""
    from ..phase_figures import offset_steps, offsets_figure

    off = ph.offsets
    if off is None:
        return ""
    columns = [(f"step {s} ({label})", off.bins(off.head(s, ph.induction_head))) for s, label in offset_steps(ph)]
    if off.recheck is not None:
        il, ih = ph.induction_head
        columns.append(
            (f"step {ph.steps[-1]}, fresh {off.recheck_batch}-sequence sample", off.bins(off.recheck[il, ih]))
        )
    rows = [
        [b["distances"]] + [f"{col[i]['min']:.2f} / {col[i]['mean']:.2f}" for _, col in columns]
        for i, b in enumerate(columns[0][1])
    ]
    return (
        f"<h3>Induction against copy distance ({head_label(*ph.induction_head)})</h3>"
        + f"<p>{esc(off.definition)}</p>"
        + figure_html(offsets_figure(ph))
        + table_html(["distance (tokens back)"] + [f"{name}: min / mean" for name, _ in columns], rows)
    )


def _print_phase(con, ph) -> None:
    w = ph.window
    t = Table(title="Phase change")
    for col in ("", "before", "after"):
        t.add_column(col, justify="left" if not col else "right")
    ind, prev = ph.induction_head, ph.previous_token_head
    if w is None:
        con.print(
            "[yellow]No abrupt drop of the later-repeat loss was detected[/] (train longer, or see phase/phase.png).",
            highlight=False,
        )
        return
    i0, i1 = ph.steps.index(int(w.before)), ph.steps.index(int(w.after))
    c = ph.curves
    t.add_row("step", str(int(w.before)), str(int(w.after)))
    for key, label in (
        ("loss_later_repeats", "later-repeat loss (nats)"),
        ("loss_first_repeat", "first-repeat loss"),
        ("induction_best", "best induction score"),
        ("induction_pair_offset_min", f"L{ind[0]}H{ind[1]}'s lowest induction score over copy distances"),
        ("previous_token_best", f"best previous-token score, layer{'s' if ind[0] > 1 else ''} < {ind[0]}"),
        ("k_composition", f"K-composition L{prev[0]}H{prev[1]} -> L{ind[0]}H{ind[1]}"),
    ):
        t.add_row(label, f"{c[key][i0]:.3f}", f"{c[key][i1]:.3f}")
    con.print(t)
    a = ph.aims()
    con.print(
        f"Window {int(w.before)}-{int(w.after)}: {w.width / ph.total_steps:.0%} of the run; later-repeat loss "
        f"x{w.ratio:.2f} inside it. Final: best induction {a['induction_best_final']:.2f} "
        f"(L{ind[0]}H{ind[1]}), previous-token {a['previous_token_final']:.2f} (L{prev[0]}H{prev[1]}); "
        f"K-composition random baseline {ph.k_baseline:.3f}.",
        highlight=False,
    )
    if "induction_head_at_every_offset" in a:
        every = "at every" if a["induction_head_at_every_offset"] else "[yellow]not[/] at every"
        con.print(
            f"L{ind[0]}H{ind[1]} is an induction head {every} copy distance (threshold {a['offset_threshold']:g}): "
            f"lowest {a['offset_min']:.2f} at distance {a['offset_min_distance']}, "
            f"{a.get('offset_recheck_min', float('nan')):.2f} on a fresh larger sample (phase/phase_offsets.png).",
            highlight=False,
        )


@register(PhaseAnalysis)
class PhaseView(View):
    figures = {"phase_figure": phase_figure, "phase_heatmaps": phase_heatmaps}

    def sections(self, result) -> list[Section]:
        return [Section(*s) for s in phase_sections(result)]

    def legend(self, result) -> dict[str, str]:
        return dict(result.to_dict().get("definitions", {}))

    def subtitle(self, result) -> str:
        return f"the phase change over {len(result.steps)} training checkpoints"

    def title(self, result) -> str:
        return f"Phase change of {result.run_dir}"

    def terminal(self, result, console) -> None:
        _print_phase(console, result)
