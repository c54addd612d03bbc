"""One self-contained HTML page of everything headscope found about a model.

The page is a single file with no outside reference: its CSS inline, figures as PNG data
URIs, and circuitsvis's JavaScript bundle inlined **once**, followed by one small JSON
island per interactive view and one script (``page.js``) that renders them all. Opening it
makes no network request.

Safety. Every outside string that reaches the page (token strings, the user's texts, file
and model names) goes through :func:`~headscope.render.html.esc` or, inside JSON islands,
:func:`~headscope.render.html.script_json` (``<``, ``>``, ``&`` written as ``\\u003c`` etc.,
so no ``</script>`` can end an island early; circuitsvis then shows tokens as text). A
Content-Security-Policy with a fresh nonce per page lets only the page's own scripts run and
forbids every fetch: a second line of defence, not the first.

Size. Numbers are rounded (3 decimals on the page, full precision in ``--json``), figures are
palette PNGs at 90 dpi, and interactive views keep at most 64 tokens of a sequence (the page
says where it cut). The default SmolLM2 page is measured in docs/report.md.

The same pieces make the notebook views: :func:`induction_html` is what
``InductionResult._repr_html_`` shows, and a :class:`Report` renders inline in Jupyter.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..head_labels import as_head, head_label
from ..logits.story import logit_definitions
from ..qk.results import QK_DEFINITIONS
from ..scan.attention_sample import AttentionSample
from ..scan.result import InductionResult
from ..scores import ABLATION_DEFINITION, LOSS_DEFINITION, SCORES, roles_legend
from ..scores import score as declared
from .html import (
    DECIMALS,
    MAX_VIEW_TOKENS,
    attention_view_html,
    esc,
    figure_html,
    fmt,
    heads_view_html,
    kv_html,
    legend_html,
    page_asset,
    scripts_html,
    table_html,
    tabs_html,
    tokens_html,
    visible_token,
)


def _label(name: str) -> str:
    """A score's name in prose (the registry's label); other names as they are."""
    try:
        return declared(name).label
    except KeyError:
        return name


# --- induction pieces (from an InductionResult) ---------------------------------------------
def settings_html(res: InductionResult) -> str:
    s, m = res.settings, res.model
    model = {"model": m.get("name"), "layers × heads": f"{m.get('n_layers')} × {m.get('n_heads')}"}
    if m.get("about"):
        model["what it is"] = m["about"]
    if m.get("n_kv_heads") and m.get("n_kv_heads") != m.get("n_heads"):
        model["key/value heads"] = f"{m['n_kv_heads']} per layer (grouped-query attention)"
    model["vocabulary"] = m.get("d_vocab")
    run = {
        "sequences": f"{s['batch']} × ([BOS] + r × {s['repeats']})"
        if s.get("bos")
        else f"{s['batch']} × (r × {s['repeats']}), no BOS token",
        "r": f"{s['seq_len']} random ordinary tokens, seed {s['seed']}",
        "causal check": f"{s['ablation']} ablation of hook_z" if res.ablation else "skipped",
        "role thresholds": ", ".join(f"{_label(k)} ≥ {v}" for k, v in res.thresholds.items()),
        "device": s.get("device", ""),
    }
    if s.get("attention"):
        run["attention"] = {
            "fused": "fused kernel (scores from q, k and the row logsumexp; no n × n pattern)",
            "eager": "eager (full patterns)",
        }.get(s["attention"], s["attention"])
    return (
        f'<div class="cards"><div class="card"><h3>Model</h3>{kv_html(model)}</div>'
        f'<div class="card"><h3>Scan</h3>{kv_html(run)}</div></div>'
    )


def roles_html(roles: list[str]) -> str:
    return "".join(f'<span class="role {esc(r)}">{esc(_label(r))}</span>' for r in roles) or "–"


def top_heads_html(res: InductionResult, k: int | None = None) -> str:
    """The top induction heads with every score, their roles and the causal check."""
    k = k or res.settings.get("top_k", 5)
    roles, sc, order = res.roles(), res.scores, res.score_order()
    rows = []
    for l, h, _ in res.top_heads("induction", k):
        rows.append(
            [
                head_label(l, h),
                *(round(float(sc[n][l, h]), DECIMALS) for n in order),
                (roles_html(roles.get((l, h), [])), "+".join(roles.get((l, h), []))),
                *ablation_cells(res.ablation_of(l, h)),
            ]
        )
    cols = ["head", *(_label(n) for n in order), "roles", "ablation Δloss [95%]", "Δ first repeat"]
    return table_html(cols, rows, sortable=True)


def ablation_cells(e: dict | None) -> list:
    """The page's causal-check cells of one head: Δloss with its interval (coloured by verdict), Δ first repeat."""
    if e is None:
        return [("–", -1e9), ("–", -1e9)]
    lo, hi = e["interval"]
    cls = {"raises": "pos", "lowers": "neg"}.get(e["verdict"], "")
    shown = f'<span class="{cls}" title="{esc(e["verdict"])}">{fmt(e["loss_increase"], signed=True)}</span>'
    shown = f'<span style="white-space:nowrap">{shown} [{fmt(lo, signed=True)}, {fmt(hi, signed=True)}]</span>'
    first = e["first_repeat_increase"]
    return [(shown, round(e["loss_increase"], DECIMALS)), (fmt(first, signed=True), round(first, DECIMALS))]


