"""The view of a logit analysis: the induction story, direct effects, OV rows; the terminal tables.

Draws a :class:`~headscope.results.logit_results.LogitAnalysis`.
"""

from __future__ import annotations

import numpy as np
from rich.table import Table

from ...head_labels import head_label
from ...results.logit_results import (
    DLA_DEFINITION,
    LogitAnalysis,
    ablation_cell,
    ov_definition,
    story_definition,
)
from ...results.patching_results import DEFINITIONS as PATCHING_DEFINITIONS
from ...results.qk_results import QK_DEFINITIONS
from ...scores import CONTROL_DRAWS, ablation_definition
from ...scores import score as declared
from ...stats import signed, with_interval
from ...tokens import visible_whitespace
from ..html import DECIMALS, esc, table_html, tabs_html, tokens_html, visible_token
from ..logit_figures import ov_row_bars, scan_effect_heatmap, token_head_heatmap
from ..lookup import register
from ..view_base import Section, View, plotted
from .qk_view import _lh


def _n(v: float | None) -> float:
    """A number for :func:`table_html`: None (not measured) shows as a dash."""
    return float("nan") if v is None else round(float(v), DECIMALS)


def _paths_cell(entries: list[dict], key: str) -> str:
    return "; ".join(f"{e[key]} {with_interval(e['effect'], e['low'], e['high'])}" for e in entries) or "–"


def logit_story_html(a) -> str:
    """The induction story panel: each top induction head's numbers, each with its unit, then the same in words."""
    d_vocab = a.model.get("d_vocab")
    measured = any(st.k_paths or st.logit_paths for st in a.stories.stories)
    ablated = bool(a.scan.settings.get("ablation"))  # None with --no-ablate: no Δloss was measured
    rows = []
    for st in a.stories.stories:
        srcs = (
            "; ".join(
                f"{_lh(x['head'])} ({x['k_composition']:+.3f}, previous-token {x['previous_token']:.2f})"
                for x in st.k_sources
            )
            or "– (layer 0)"
        )
        rank = "–" if st.self_rank_median is None else f"{st.self_rank_median:,.0f} / {d_vocab:,}"
        rows.append(
            [
                st.label,
                _n(st.induction),
                srcs,
                _n(st.copying),
                (esc(rank), st.self_rank_median or -1.0),
                _n(st.dla_first),
                _n(st.dla_later),
            ]
            + (
                [(esc(ablation_cell(st)), -1e9 if st.ablation_delta_loss is None else st.ablation_delta_loss)]
                if ablated
                else []
            )
            + ([_paths_cell(st.k_paths, "head"), _paths_cell(st.logit_paths, "via")] if measured else [])
        )
    cols = [
        "head",
        "induction",
        f"strongest K-composition sources (excess, {a.k_where}; their previous-token score)",
        "copying",
        "OV self-rank (median)",
        "direct logit effect, first repeat (centred logit)",
        "direct logit effect, later repeats (centred logit)",
    ]
    cols += ["ablation Δloss (cross-entropy, nats) [95% interval]"] if ablated else []
    cols += (
        [
            "measured: senders into its keys (path patching, share of the gap, 95% interval)",
            "measured: its path to the logits, direct and via later heads (share of the gap, 95% interval)",
        ]
        if measured
        else []
    )
    findings = "".join(f"<li>{esc(f)}</li>" for f in a.findings())
    return (
        table_html(cols, rows) + f"<ul class='verdicts'>{findings}</ul>"
        "<p class='muted'>K-composition is a weight product: how strongly, by the weights alone, an earlier "
        "head's output could feed the induction head's keys; it is not a causal number. The direct logit effect is what the head itself writes into the copied token's centred logit "
        + (
            "(logit units); the ablation Δloss is the change in later-repeat cross-entropy (nats) when the head's "
            f"output is {esc(str(a.scan.settings.get('ablation')))}-ablated. One is a logit, the other a loss: they "
            "sit side by side and are not compared. "
            if ablated
            else "(logit units). No ablation ran (--no-ablate), so no change in loss was measured. "
        )
        + (
            "The measured columns are path patching on the induction task (headscope circuit; docs/circuits.md): "
            "the share of the clean − corrupted logit-difference gap that one path carries, with its 95% interval. "
            if measured
            else "No path through later components was measured here (headscope logits --paths measures them). "
        )
        + "Self-rank over the texts' tokens (1 = the "
        "head's OV circuit promotes the token it attends to above every other).</p>"
    )


