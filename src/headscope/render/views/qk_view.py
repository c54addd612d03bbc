"""The view of a QK analysis: the chosen heads, live QK scores, decompositions, positional and token circuits, composition.

Draws a :class:`~headscope.results.qk_results.QKAnalysis` (page sections, legend, notebook view,
terminal table). On a page without an induction scan its attention patterns take the
"attention" section; with one, the scan's attention views come first and keep that anchor.
"""

from __future__ import annotations

import re

import numpy as np
from rich.markup import escape
from rich.table import Table

from ...head_labels import as_head, head_label
from ...results.qk_results import (
    COMPOSITION_CAVEAT,
    QK_DEFINITIONS,
    SCORE_POSITIONS,
    STRIPE_NAMES,
    WEIGHT_PRODUCT,
    QKAnalysis,
)
from ...scores import score
from ..html import DECIMALS, esc, heads_view_html, table_html, tabs_html, tokens_html, visible_token
from ..lookup import register
from ..qk_figures import plot_composition, plot_decomposition, plot_k_sources, plot_positional, plot_token_qk
from ..view_base import Section, View, plotted
from .attention_view import VIEW_HELP


def _lh(label: str) -> str:
    """Any head spelling (``"18.6"``, ``"L18H6"``) as the display label ``"L18H6"``."""
    return head_label(*as_head(label))


def qk_heads_html(a) -> str:
    """The chosen heads: why each was chosen, its scan scores, its strongest K-composition sources; the findings."""
    sources = a.k_sources(3)
    rows = []
    for l, h in a.heads:
        ind, prev = a.head_score("induction", l, h), a.head_score("previous_token", l, h)
        src = ", ".join(f"{_lh(s['head'])} ({s['excess']:+.3f})" for s in sources[head_label(l, h)]) or "– (layer 0)"
        rows.append(
            [
                head_label(l, h),
                a.reasons.get(head_label(l, h), "chosen with --head"),
                float("nan") if ind is None else round(ind, DECIMALS),
                float("nan") if prev is None else round(prev, DECIMALS),
                src,
            ]
        )
    findings = "".join(f"<li>{esc(f)}</li>" for f in a.findings())
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in a.notes)
    cols = [
        "head",
        "chosen for",
        "induction",
        "previous-token",
        f"strongest K-composition sources (excess, {a.k_where}; {WEIGHT_PRODUCT})",
    ]
    shows = f"<h3>What the QK analysis shows</h3><ul class='verdicts'>{findings}</ul>" if findings else ""
    said = (
        f"<p class='muted'>induction, previous-token: the heads' scores from {esc(a.scan_words)} (defined in the "
        f"legend). {esc(COMPOSITION_CAVEAT)}</p>"
    )
    return table_html(cols, rows) + said + shows + notes


def qk_scores_html(live) -> str:
    """Live pre-softmax QK scores of the chosen heads, one interactive view per text (red +, blue −)."""
    names = [head_label(l, h) for l, h in live.heads]
    views = []
    for s, seq in enumerate(live.sequences):
        sc = np.asarray(live.scores[s], dtype=np.float64)
        inner = sc[:, 1:, 1:] if len(seq) > 2 else sc  # the BOS column would set the scale alone
        lim = float(np.nanmax(np.abs(inner))) or 1.0
        views.append(
            heads_view_html(
                f"cv-qk-{s}",
                f"QK scores on text {s + 1}",
                [visible_token(t) for t in seq.labels],
                sc,
                names,
                text=seq.text,
                notes=seq.notes,
                decimals=2,
                maxValue=lim,
                minValue=-lim,
                positiveColor="red",
                negativeColor="blue",
            )
        )
    return tabs_html("qk-views", [(f"text {s + 1}", v) for s, v in enumerate(views)])