def other_roles_html(res: InductionResult, k: int = 3) -> str:
    parts = []
    for s in SCORES:
        if s.threshold is None or s.name == "induction" or s.name not in res.scores:
            continue
        best = ", ".join(f"{head_label(l, h)} {v:.2f}" for l, h, v in res.top_heads(s.name, k))
        parts.append(f"<li><b>{esc(s.label)}</b>: {esc(best)}</li>")
    return f'<ul class="verdicts">{"".join(parts)}</ul>'


def all_heads_html(res: InductionResult, table_id: str = "all-heads") -> str:
    roles = res.roles()
    L, H = res.scores["induction"].shape
    order = res.score_order()
    rows = [
        [
            head_label(l, h),
            *(round(float(res.scores[n][l, h]), DECIMALS) for n in order),
            "+".join(_label(r) for r in roles.get((l, h), [])),
        ]
        for l in range(L)
        for h in range(H)
    ]
    return (
        f"<details><summary>All {L * H} heads (sortable, filterable)</summary>"
        f'<input class="filter" data-filter="{table_id}" placeholder="filter, e.g. L17 or induction">'
        + table_html(["head", *(_label(n) for n in order), "roles"], rows, table_id, sortable=True)
        + "</details>"
    )


def role_counts_html(res: InductionResult) -> str:
    """Per role of the registry: its threshold, how many heads take it (0 included) and the best head."""
    rows = []
    for s in SCORES:
        if s.threshold is None or s.name not in res.scores or s.name not in res.thresholds:
            continue
        t = res.thresholds[s.name]
        ((l, h, v),) = res.top_heads(s.name, 1)
        rows.append([s.label, t, int((res.scores[s.name] >= t).sum()), f"{head_label(l, h)} ({fmt(v)})"])
    return table_html(["role", "threshold", "heads", "best head (score)"], rows, sortable=True)


def role_table_html(res: InductionResult, table_id: str = "roles-table") -> str:
    """Every head with at least one role: its roles and every role score (held ones in bold), sortable."""
    roles = res.roles()
    names = [s.name for s in SCORES if s.threshold is not None and s.name in res.scores and s.name in res.thresholds]
    rows = []
    for (l, h), held in sorted(roles.items()):
        cells = []
        for n in names:
            v = round(float(res.scores[n][l, h]), DECIMALS)
            cells.append((f"<b>{esc(fmt(v))}</b>" if n in held else esc(fmt(v)), v))
        rows.append([(esc(head_label(l, h)), l * 10_000 + h), (roles_html(held), "+".join(held)), *cells])
    if not rows:
        return "<p>No head reaches any role's threshold.</p>"
    return f'<input class="filter" data-filter="{table_id}" placeholder="filter, e.g. L17 or sink">' + table_html(
        ["head", "roles", *(_label(n) for n in names)], rows, table_id, sortable=True
    )