def logit_effects_html(a, k: int = 12) -> str:
    """The largest pushes on the actual next token, over every text and head."""
    f = a.top_effects(k)
    rows = [
        [
            int(r.text),
            int(r.position),
            (tokens_html([r.where]), r.where),
            r.head_label,
            round(float(r.effect), DECIMALS),
            round(float(r.model_logit), DECIMALS),
        ]
        for r in f.itertuples()
    ]
    cols = ["text", "position", "token → next token", "head", "direct effect (centred logit)", "model's centred logit"]
    return table_html(cols, rows, sortable=True)


def logit_ov_html(a) -> str:
    """Each chosen head's OV rows over the texts' tokens: does it copy, what it promotes and suppresses."""

    rows, panels = [], []
    for lh, ov in a.ov.items():
        i = a.ov_example(lh)
        rows.append(
            [
                ov.label,
                (f"{float(np.median(ov.self_rank)):,.0f}", float(np.median(ov.self_rank))),  # a rank: no decimals
                _n(float(np.mean(ov.self_rank == 1))),
                (tokens_html([visible_token(ov.token_labels[i])]), ov.token_labels[i]),
                (tokens_html(visible_token(t) for t in ov.top_labels[i][:5]), ""),
                (tokens_html(visible_token(t) for t in ov.bottom_labels[i][:5]), ""),
            ]
        )
        panels.append((ov.label, plotted(ov_row_bars, ov, i)))
    cols = [
        "head",
        "self-rank (median)",
        SELF_RANK_1,
        "source token shown",
        "promotes",
        "suppresses",
    ]
    return table_html(cols, rows) + f"<p class='muted'>{esc(COPYING_VS_RANK)}</p>" + tabs_html("ovbars", panels)


#: The OV table's column: of the texts' tokens, the share its head ranks first in its own OV row.
SELF_RANK_1 = "share of the texts' tokens at self-rank 1"

#: Why a head's copying score and its share at self-rank 1 differ (L18H6: 0.823 and 0.022), said under the OV table
#: and in the legend, so the two numbers are not read as contradicting each other.
COPYING_VS_RANK = (
    f"The {declared('copying').label} score (the induction story's column) and the {SELF_RANK_1} are two different "
    "measurements of the head's OV circuit, so they can differ a lot for one head without contradicting each other. "
    "The copying score is one number for the whole circuit, from its eigenvalues: sum(eig) / sum(|eig|), 1 when "
    "every eigenvalue is positive. The share at self-rank 1 counts, over the source tokens of the OV table (the "
    "distinct tokens of the texts, and any --token asked for), how often a token's own logit is the largest of the "
    "whole vocabulary in its OV row; a token ranked 2nd or 600th counts as 0. The median self-rank says how far from "
    "first those tokens typically are."
)


def logit_sections(a) -> list[tuple[str, str, str]]:
    """The "Logit effect" part of the page from a :class:`~headscope.pipeline.logit_analysis.LogitAnalysis`."""

    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in a.notes)
    text_tabs = tabs_html(
        "dla",
        [
            (
                f"text {n}",
                f"<p class='muted'>{esc(t.sequence.text[:120])}"
                f"{'…' if len(t.sequence.text) > 120 else ''}</p>" + plotted(token_head_heatmap, t, a.heads),
            )
            for n, t in enumerate(a.texts, 1)
        ],
    )
    body = (
        "<h3>The induction story of the top induction heads</h3>"
        + logit_story_html(a)
        + "<h3>Direct effect on the copied token, every head</h3>"
        + plotted(scan_effect_heatmap, a.scan, "later", None, a.story_heads)
        + "<h3>Largest direct effects on the texts</h3>"
        + logit_effects_html(a)
        + "<p class='muted'>Each head's direct push on the centred logit of the token that actually comes next "
        "(red raises it), for the chosen heads: "
        + esc(", ".join(head_label(l, h) for l, h in a.heads))
        + ".</p>"
        + text_tabs
        + "<h3>OV circuits: what attending to a token makes the head write</h3>"
        + logit_ov_html(a)
        + notes
    )
    return [("logits", "Logit effect", body)]


