"""The view of ``headscope heads``: the ICL check and natural-text sinks on the page, the role table in a notebook and a terminal.

Draws a :class:`~headscope.results.heads_analysis.HeadsAnalysis`. The role table of the page is the
scan's (:mod:`.induction_view`), so a page shows the scan first and this view's sections after it.
"""

from __future__ import annotations

from rich.table import Table

from ...head_labels import head_label
from ...results.heads_analysis import HeadsAnalysis
from ...results.icl_result import ICLResult
from ...results.sink_scores import SinkScores
from ...scores import score as declared
from ..html import DECIMALS, esc, fmt, legend_html, page_asset, table_html
from ..lookup import register
from ..view_base import Section, View, frame_html
from .induction_view import roles_section_html

#: Said wherever a one-window ICL check shows a dash for its standard error and interval.
ONE_WINDOW = "one window gives no standard error or 95% interval (they need at least 2 windows)"


def interval_text(ci) -> str:
    """``[+0.123, +0.456]``; a dash for each end that is not a number (one window gives no interval)."""
    lo, hi = ci
    return f"[{fmt(lo, signed=True)}, {fmt(hi, signed=True)}]"


def icl_zero_note(icl) -> str:
    """A sentence when the ICL score's interval includes 0 (the windows do not show the loss falling), else ""."""
    lo, hi = icl.icl_ci95
    if lo <= 0 <= hi:
        return (
            f"The interval includes 0: on these {icl.n_windows} windows the loss does not clearly fall from token "
            f"{icl.early} to token {icl.late} (more windows narrow it: --icl-windows, or icl_windows= in Python)."
        )
    return ""


def icl_html(icl) -> str:
    """The ICL score and each ablated head's delta with its standard error (an ``ICLResult``)."""
    head = (
        f"<p>In-context learning score (Olsson et al. 2022): <b>{esc(fmt(icl.icl_score, signed=True))}</b> nats "
        f"(loss at token {icl.late} {esc(fmt(icl.loss_late))} minus token {icl.early} {esc(fmt(icl.loss_early))}; "
        f"standard error {esc(fmt(icl.icl_stderr))}, 95% interval "
        f"{esc(interval_text(icl.icl_ci95))}) on {esc(icl.source)}."
        + (f" <b>{esc(icl_zero_note(icl))}</b>" if icl_zero_note(icl) else "")
        + "</p>"
    )
    if icl.n_windows < 2:
        head += f"<p>On {icl.n_windows} window: {esc(ONE_WINDOW)}.</p>"
    if not icl.ablations:
        return head
    rows = [
        [
            head_label(e["layer"], e["head"]),
            round(e["delta"], DECIMALS),
            round(e["delta_stderr"], DECIMALS),
            interval_text(e.get("delta_ci95", (float("nan"), float("nan")))),
            round(e["icl_score"], DECIMALS),
        ]
        for e in icl.ablations
    ]
    return head + (
        f"<p>{esc(icl.ablation_kind)} ablation of each top induction head's hook_z; Δ = ablated − clean; "
        "a head is said to help the model learn from its context only where the interval lies above 0.</p>"
        + table_html(["head", "Δ ICL score", "SE of Δ", "95% interval of Δ", "ICL score ablated"], rows, sortable=True)
    )


def heads_sections(a) -> list[tuple[str, str, str]]:
    """The ``headscope heads`` part of the page: ICL check and natural-text sinks (the role table is the scan's)."""
    out = []
    if a.icl is not None:
        out.append(("icl", "In-context learning and the top induction heads", icl_html(a.icl)))
    ns = a.natural_sinks
    if ns is not None:
        best = ", ".join(f"{head_label(l, h)} {v:.3f}" for l, h, v in ns.sink_heads()[:5])
        out.append(
            (
                "natural-sinks",
                "Attention sinks in Gu et al. 2024's setting (the attention-sink role)",
                f"<p>{esc(ns.source)}; first token: {esc(ns.first_token)}. {len(ns.sink_heads())} heads "
                f"({esc(f'{ns.sink_head_fraction:.1%}')} of heads) have mean alpha_1 &gt; {esc(ns.threshold)}; "
                f"sink rate Sink<sub>1</sub><sup>{esc(ns.threshold)}</sup> = {esc(f'{ns.model_sink_rate:.1%}')} of "
                f"(window, head) pairs; strongest: {esc(best or 'none')}. The scan's attention to the first "
                "of its random tokens is the column first_token_random (no role).</p>",
            )
        )
    return out


def heads_html(a) -> str:
    """The notebook view of a ``HeadsAnalysis``: the role table, counts, ICL check, legend."""
    parts = [f"<h3>Roles of every head — {esc(a.model.get('name'))}</h3>", roles_section_html(a.induction)]
    parts += [f"<h3>{esc(t)}</h3>{h}" for _, t, h in heads_sections(a)]
    parts.append(f"<details><summary>Definitions</summary>{legend_html(a.legend())}</details>")
    return f'<div class="hs"><style>{page_asset("page.css")}</style>{"".join(parts)}</div>'