def roles_section_html(res: InductionResult) -> str:
    """The "Roles of every head" section: counts per role, the table, and when a head takes a role."""
    n = len(res.roles())
    L, H = res.scores["induction"].shape
    succ = res.settings.get("weight_scores", {}).get("successor", {})
    sets = ""
    if succ:
        skipped = "; ".join(f"{k}: {v}" for k, v in succ.get("skipped", {}).items())
        sets = (
            f"<p>Successor score's ordinal sets: {esc(', '.join(succ.get('sets', [])) or 'none')}"
            + (f" (skipped: {esc(skipped)})" if skipped else "")
            + ".</p>"
        )
    notes = res.role_notes()
    opposite = (
        "<p><b>Heads with two opposite roles</b>, and why:</p><ul>"
        + "".join(f"<li>{esc(head_label(*lh))}: {esc(v)}</li>" for lh, v in sorted(notes.items()))
        + "</ul>"
        if notes
        else ""
    )
    return (
        f"<p>{n} of {L * H} heads take at least one role. {esc(roles_legend(res.thresholds))} Bold: the score "
        "behind a role the head holds.</p>" + role_counts_html(res) + sets + opposite + role_table_html(res)
    )


def verdicts_html(res: InductionResult) -> str:
    return '<ul class="verdicts">' + "".join(f"<li>{esc(v)}</li>" for v in res.verdicts()) + "</ul>"


def induction_definitions(res: InductionResult | None = None) -> dict[str, str]:
    names = res.score_order() if res is not None else [s.name for s in SCORES]
    defs = {declared(n).label: declared(n).definition for n in names}
    defs["loss by position"] = LOSS_DEFINITION
    defs["ablation Δloss"] = ABLATION_DEFINITION
    if res is not None:
        defs["roles"] = roles_legend(res.thresholds)
    return defs


def induction_html(res: InductionResult) -> str:
    """The notebook view of an induction scan: settings, top heads, causal check, heatmap, legend."""
    from .induction_figures import score_heatmap

    parts = [
        f"<h3>Induction scan — {esc(res.model.get('name'))}</h3>",
        settings_html(res),
        top_heads_html(res),
        other_roles_html(res),
        f"<p>Loss: first repeat {res.loss_first_repeat:.2f} nats, later repeats {res.loss_later_repeats:.2f} nats.</p>",
    ]
    if res.ablation:
        parts.append(verdicts_html(res))
    parts.append(figure_html(score_heatmap(res, "induction")))
    parts.append(f"<details><summary>Definitions</summary>{legend_html(induction_definitions(res))}</details>")
    return f'<div class="hs"><style>{page_asset("page.css")}</style>{"".join(parts)}</div>'


def induction_sections(res: InductionResult) -> list[tuple[str, str, str]]:
    """The induction part of the page: heads and roles, heatmaps, loss, the causal check."""
    from .induction_figures import ablation_chart, loss_by_position, score_heatmap

    out = [
        (
            "top",
            "Top heads and their roles",
            settings_html(res)
            + "<h3>Top induction heads</h3>"
            + top_heads_html(res)
            + "<h3>Best heads for the other roles</h3>"
            + other_roles_html(res)
            + all_heads_html(res),
        ),
        ("roles", "Roles of every head", roles_section_html(res)),
        (
            "heatmaps",
            "Score heatmaps",
            tabs_html("heatmap", [(declared(s).title, figure_html(score_heatmap(res, s))) for s in res.score_order()]),
        ),
        (
            "loss",
            "Loss by position",
            f"<p>First repeat {res.loss_first_repeat:.2f} nats, later repeats {res.loss_later_repeats:.2f} nats: "
            "a drop means the model predicts repeated tokens from context, the behaviour induction heads "
            "implement.</p>" + figure_html(loss_by_position(res)),
        ),
    ]
    if res.ablation:
        out.append(("ablation", "Causal check", verdicts_html(res) + figure_html(ablation_chart(res))))
    return out