def _signed(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else signed(v, nd)  # a DLA of -4e-4 printed "-0.000"


def print_logits(con, a) -> None:
    """The three terminal tables: largest direct effects, OV summary, induction stories; findings and legend."""
    print_effects(con, a)
    print_ov(con, a)
    print_stories(con, a)


def print_effects(con, a) -> None:
    """Notes, then the largest direct effects on the next token."""
    for note in a.notes:
        con.print(f"[yellow]note:[/] {note}", highlight=False)
    t = Table(title=f"Largest direct effects on the next token, {a.model['name']} (centred logit)")
    several = len(a.texts) > 1  # with one text, every row is text 1: the position alone tells rows apart
    for col in (("text",) if several else ()) + ("pos", "token → next", "head", "effect", "logit"):
        t.add_column(col, justify="left" if col in ("token → next", "head") else "right", overflow="fold")
    for r in a.top_effects(10).itertuples():
        cells = [str(r.position), r.where, r.head_label, f"{r.effect:+.3f}", f"{r.model_logit:+.2f}"]
        t.add_row(*([str(r.text)] if several else []) + cells)
    con.print(t)
    err = max((t.max_abs_error for t in a.texts), default=float("nan"))
    fe = max((float(np.abs(t.components["float_error"]).max()) for t in a.texts), default=float("nan"))
    con.print(
        "[dim]"
        + ("text: which text, numbered from 1; " if len(a.texts) > 1 else "")
        + "pos: the token's position in its text, from 0 (the position column of the CSV); "
        "effect: the head's direct push on the centred logit of the actual next token; logit: the model's "
        f"own centred logit of it (all components together miss it by at most {err:.1e}; the unexplained "
        f"residual, float_error, is at most {fe:.1e}).[/]",
        highlight=False,
    )


def print_ov(con, a) -> None:
    """The chosen heads and their OV rows: copying score, self-rank, what the source token promotes and suppresses."""
    con.print(
        "Chosen heads: "
        + "; ".join(f"{head_label(l, h)} ({a.reasons.get(head_label(l, h), '--head')})" for l, h in a.heads),
        highlight=False,
    )
    V = a.model["d_vocab"]
    t = Table(title=f"OV circuits of the chosen heads (self-rank of {V:,}: 1 = copies the token it attends to)")
    for col in ("head", "copying", "self-rank", "source", "promotes", "suppresses"):
        t.add_column(col, justify="right" if col in ("copying", "self-rank") else "left", overflow="fold")
    copying = a.scan.scores.get("copying")

    def show(labels: list[str]) -> str:
        return " ".join(visible_whitespace(x) for x in labels[:3])

    for lh in a.heads:
        ov = a.ov[lh]
        idx = list(range(len(a.asked))) or [a.ov_example(lh)]  # the asked tokens, else the best-copied one
        for n, i in enumerate(idx):
            rank = f"{int(ov.self_rank[i]):,}" + ("" if a.asked else f" (median {float(np.median(ov.self_rank)):,.0f})")
            cop = _signed(None if copying is None else float(copying[lh]), 2)
            t.add_row(
                ov.label if n == 0 else "",
                cop if n == 0 else "",
                rank,
                visible_whitespace(ov.token_labels[i]),
                show(ov.top_labels[i]),
                show(ov.bottom_labels[i]),
            )
    con.print(t)
    con.print(
        "[dim]source: "
        + ("the --token asked for" if a.asked else "of the texts' tokens, the one the head ranks best in its own row")
        + "; promotes/suppresses: the top and bottom of that token's OV row (x_t W_V W_O W_U, x_t the token read "
        + ("through block 0 (its effective embedding)" if _embedding(a) == "block0" else "as its bare embedding W_E")
        + "). Every token's row is in ov.csv.[/]",
        highlight=False,
    )


def print_stories(con, a) -> None:
    """Each top induction head's story in one row, the findings, and what the columns mean."""
    ablated = bool(a.scan.settings.get("ablation"))  # None with --no-ablate: no Δloss was measured
    t = Table(
        title="The induction story of the top induction heads, one run (K source: strongest K-composition "
        f"source, excess, {a.k_where}; prev: its previous-token score; DLA: direct logit effect on later / "
        "first-repeat targets, a centred logit"
        + (
            "; Δloss: change in later-repeat cross-entropy when ablated, nats, [95% interval over sequences]; "
            "a logit and a loss, not compared)"
            if ablated
            else ")"
        )
    )
    cols = ("head", "induction", "K source", "prev", "copying", "DLA", "DLA 1st") + (("Δloss",) if ablated else ())
    for col in cols:
        t.add_column(col, justify="left" if col in ("head", "K source") else "right", overflow="fold")
    for s in a.stories.stories:
        src = s.k_source
        source = f"{src['head']} ({src['k_composition']:+.3f})" if src else "- (layer 0)"
        prev = f"{src['previous_token']:.2f}" if src else "-"
        t.add_row(
            s.label,
            f"{s.induction:.3f}",
            source,
            prev,
            _signed(s.copying, 2),
            _signed(s.dla_later),
            _signed(s.dla_first),
            *([ablation_cell(s)] if ablated else []),
        )
    con.print(t)
    for s in a.stories.stories:
        if s.k_paths or s.logit_paths:
            con.print(
                f"{s.label} measured paths ({s.paths_about}; share of the clean - corrupted gap, 95% interval): "
                f"keys from {_paths_cell(s.k_paths, 'head')}; to the logits {_paths_cell(s.logit_paths, 'via')}",
                highlight=False,
                markup=False,
            )
    for f in a.findings():
        con.print(f"- {f}", highlight=False, markup=False)
    st = a.scan.settings
    con.print(
        f"[dim]Scan: {st['batch']} sequences of {st['seq_len']} random tokens x {st['repeats']}, "
        f"seed {st['seed']}; loss {a.scan.loss_first_repeat:.2f} nats first repeat, "
        f"{a.scan.loss_later_repeats:.2f} later; K-composition shown as excess over the random baseline "
        f"{a.composition.baseline:.4f}. DLA later/first: mean direct effect on later-/first-repeat targets; "
        + (
            f"Δloss: change in later-repeat loss (ablated − clean) when the head is {st['ablation']} ablated. "
            if ablated
            else "Δloss: not measured (--no-ablate). "
        )
        + "Definitions in logits.json and docs/logits.md.[/]",
        highlight=False,
    )


@register(LogitAnalysis)
class LogitAnalysisView(View):
    def sections(self, result) -> list[Section]:
        return [Section(*s) for s in logit_sections(result)]

    def legend(self, result) -> dict[str, str]:
        return logit_legend(result)

    def subtitle(self, result) -> str:
        return "logit effect of " + ", ".join(head_label(l, h) for l, h in result.heads)

    def title(self, result) -> str:
        return f"Logit analysis — {result.model.get('name')}"

    def notebook_html(self, result) -> str:
        """The report page's "Logit effect" section, inline."""
        from ..page import Report

        return Report(model=dict(result.model), results=[result])._repr_html_()

    def terminal(self, result, console) -> None:
        print_logits(console, result)


def _embedding(a) -> str:
    """How the analysis read the OV rows' source tokens (every chosen head's rows share one convention)."""
    return next((getattr(ov, "embedding", "embed") for ov in a.ov.values()), "embed")


def logit_legend(a) -> dict[str, str]:
    """Every number the logits page shows, headed by the registry's labels (not its internal keys), in page order:
    the story's columns (induction, K-composition, previous-token, copying, self-rank, the direct effects, Δloss,
    the measured paths), then direct logit attribution, the OV rows and the story as a whole."""
    label = {n: declared(n).label for n in ("induction", "previous_token", "copying", "direct_logit_first")}
    ablation = a.scan.settings.get("ablation")
    measured = any(st.k_paths or st.logit_paths for st in a.stories.stories)
    out = {
        label["induction"]: declared("induction").definition,
        "composition": QK_DEFINITIONS["composition"],
        label["previous_token"]: declared("previous_token").definition,
        label["copying"]: declared("copying").definition,
        f"OV self-rank (median); {SELF_RANK_1}": "In a head's OV row for a source token (OV circuit row, below), the rank of "
        "the token itself among the whole vocabulary (1 = the head promotes it above every other token). The "
        "source tokens are the distinct tokens of the texts (the first token left out) and any --token asked for. "
        "'self-rank (median)' is "
        f"the median over them; the {SELF_RANK_1} is the fraction of them at rank 1. {COPYING_VS_RANK}",
        declared("direct_logit_later").label: declared("direct_logit_later").definition,
        label["direct_logit_first"]: declared("direct_logit_first").definition,
    }
    if ablation:  # None with --no-ablate: no Δloss was measured, so none is defined
        out["ablation Δloss"] = ablation_definition(a.scan.settings.get("controls") or CONTROL_DRAWS)
    if measured:
        out["path effect"] = PATCHING_DEFINITIONS["path"]
    convention = next((ov.convention for ov in a.ov.values()), None) or ov_definition("block0")
    out |= {
        "direct logit attribution": DLA_DEFINITION,
        "OV circuit row": convention,
        "induction story": story_definition(ablation, measured),
    }
    return out