def qk_patterns_html(live) -> str:
    """The chosen heads' attention patterns on each text (for a page without an induction scan)."""
    names = [head_label(l, h) for l, h in live.heads]
    views = [
        heads_view_html(
            f"cv-{s}",
            f"Attention of the chosen heads on text {s + 1}",
            [visible_token(t) for t in seq.labels],
            live.patterns[s],
            names,
            text=seq.text,
            notes=seq.notes,
        )
        for s, seq in enumerate(live.sequences)
    ]
    return tabs_html("views", [(f"text {s + 1}", v) for s, v in enumerate(views)])


def decomposition_html(d) -> str:
    """One head's score split over residual components: the figure, then the largest terms."""

    f = d.to_frame()
    rows = [
        [r.side, r.component, round(float(r.contribution), DECIMALS), round(float(r.vs_mean_key), DECIMALS)]
        for side in ("key", "query")
        for r in f[f.side == side].sort_values("rank").head(5).itertuples()
    ]
    pairs = [[a, b, round(v, DECIMALS)] for a, b, v in d.top_pairs(5)]
    facts = (
        f"score {d.score:.3f} (the model's own {d.model_score:.3f}, largest difference {d.max_abs_error:.1e}), "
        f"attention {d.attention:.3f}; {d.how}"
    )
    return (
        f"<p class='muted'>{esc(facts)}</p>{plotted(plot_decomposition, d)}<div class='cards'>"
        "<div><b>Largest contributions</b>"
        + table_html(["side", "component", "score units", "vs mean key"], rows)
        + "</div>"
        "<div><b>Largest query × key component pairs</b>"
        + table_html(["query component", "key component", "score units"], pairs)
        + "</div></div>"
    )


def _decomposition_tab(d) -> str:
    """The tab's name: the head, and the stripe its decomposition is on (or the query it explains)."""
    if d.stripe in STRIPE_NAMES:
        return f"{d.label} ({STRIPE_NAMES[d.stripe].removeprefix('the ')})"
    return f"{d.label} (query {d.pairs[0][0]})" if len(d.pairs) == 1 else d.label


def positional_html(p) -> str:

    rows = []
    for n, (l, h) in enumerate(p.heads):
        curve = p.offset_curve[n]
        peak = int(p.offsets[np.nanargmax(curve)])
        rows.append(
            [
                head_label(l, h),
                peak,
                round(float(np.nanmax(curve)), DECIMALS),
                round(float(curve[1]), DECIMALS) if len(curve) > 1 else float("nan"),
            ]
        )
    return (
        plotted(plot_positional, p)
        + table_html(["head", "peak offset", "peak score", "score at offset 1"], rows)
        + f"<p class='muted'>{esc(p.method)}</p>"
    )


def token_qk_html(t) -> str:

    rows = [
        [
            round(float(d["singular_value"]), DECIMALS),
            *((tokens_html(d[k]), "") for k in ("queries_plus", "keys_plus", "queries_minus", "keys_minus")),
        ]
        for d in t.directions
    ]
    pairs = [[(tokens_html([q]), q), (tokens_html([k]), k), round(v, DECIMALS)] for q, k, v in t.top_pairs(6)]
    return (
        plotted(plot_token_qk, t)
        + f"<div class='cards'><div><b>Highest-scoring query/key token pairs ({esc(t.where)})</b>"
        + table_html(["query token", "key token", "score"], pairs)
        + "</div>"
        f"<div><b>Top singular directions of the full-vocabulary circuit ({esc(t.where)})</b>"
        + table_html(["σ", "queries +", "keys +", "queries −", "keys −"], rows)
        + f"</div></div><p class='muted'>{esc(t.method)}</p>"
    )