# --- heads pieces (from a headscope.pipeline.roles.HeadsAnalysis; duck-typed: render never imports pipeline) --
def icl_html(icl) -> str:
    """The ICL score and each ablated head's delta with its standard error (an ``ICLResult``)."""
    head = (
        f"<p>In-context learning score (Olsson et al. 2022): <b>{esc(fmt(icl.icl_score, signed=True))}</b> nats "
        f"(loss at token {icl.late} {esc(fmt(icl.loss_late))} minus token {icl.early} {esc(fmt(icl.loss_early))}; "
        f"standard error {esc(fmt(icl.icl_stderr))}, 95% interval "
        f"[{esc(fmt(icl.icl_ci95[0], signed=True))}, {esc(fmt(icl.icl_ci95[1], signed=True))}]) on {esc(icl.source)}.</p>"
    )
    if not icl.ablations:
        return head
    rows = [
        [
            head_label(e["layer"], e["head"]),
            round(e["delta"], DECIMALS),
            round(e["delta_stderr"], DECIMALS),
            "[{:+.3f}, {:+.3f}]".format(*e.get("delta_ci95", (float("nan"), float("nan")))),
            round(e["icl_score"], DECIMALS),
        ]
        for e in icl.ablations
    ]
    return head + (
        f"<p>{esc(icl.ablation_kind)} ablation of each top induction head's hook_z; Δ = ablated − clean, "
        "positive when the head helps the model learn from its context.</p>"
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


# --- QK pieces (from a headscope.qk.QKAnalysis) -------------------------------------------------
def _plot(fn: Callable, *args) -> str:
    """``fn(*args)`` as a figure, or a note when the QK figures cannot be drawn here."""
    try:
        return figure_html(fn(*args))
    except ImportError as exc:
        return f'<p class="note">figure unavailable: {esc(exc)}</p>'


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
        f"strongest K-composition sources (excess, {a.k_where})",
    ]
    shows = f"<h3>What the QK analysis shows</h3><ul class='verdicts'>{findings}</ul>" if findings else ""
    return table_html(cols, rows) + shows + notes


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
    from .qk_figures import plot_decomposition

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
        f"<p class='muted'>{esc(facts)}</p>{_plot(plot_decomposition, d)}<div class='cards'>"
        "<div><b>Largest contributions</b>"
        + table_html(["side", "component", "score units", "vs mean key"], rows)
        + "</div>"
        "<div><b>Largest query × key component pairs</b>"
        + table_html(["query component", "key component", "score units"], pairs)
        + "</div></div>"
    )


def positional_html(p) -> str:
    from .qk_figures import plot_positional

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
        _plot(plot_positional, p)
        + table_html(["head", "peak offset", "peak score", "score at offset 1"], rows)
        + f"<p class='muted'>{esc(p.method)}</p>"
    )


def token_qk_html(t) -> str:
    from .qk_figures import plot_token_qk

    rows = [
        [
            round(float(d["singular_value"]), DECIMALS),
            *((tokens_html(d[k]), "") for k in ("queries_plus", "keys_plus", "queries_minus", "keys_minus")),
        ]
        for d in t.directions
    ]
    pairs = [[(tokens_html([q]), q), (tokens_html([k]), k), round(v, DECIMALS)] for q, k, v in t.top_pairs(6)]
    return (
        _plot(plot_token_qk, t)
        + f"<div class='cards'><div><b>Highest-scoring query/key token pairs ({esc(t.where)})</b>"
        + table_html(["query token", "key token", "score"], pairs)
        + "</div>"
        f"<div><b>Top singular directions of the full-vocabulary circuit ({esc(t.where)})</b>"
        + table_html(["σ", "queries +", "keys +", "queries −", "keys −"], rows)
        + f"</div></div><p class='muted'>{esc(t.method)}</p>"
    )