def describe_icl(icl: ICLResult) -> list[str]:
    """Plain sentences: the ICL score and each ablated head's delta, each with its SE and 95% interval."""
    lo, hi = icl.icl_ci95
    lines = [
        f"In-context learning score: {icl.icl_score:+.3f} nats (SE {fmt(icl.icl_stderr)}, 95% interval "
        f"{interval_text((lo, hi))}; loss at token {icl.late} {icl.loss_late:.2f} minus token {icl.early} "
        f"{icl.loss_early:.2f}) on {icl.source}" + (f". {icl_zero_note(icl)}" if icl_zero_note(icl) else "")
    ]
    if icl.n_windows < 2:
        lines.append(f"  On {icl.n_windows} window: {ONE_WINDOW}.")
    for e in icl.ablations:
        d, se = e["delta"], e["delta_stderr"]
        a, b = e.get("delta_ci95", (float("nan"), float("nan")))
        lines.append(
            f"  {head_label(e['layer'], e['head'])} {icl.ablation_kind}-ablated: Δ {d:+.3f} nats (SE {fmt(se)}, 95% "
            f"interval {interval_text((a, b))})"
            + (
                " - raises the score on these windows (interval above 0: weaker in-context learning)"
                if a > 0
                else " - lowers it on these windows (interval below 0)"
                if b < 0
                else " - the interval includes 0"
                if a <= 0 <= b
                else " - no interval"
            )
        )
    return lines


def print_heads(con, a: HeadsAnalysis) -> None:
    """Role table, counts per role, successor sets, ICL check, legend."""
    s = a.induction.settings
    con.print(
        f"[bold]{a.model['name']}[/]: {s['batch']} sequences of {s['seq_len']} random tokens x {s['repeats']} "
        f"repeats (seed {s['seed']})",
        highlight=False,
    )
    rows = a.role_table()
    L, H = a.induction.scores["induction"].shape
    t = Table(title=f"Roles of every head ({len(rows)} of {L * H} heads have at least one)")
    for col in ("head", "roles", "score behind each role"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r["head"],
            ", ".join(declared(n).label for n in r["roles"]),
            ", ".join(f"{declared(n).header} {v:.3f}" for n, v in r["scores"].items()),
        )
    con.print(t)
    for r in rows:
        if "note" in r:
            con.print(f"{r['head']} holds two opposite roles: {r['note']}", highlight=False, markup=False)
    counts = a.role_counts()
    c = Table(title="Heads per role")
    for col in ("role", "threshold", "heads", "best head"):
        c.add_column(col, justify="left" if col in ("role", "best head") else "right")
    for n, k in counts.items():
        ((l, h, v),) = a.induction.top_heads(n, 1)
        best = f"{head_label(l, h)} {v:.3f}" if v == v else "not measured"  # NaN: see the notes below
        c.add_row(declared(n).label, f"{a.thresholds[n]:g}", str(k), best)
    con.print(c)
    for line in a.weight_notes():
        con.print(line, highlight=False, markup=False)
    if a.icl is not None:
        for line in describe_icl(a.icl):
            con.print(line, highlight=False, markup=False)
    ns = a.natural_sinks
    if ns is not None:
        best = ", ".join(f"{head_label(l, h)} {v:.3f}" for l, h, v in ns.sink_heads()[:5])
        con.print(
            f"Attention sinks (Gu et al. 2024's setting: {ns.source}; first token: {ns.first_token}): "
            f"{len(ns.sink_heads())} heads with mean alpha_1 > {ns.threshold} ({ns.sink_head_fraction:.1%} of heads); "
            f"sink rate Sink_1^{ns.threshold} = {ns.model_sink_rate:.1%} of (window, head) pairs; "
            f"strongest {best or 'none'}",
            highlight=False,
            markup=False,
        )
    con.print("Legend:", style="dim")
    for name, text in a.legend().items():
        con.print(f"  {name}: {text}", style="dim", highlight=False, markup=False)


@register(HeadsAnalysis)
class HeadsView(View):
    def sections(self, result) -> list[Section]:
        return [Section(*s) for s in heads_sections(result)]

    def legend(self, result) -> dict[str, str]:
        """Beside the scan's legend: the ICL score's and the natural-text sinks' entries, and the attention sink's
        definition with this run's own windows (replacing the scan legend's registry text)."""
        extra = ("in-context learning", "sink rate")  # the keys HeadsAnalysis.legend() writes
        out = {k: v for k, v in result.legend().items() if k in extra}
        if result.natural_sinks is not None:
            out[declared("attention_sink").label] = result.natural_sinks.definition()
        return out

    def title(self, result) -> str:
        return f"Roles of every head — {result.model.get('name')}"

    def notebook_html(self, result) -> str:
        return heads_html(result)

    def terminal(self, result, console) -> None:
        print_heads(console, result)


@register(ICLResult)
class ICLView(View):
    def title(self, result) -> str:
        return "In-context learning score"

    def notebook_html(self, result) -> str:
        return f"<div class='hs'><style>{page_asset('page.css')}</style><h4>{esc(self.title(result))}</h4>{icl_html(result)}</div>"

    def terminal(self, result, console) -> None:
        for line in describe_icl(result):
            console.print(line, highlight=False, markup=False)


@register(SinkScores)
class SinkScoresView(View):
    def title(self, result) -> str:
        return f"Attention sinks on natural text: Sink_1^{result.threshold} = {result.model_sink_rate:.3f}"

    def notebook_html(self, result) -> str:
        frame = result.to_frame().sort_values("alpha", ascending=False)
        return frame_html(self.title(result), frame)