def composition_html(
    c, heads: list[tuple[int, int]], prev_token: np.ndarray | None = None, by_offset=None, prev_from: str | None = None
) -> str:
    """Each chosen head's strongest K-composition sources, every score as a figure, the sources as a table.

    ``by_offset`` (rotary models, an :class:`~headscope.qk.results.OffsetComposition`): the chosen heads'
    sources are ranked over its offsets; the whole-model heatmap stays at ``c.offset``.
    """
    src_of = by_offset if by_offset is not None else c

    later = [lh for lh in heads if lh[0] > 0]
    rows = [
        [
            head_label(l, h),
            kind,
            head_label(sl, sh),
            round(v, DECIMALS),
            *([round(float(prev_token[sl, sh]), DECIMALS)] if prev_token is not None else []),
        ]
        for l, h in later
        for kind in src_of.scores
        for sl, sh, v in src_of.top_sources(l, h, kind, 3)
    ]
    cols = ["later head", "kind", "earlier head", f"excess ({src_of.where})"] + (
        ["earlier head's previous-token score"] if prev_token is not None else []
    )
    base = f"random baseline {c.baseline:.4f} ± {c.baseline_std:.4f} (d_model {c.d_model}, d_head {c.d_head})"
    sources = plotted(plot_k_sources, src_of, later, prev_token, 8, prev_from) if later else ""
    where = (
        f"the chosen heads' sources: Q/K-composition at each rotary offset (the later head's form between a query "
        f"at i and a key at i - d, W_Q M_d W_K^T), ranked by the {src_of.where}; the whole-model heatmap: {c.where}"
        if by_offset is not None
        else "no rotary positions: the scores are position-free"
    )
    return (
        f"<p class='muted'>{esc(COMPOSITION_CAVEAT)} {esc(base)}; {esc(c.note)}; {esc(where)}"
        + (f"; previous-token scores from {esc(prev_from)}" if prev_token is not None and prev_from else "")
        + f"</p>{sources}{plotted(plot_composition, c)}"
        "<details><summary>The strongest sources of each chosen head, every kind (table)</summary>"
        + table_html(cols, rows, sortable=True)
        + "</details>"
    )


def qk_sections(a) -> list[tuple[str, str, str]]:
    """The QK part of the page from a :class:`~headscope.qk.QKAnalysis`."""
    heads = a.heads
    first = a.live.sequences[0]
    decs = [d for l, h in heads if (d := a.decomposition(l, h)) is not None]  # text 1, every head shown
    return [
        ("qk-heads", "QK analysis: the chosen heads", qk_heads_html(a)),
        (
            "qk-live",
            "QK scores on text (interactive)",
            "<p class='muted'>Pre-softmax scores q·k/√d_head of the chosen heads, red positive, blue negative; one "
            "colour scale per text, shared by every head: ± the largest |score| of any chosen head on that text, the "
            "first token's row and column left out (a head whose scores are small looks pale). The softmax of each "
            "row is the attention pattern.</p>" + qk_scores_html(a.live),
        ),
        (
            "qk-decomposition",
            "Where they attend, what sets the score: QK decompositions",
            f"<p class='muted'>On {esc(first.title or 'text 1')} ({esc(first.text[:80])}"
            f"{'…' if len(first.text) > 80 else ''}), each head on "
            "the stripe it attends most on that text (the induction stripe or the previous-token stripe; its mean "
            "attention on both is in each tab); every text's decompositions are in qk.json (headscope qk).</p>"
            + tabs_html("decomp", [(_decomposition_tab(d), decomposition_html(d)) for d in decs]),
        ),
        ("qk-positional", "Positional QK circuit", positional_html(a.positional)),
        (
            "qk-token",
            "Token QK circuit",
            tabs_html(
                "tokqk", [(f"{head_label(t.layer, t.head)} ({t.where})", token_qk_html(t)) for t in a.token_circuits]
            ),
        ),
        (
            "composition",
            "Composition scores",
            composition_html(
                a.composition,
                heads,
                None if a.scan_scores is None else a.scan_scores["previous_token"],
                a.composition_by_offset,
                a.scan_words,
            ),
        ),
    ]