def composition_html(c, heads: list[tuple[int, int]], prev_token: np.ndarray | None = None, by_offset=None) -> str:
    """Each chosen head's strongest K-composition sources, every score as a figure, the sources as a table.

    ``by_offset`` (rotary models, an :class:`~headscope.qk.results.OffsetComposition`): the chosen heads'
    sources are ranked over its offsets; the whole-model heatmap stays at ``c.offset``.
    """
    src_of = by_offset if by_offset is not None else c
    from .qk_figures import plot_composition, plot_k_sources

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
    sources = _plot(plot_k_sources, src_of, later, prev_token) if later else ""
    where = (
        f"the chosen heads' sources: Q/K-composition at each rotary offset (the later head's form between a query "
        f"at i and a key at i - d, W_Q M_d W_K^T), ranked by the {src_of.where}; the whole-model heatmap: {c.where}"
        if by_offset is not None
        else "no rotary positions: the scores are position-free"
    )
    return (
        f"<p class='muted'>{esc(base)}; {esc(c.note)}; {esc(where)}</p>{sources}{_plot(plot_composition, c)}"
        "<details><summary>The strongest sources of each chosen head, every kind (table)</summary>"
        + table_html(cols, rows, sortable=True)
        + "</details>"
    )


def qk_sections(a) -> list[tuple[str, str, str]]:
    """The QK part of the page from a :class:`~headscope.qk.QKAnalysis`."""
    heads = a.heads
    n = len(heads)
    first = a.live.sequences[0]
    decs = [a.decompositions[k] for k in range(min(n, len(a.decompositions)))]  # sequence 0, every head
    return [
        ("qk-heads", "QK analysis: the chosen heads", qk_heads_html(a)),
        (
            "qk-live",
            "QK scores on text (interactive)",
            "<p class='muted'>Pre-softmax scores q·k/√d_head of the chosen heads, red positive, blue negative, scaled to "
            "the largest non-BOS score of each text; the softmax of each row is the attention pattern.</p>"
            + qk_scores_html(a.live),
        ),
        (
            "qk-decomposition",
            "Why they attend there: QK decompositions",
            f"<p class='muted'>On text 1 ({esc(first.text[:80])}{'…' if len(first.text) > 80 else ''}); every text's "
            "decompositions are in qk.json (headscope qk).</p>"
            + tabs_html("decomp", [(head_label(d.layer, d.head), decomposition_html(d)) for d in decs]),
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
            ),
        ),
    ]


# --- the phase change of a training run (from a headscope.toy.PhaseAnalysis) --------------------
def phase_sections(ph) -> list[tuple[str, str, str]]:
    """The curves against step with the detected window, the aims, and the before/after heatmaps."""
    from .phase_figures import phase_figure, phase_heatmaps

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
    from .phase_figures import offset_steps, offsets_figure

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


# --- logit pieces (from a headscope.pipeline.logit_analysis.LogitAnalysis) -------------------------------
def _n(v: float | None) -> float:
    """A number for :func:`table_html`: None (not measured) shows as a dash."""
    return float("nan") if v is None else round(float(v), DECIMALS)


def logit_story_html(a) -> str:
    """The induction story panel: each top induction head's numbers, each with its unit, then the same in words."""
    d_vocab = a.model.get("d_vocab")
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
                _n(st.ablation_delta_loss),
            ]
        )
    cols = [
        "head",
        "induction",
        f"strongest K-composition sources (excess, {a.k_where}; their previous-token score)",
        "copying",
        "OV self-rank (median)",
        "direct logit effect, first repeat (centred logit)",
        "direct logit effect, later repeats (centred logit)",
        "ablation Δloss (cross-entropy, nats)",
    ]
    findings = "".join(f"<li>{esc(f)}</li>" for f in a.findings())
    return (
        table_html(cols, rows) + f"<ul class='verdicts'>{findings}</ul>"
        "<p class='muted'>K-composition says which earlier heads the induction head's keys read (from the "
        "weights). The direct logit effect is what the head itself writes into the copied token's centred logit "
        "(logit units); the ablation Δloss is the change in later-repeat cross-entropy (nats) when the head's "
        "output is replaced by its mean. One is a logit, the other a loss: they sit side by side and are not "
        "compared, and no path through later components was measured. Self-rank over the texts' tokens (1 = the "
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
    cols = ["text", "position", "token → next token", "head", "direct effect", "model's centred logit"]
    return table_html(cols, rows, sortable=True)


def logit_ov_html(a) -> str:
    """Each chosen head's OV rows over the texts' tokens: does it copy, what it promotes and suppresses."""
    from .logit_figures import ov_row_bars

    rows, panels = [], []
    for lh, ov in a.ov.items():
        i = a.ov_example(lh)
        rows.append(
            [
                ov.label,
                _n(float(np.median(ov.self_rank))),
                _n(float(np.mean(ov.self_rank == 1))),
                (tokens_html([visible_token(ov.token_labels[i])]), ov.token_labels[i]),
                (tokens_html(visible_token(t) for t in ov.top_labels[i][:5]), ""),
                (tokens_html(visible_token(t) for t in ov.bottom_labels[i][:5]), ""),
            ]
        )
        panels.append((ov.label, _plot(ov_row_bars, ov, i)))
    cols = ["head", "self-rank (median)", "copies (rank 1)", "source token shown", "promotes", "suppresses"]
    return table_html(cols, rows) + tabs_html("ovbars", panels)


def logit_sections(a) -> list[tuple[str, str, str]]:
    """The "Logit effect" part of the page from a :class:`~headscope.pipeline.logit_analysis.LogitAnalysis`."""
    from .logit_figures import scan_effect_heatmap, token_head_heatmap

    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in a.notes)
    text_tabs = tabs_html(
        "dla",
        [
            (
                f"text {n}",
                f"<p class='muted'>{esc(t.sequence.text[:120])}"
                f"{'…' if len(t.sequence.text) > 120 else ''}</p>" + _plot(token_head_heatmap, t, a.heads),
            )
            for n, t in enumerate(a.texts, 1)
        ],
    )
    body = (
        "<h3>The induction story of the top induction heads</h3>"
        + logit_story_html(a)
        + "<h3>Direct effect on the copied token, every head</h3>"
        + _plot(scan_effect_heatmap, a.scan, "later", None, a.story_heads)
        + "<h3>Largest direct effects on your texts</h3>"
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


# --- the page --------------------------------------------------------------------------------
@dataclass
class Report:
    """Everything one page shows; any part may be missing (``headscope qk --report`` has no scan).

    ``induction``: the scan; ``texts``: the top induction heads' attention on the user's texts,
    ``sources`` those texts as written (same order, optional); ``qk``: a
    :class:`~headscope.qk.QKAnalysis`; ``logits``: a
    :class:`~headscope.pipeline.logit_analysis.LogitAnalysis`; ``notes``: anything the reader should know.
    """

    model: dict
    induction: InductionResult | None = None
    texts: list[AttentionSample] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    qk: Any = None
    logits: Any = None
    notes: list[str] = field(default_factory=list)
    phase: Any = None  # a headscope.toy.PhaseAnalysis
    heads: Any = None  # a headscope.pipeline.roles.HeadsAnalysis: its ICL check and natural-text sinks

    def sections(self) -> list[tuple[str, str, str]]:
        """``[(anchor, title, html)]`` in page order."""
        res, out = self.induction, []
        if res is not None:
            out += induction_sections(res)
            views: list[tuple[AttentionSample, str | None]] = [(s, None) for s in res.samples]
            views += [(s, self.sources[i] if i < len(self.sources) else None) for i, s in enumerate(self.texts)]
            if views:
                out.append(
                    (
                        "attention",
                        "Attention of the top induction heads (interactive)",
                        VIEW_HELP
                        + tabs_html(
                            "views",
                            [
                                (
                                    s.title.removeprefix("Top induction heads on "),
                                    attention_view_html(s, f"cv-{i}", text),
                                )
                                for i, (s, text) in enumerate(views)
                            ],
                        ),
                    )
                )
        elif self.qk is not None:
            out.append(
                ("attention", "Attention of the chosen heads (interactive)", VIEW_HELP + qk_patterns_html(self.qk.live))
            )
        if self.heads is not None:
            out += heads_sections(self.heads)
        if self.qk is not None:
            out += qk_sections(self.qk)
        if self.phase is not None:
            out += phase_sections(self.phase)
        if self.logits is not None:
            out += logit_sections(self.logits)
        defs = induction_definitions(res) if res is not None else {}
        if self.qk is not None:
            defs.update(QK_DEFINITIONS)
        if self.heads is not None:
            extra = ("in-context learning", "sink on natural text")
            defs.update({k: v for k, v in self.heads.legend().items() if k in extra})
        if self.logits is not None:
            defs.update(logit_definitions())
        if self.phase is not None:
            defs.update(self.phase.to_dict().get("definitions", {}))
        out.append(("legend", "Legend: what each score means and where it comes from", legend_html(defs)))
        return out

    def to_html(self) -> str:
        """The whole page: one self-contained HTML document."""
        nonce = secrets.token_urlsafe(16)
        sections = self.sections()
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src data:; "
            "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
        )
        nav = "".join(
            f'<a href="#{a}">{esc(t.split(":")[0].removesuffix(" (interactive)"))}</a>' for a, t, _ in sections
        )
        body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in sections)
        has_views = 'data-cv-component="' in body  # escaped text can never spell the quote
        name = self.model.get("name", "model")
        when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'>"
            f"<title>headscope report: {esc(name)}</title><style>{page_asset('page.css')}</style></head>"
            f"<body class='hs'><header class='hs-head'><h1>headscope report: {esc(name)}</h1>"
            f"<p>{esc(self.subtitle())}</p></header><nav>{nav}</nav><main>{body}</main>"
            f"<footer>{self.notes_html()}<p>Made by headscope {esc(__version__)} on {esc(when)}. This page is one "
            "self-contained file: it loads nothing from the network and can be sent as it is.</p></footer>"
            + (scripts_html(nonce) if has_views else f"<script nonce='{nonce}'>{page_asset('page.js')}</script>")
            + "</body></html>\n"
        )

    def subtitle(self) -> str:
        m = self.model
        bits = [f"{m.get('n_layers')} layers × {m.get('n_heads')} heads"] if m.get("n_layers") else []
        if self.induction is not None:
            s = self.induction.settings
            bits.append(f"induction scan on {s['batch']} sequences of {s['seq_len']} random tokens × {s['repeats']}")
        if self.qk is not None:
            bits.append("QK analysis of " + ", ".join(head_label(l, h) for l, h in self.qk.heads))
        if self.phase is not None:
            bits.append(f"the phase change over {len(self.phase.steps)} training checkpoints")
        if self.logits is not None:
            bits.append("logit effect of " + ", ".join(head_label(l, h) for l, h in self.logits.heads))
        return "; ".join(bits)

    def notes_html(self) -> str:
        notes = list(self.notes) + [
            f"Numbers on this page are rounded to {DECIMALS} decimals (QK scores in the interactive views to 2) and "
            f"interactive views keep at most {MAX_VIEW_TOKENS} tokens of a sequence; the JSON outputs "
            "(headscope induction --json, qk.json, logits.json) have full precision."
        ]
        return "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        """Inline in Jupyter: the page's sections and scripts (no CSP: a notebook has its own)."""
        body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in self.sections())
        return f"<div class='hs'><style>{page_asset('page.css')}</style>{body}{scripts_html()}</div>"


VIEW_HELP = (
    "<p class='muted'>Hover over a head to see its pattern, click to lock it; hover over a cell to read its "
    "value. Queries down, keys across; one tab per sequence.</p>"
)