def _print_summary(con, a) -> None:
    t = Table(title=f"QK analysis of {a.model['name']}: chosen heads")
    first = a.live.sequences[0].title or "text 1"  # a --file's name, not a number the user never gave it
    for col in (
        "head",
        "picked as",
        "induction",
        "prev-token",
        f"key side: raises most ({escape(first)})",
        "token QK at",
        f"top K-comp sources ({a.k_where})",
    ):
        t.add_column(col, justify="right" if col in ("induction", "prev-token") else "left")
    sources = a.k_sources(3)
    for n, (l, h) in enumerate(a.heads):
        dec = a.decomposition(l, h)  # text 1; None: it did not reproduce the model's scores (a note says)
        top = dec.raises_most("key") if dec is not None else None
        ind, prev = a.head_score("induction", l, h), a.head_score("previous_token", l, h)
        src = " ".join(f"{s['head']}:{s['excess']:+.3f}" for s in sources[head_label(l, h)]) or "- (layer 0)"
        why = re.sub(r"#(\d+) (\S+) score [-\d.]+", r"\2 #\1", a.reasons.get(head_label(l, h), "--head"))
        t.add_row(
            head_label(l, h),
            why,
            f"{ind:.2f}" if ind is not None else "-",
            f"{prev:.2f}" if prev is not None else "-",
            "- (not shown)" if dec is None else "none raises it" if top is None else f"{top[0]} {top[1]:+.3g}",
            a.token_circuits[n].where,
            src,
        )
    con.print(t)
    con.print(
        "[dim]key side, raises most: the key-side component with the largest positive 'vs mean key' value, the "
        "one that most raises the score above the query's other keys ('none raises it' where no component does), "
        f"on {escape(first)} at the stripe the head attends most there (induction or previous-token; or the chosen query); "
        "token QK at: the offset (key that many tokens before "
        "the query) the token circuit is taken at, the one the head attends most on these texts (rotary models); "
        f"K-comp sources: score minus the random baseline, {a.k_where}, {WEIGHT_PRODUCT} "
        "(headscope circuit measures paths); induction, prev-token: the heads' scores from "
        f"{a.scan_words}.[/]",
        highlight=False,
    )
    for note in a.notes:
        con.print(f"[yellow]note:[/] {note}", highlight=False)
    for f in a.findings():
        con.print(f"- {f}", highlight=False, markup=False)
    con.print(
        f"[dim]Composition baseline (random matrices, same shapes): {a.composition.baseline:.4f}; "
        "K-comp sources are shown as score minus baseline.[/]",
        highlight=False,
    )
    con.print(
        f"[dim]Legend: score = q.k/sqrt(d_head) before softmax ({SCORE_POSITIONS[a.live.rotary]}), "
        "masked cells = causal mask; "
        "decomposition: contributions of residual components with the norm scale frozen, summing to the score; "
        "'vs mean key' subtracts the component's mean over the keys the query sees. Definitions in qk.json "
        "and docs/qk.md.[/]",
        highlight=False,
    )


@register(QKAnalysis)
class QKAnalysisView(View):
    def sections(self, result) -> list[Section]:
        patterns = Section(
            "attention", "Attention of the chosen heads (interactive)", VIEW_HELP + qk_patterns_html(result.live)
        )
        return [patterns, *(Section(*s) for s in qk_sections(result))]

    def legend(self, result) -> dict[str, str]:
        """The QK quantities, then every score shown as a column, from the registry's definitions."""
        shown = {
            name: score(name).definition
            + ("" if "Source:" in score(name).definition else f" Source: {score(name).source}.")
            + f" Here from {result.scan_words}."
            for name in ("induction", "previous_token")
        }
        return dict(QK_DEFINITIONS) | {f"{score(n).label} score": d for n, d in shown.items()}

    def subtitle(self, result) -> str:
        return "QK analysis of " + ", ".join(head_label(l, h) for l, h in result.heads)

    def title(self, result) -> str:
        return f"QK analysis — {result.model.get('name')}"

    def notebook_html(self, result) -> str:
        """The report page's QK sections (interactive views included), inline."""
        from ..page import Report

        return Report(model=dict(result.model), results=[result])._repr_html_()

    def terminal(self, result, console) -> None:
        _print_summary(console, result)
