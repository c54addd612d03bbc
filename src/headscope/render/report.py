"""One self-contained HTML page of everything headscope found about a model.

The page is a single file with no outside reference: its CSS inline, figures as PNG data
URIs, and circuitsvis's JavaScript bundle inlined **once**, followed by one small JSON
island per interactive attention view (``<script type="application/json">``) and one
script (``page.js``) that renders them all. Opening it makes no network request.

Safety. Every outside string that reaches the page (token strings, the user's texts, file
and model names) goes through :func:`esc` (HTML text and attributes) or :func:`script_json`
(JSON islands: ``<``, ``>``, ``&`` written as ``\\u003c`` etc., so no ``</script>`` can end an
island early; circuitsvis then shows tokens as text through React). A Content-Security-Policy
with a fresh nonce per page lets only the page's own scripts run and forbids every fetch, a
second line of defence, not the first.

Size. Numbers are rounded (3 decimals on the page, full precision in ``--json``), figures are
PNGs at :data:`FIG_DPI`, and attention views keep at most :data:`MAX_VIEW_TOKENS` tokens (the
page says where it cut). The default SmolLM2 page is about 2 MB (see docs/report.md).

The same pieces make the notebook views: :func:`induction_html` is what
``InductionResult._repr_html_`` shows, and :class:`Report` renders inline in Jupyter too.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..scan.attention import AttentionSample
from ..scan.result import ABLATION_DEFINITION, LOSS_DEFINITION, SCORE_ORDER, InductionResult, head_label
from ..scan.scores import DEFINITIONS

#: Attention views keep the first this-many tokens of a sequence (rows stay exact: attention is causal).
MAX_VIEW_TOKENS = 64
#: Decimals of the attention weights in the interactive views and of every number in tables.
DECIMALS = 3
#: Resolution of the PNG figures on the page.
FIG_DPI = 72

SCORE_NAMES = {"induction": "induction", "prefix_matching": "prefix-matching", "previous_token": "previous-token",
               "duplicate_token": "duplicate-token", "copying": "copying"}

#: Definitions of the QK quantities, used when the QK package does not provide its own.
QK_DEFINITIONS = {
    "QK score": "Pre-softmax score of query i against key j, q_i . k_j / sqrt(d_head), rotary applied where the model "
                "has it (what hook_attn_scores holds); the causal mask is shown as masked. Source: Elhage et al. 2021.",
    "QK decomposition": "The score split over the residual stream's components (embeddings, each earlier head, each "
                        "MLP), key side and query side, with the normalisation scale frozen so the score is linear in "
                        "them; each side sums to the score. Source: Elhage et al. 2021, direct path plus composition terms.",
    "positional QK": "How a head's score depends on position alone: W_pos W_Q W_K^T W_pos^T / sqrt(d_head) for learned "
                     "positions; for rotary models the expected score between a query at i and a key at i - offset. "
                     "Source: Elhage et al. 2021 (positional QK circuit).",
    "token QK": "x_t W_Q W_K^T x_s^T / sqrt(d_head) on token embeddings x, and the top singular directions of the full "
                "vocab x vocab circuit, taken from its rank-d_head factors. Source: Elhage et al. 2021.",
    "composition": "||W_A W_B||_F / (||W_A||_F ||W_B||_F), W_A an earlier head's OV circuit, W_B a later head's "
                   "W_Q W_K^T (Q-), W_K W_Q^T (K-) or W_V W_O (V-composition); 'excess' subtracts the same score for "
                   "random matrices of the same shapes. Induction heads K-compose with previous-token heads. "
                   "Source: Elhage et al. 2021; baseline as in ARENA.",
}


# --- small pieces ----------------------------------------------------------------------------
def esc(text: Any) -> str:
    """``text`` as HTML text or attribute value: ``& < > " '`` escaped."""
    return html.escape(str(text), quote=True)


def script_json(value: Any) -> str:
    """JSON safe to put inside ``<script>``: no ``<``, ``>`` or ``&`` survive (written as ``\\u003c`` etc.)."""
    s = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def rounded(a: np.ndarray, decimals: int = DECIMALS) -> list:
    """Nested lists of ``a`` rounded to ``decimals`` (NaN -> None), for JSON."""
    a = np.round(np.asarray(a, dtype=np.float64), decimals)
    out = a.astype(object)
    out[np.isnan(a)] = None
    return out.tolist()


def fmt(v: float | None, decimals: int = DECIMALS, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"


def figure_html(fig, caption: str = "", dpi: int = FIG_DPI, alt: str = "") -> str:
    """A matplotlib figure as an inline PNG (closed afterwards), with an escaped caption."""
    from ._mpl import plt
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt or caption)}" src="data:image/png;base64,{data}">{cap}</figure>'


def table_html(columns: list[str], rows: Iterable[list], table_id: str = "", sortable: bool = False) -> str:
    """A table; a cell is text (escaped, left-aligned), a number (right-aligned) or ``(shown_html, sort_value)``."""
    def cell(c):
        if isinstance(c, tuple):  # (already-escaped html, value to sort by)
            shown, v = c
            return f'<td class="{"t" if isinstance(v, str) else ""}" data-v="{esc(v)}">{shown}</td>'
        if isinstance(c, (int, float, np.floating, np.integer)) and not isinstance(c, bool):
            return f'<td data-v="{float(c)!r}">{fmt(float(c)) if isinstance(c, (float, np.floating)) else c}</td>'
        return f'<td class="t">{esc(c)}</td>'

    rows = list(rows)
    text_cols = {i for i, c in enumerate(rows[0]) if isinstance(c, str) or isinstance(c, tuple) and isinstance(c[1], str)}\
        if rows else {0}
    head = "".join(f'<th class="{"t" if i in text_cols else ""}">{esc(c)}</th>' for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_html(pairs: dict[str, Any]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs.items()) + "</dl>"


def visible_token(t: str) -> str:
    """A token with its whitespace made visible, as the induction views show it (space ·, newline ↵, tab ⇥)."""
    return t.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍").replace(" ", "·")


def _tab_label(title: str) -> str:
    return title.removeprefix("Top induction heads on ")


def tokens_html(tokens: Iterable[str]) -> str:
    """Token strings as chips, so their edges and spaces show."""
    return "".join(f'<span class="tok">{esc(t)}</span>' for t in tokens)


def roles_html(roles: list[str]) -> str:
    return "".join(f'<span class="role {esc(r)}">{esc(SCORE_NAMES.get(r, r))}</span>' for r in roles) or "–"


def legend_html(definitions: dict[str, str]) -> str:
    """Every score's definition and source, as a definition list."""
    return '<dl class="legend">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in definitions.items()) + "</dl>"


def tabs_html(group: str, panels: list[tuple[str, str]]) -> str:
    """Buttons that switch between ``panels`` ``[(label, html)]``; the first is shown.

    Hidden panels are moved off-screen rather than given ``display: none``, so interactive views
    in them are laid out at full size and draw correctly when their tab is chosen.
    """
    bar, body = [], []
    for i, (label, content) in enumerate(panels):
        pid = f"{group}-{i}"
        bar.append(f'<button type="button" data-tab="{pid}" aria-selected="{"true" if i == 0 else "false"}">'
                   f"{esc(label)}</button>")
        body.append(f'<div class="tabpanel{"" if i == 0 else " off"}" id="{pid}">{content}</div>')
    return f'<div class="tabs">{"".join(bar)}</div><div class="tabbed">{"".join(body)}</div>'


# --- interactive attention (circuitsvis) -----------------------------------------------------
def circuitsvis_bundle() -> str:
    """circuitsvis's browser bundle (defines the global ``CircuitsVis``), safe inside ``<script>``."""
    import circuitsvis

    js = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_text(encoding="utf-8")
    # "</script" (any case) would end our script element; "<!--" could start an HTML comment state.
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def page_asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def scripts_html(nonce: str | None = None) -> str:
    """The circuitsvis bundle and the page script: once per page, after every view."""
    n = f' nonce="{esc(nonce)}"' if nonce else ""
    return f"<script{n}>{circuitsvis_bundle()}</script><script{n}>{page_asset('page.js')}</script>"


def heads_view_html(view_id: str, title: str, tokens: list[str], values: np.ndarray, names: list[str], *,
                    text: str | None = None, notes: Iterable[str] = (), decimals: int = DECIMALS,
                    max_tokens: int = MAX_VIEW_TOKENS, **props) -> str:
    """One interactive circuitsvis ``AttentionHeads`` view of ``values`` (``[heads, query, key]``).

    Keeps the first ``max_tokens`` tokens (rows stay exact: attention is causal) and says so;
    ``text`` is shown above the view as written. Emits the target ``<div>`` and its JSON
    island; :func:`scripts_html` must follow on the page.
    """
    n = len(tokens)
    keep = min(n, max_tokens)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64)[:, :keep, :keep])  # masked cells: hidden by maskUpperTri
    data = {"attention": rounded(v, decimals), "tokens": list(tokens[:keep]), "attentionHeadNames": names,
            "maskUpperTri": True, **props}
    notes = [t for t in notes if t]
    if keep < n:
        notes.append(f"showing the first {keep} of {n} tokens (the page's limit; each row shown is exact, "
                     "attention being causal)")
    note = "".join(f'<p class="note">{esc(t)}</p>' for t in notes)
    shown = f'<div class="text-shown">{esc(text)}</div>' if text else ""
    return (f'<div class="cv-block"><h3>{esc(title)}</h3>{shown}{note}'
            f'<div class="cv-view" id="{esc(view_id)}"></div>'
            f'<script type="application/json" data-cv-target="{esc(view_id)}" data-cv-component="AttentionHeads">'
            f"{script_json(data)}</script></div>")


def attention_view_html(sample: AttentionSample, view_id: str, text: str | None = None,
                        max_tokens: int = MAX_VIEW_TOKENS) -> str:
    """An interactive view of ``sample.patterns`` (``[heads, query, key]``), ``text`` shown above it."""
    return heads_view_html(view_id, sample.title, sample.tokens, sample.patterns,
                           [head_label(l, h) for l, h in sample.heads], text=text, notes=[sample.note],
                           max_tokens=max_tokens)


def notebook_attention(sample: AttentionSample, max_tokens: int = MAX_VIEW_TOKENS) -> str:
    """A self-contained interactive view for a notebook cell (carries the ~1.3 MB bundle itself)."""
    vid = "hs-cv-" + secrets.token_hex(6)
    return f'<div class="hs">{attention_view_html(sample, vid, max_tokens=max_tokens)}{scripts_html()}</div>'


# --- induction pieces ------------------------------------------------------------------------
def settings_html(res: InductionResult) -> str:
    s, m = res.settings, res.model
    model = {"model": m.get("name"), "layers × heads": f"{m.get('n_layers')} × {m.get('n_heads')}"}
    if m.get("n_kv_heads") and m.get("n_kv_heads") != m.get("n_heads"):
        model["key/value heads"] = f"{m['n_kv_heads']} per layer (grouped-query attention)"
    model["vocabulary"] = m.get("d_vocab")
    run = {"sequences": f"{s['batch']} × ([BOS] + r × {s['repeats']})" if s.get("bos") else
           f"{s['batch']} × (r × {s['repeats']}), no BOS token",
           "r": f"{s['seq_len']} random ordinary tokens, seed {s['seed']}",
           "causal check": f"{s['ablation']} ablation of hook_z" if res.ablation else "skipped",
           "role thresholds": ", ".join(f"{SCORE_NAMES.get(k, k)} ≥ {v}" for k, v in res.thresholds.items()),
           "device": s.get("device", "")}
    return f'<div class="cards"><div class="card"><h3>Model</h3>{kv_html(model)}</div>' \
           f'<div class="card"><h3>Scan</h3>{kv_html(run)}</div></div>'


def top_heads_html(res: InductionResult, k: int | None = None) -> str:
    """The top induction heads with every score, their roles and the causal check."""
    k = k or res.settings.get("top_k", 5)
    roles, sc = res.roles(), res.scores
    rises = {(e["layer"], e["head"]): e["loss_increase"] for e in res.ablation if e["kind"] == "head"}
    rows = []
    for l, h, _ in res.top_heads("induction", k):
        rise = rises.get((l, h))
        rise_cell = ("–", -1e9) if rise is None else \
            (f'<span class="{"pos" if rise >= 0.01 else "neg"}">{fmt(rise, signed=True)}</span>', round(rise, DECIMALS))
        rows.append([head_label(l, h), *(round(float(sc[n][l, h]), DECIMALS) for n in SCORE_ORDER),
                     (roles_html(roles.get((l, h), [])), "+".join(roles.get((l, h), []))), rise_cell])
    cols = ["head", *(SCORE_NAMES[n] for n in SCORE_ORDER), "roles", "ablation Δloss"]
    return table_html(cols, rows, sortable=True)


def other_roles_html(res: InductionResult, k: int = 3) -> str:
    parts = []
    for score in ("previous_token", "duplicate_token", "copying"):
        best = ", ".join(f"{head_label(l, h)} {v:.2f}" for l, h, v in res.top_heads(score, k))
        parts.append(f"<li><b>{esc(SCORE_NAMES[score])}</b>: {esc(best)}</li>")
    return f'<ul class="verdicts">{"".join(parts)}</ul>'


def all_heads_html(res: InductionResult, table_id: str = "all-heads") -> str:
    roles = res.roles()
    L, H = res.scores["induction"].shape
    rows = [[head_label(l, h), *(round(float(res.scores[n][l, h]), DECIMALS) for n in SCORE_ORDER),
             "+".join(SCORE_NAMES[r] for r in roles.get((l, h), []))] for l in range(L) for h in range(H)]
    return (f'<details><summary>All {L * H} heads (sortable, filterable)</summary>'
            f'<input class="filter" data-filter="{table_id}" placeholder="filter, e.g. L17 or induction">'
            + table_html(["head", *(SCORE_NAMES[n] for n in SCORE_ORDER), "roles"], rows, table_id, sortable=True)
            + "</details>")


def verdicts_html(res: InductionResult) -> str:
    return '<ul class="verdicts">' + "".join(f"<li>{esc(v)}</li>" for v in res.verdicts()) + "</ul>"


def induction_definitions(res: InductionResult | None = None) -> dict[str, str]:
    defs = {SCORE_NAMES[k]: v for k, v in DEFINITIONS.items()}
    defs["loss by position"] = LOSS_DEFINITION
    defs["ablation Δloss"] = ABLATION_DEFINITION
    if res is not None:
        defs["roles"] = ("A head takes a role when its score reaches the threshold: "
                         + ", ".join(f"{SCORE_NAMES.get(k, k)} ≥ {v}" for k, v in res.thresholds.items())
                         + " (change with --threshold NAME=VALUE).")
    return defs


def induction_html(res: InductionResult) -> str:
    """The notebook view of an induction scan: settings, top heads, causal check, heatmap, legend."""
    from .induction_figures import score_heatmap

    parts = [f"<h3>Induction scan — {esc(res.model.get('name'))}</h3>", settings_html(res), top_heads_html(res),
             other_roles_html(res),
             f"<p>Loss: first repeat {res.loss_first_repeat:.2f} nats, later repeats {res.loss_later_repeats:.2f} nats.</p>"]
    if res.ablation:
        parts.append(verdicts_html(res))
    parts.append(figure_html(score_heatmap(res, "induction")))
    parts.append(f"<details><summary>Definitions</summary>{legend_html(induction_definitions(res))}</details>")
    return f'<div class="hs"><style>{page_asset("page.css")}</style>{"".join(parts)}</div>'


# --- QK pieces -------------------------------------------------------------------------------
def _plot(obj, *args) -> str:
    """``obj.plot(*args)`` as a figure, or a note when the QK figures are not available."""
    try:
        fig = obj.plot(*args)
    except ImportError as exc:  # render.qk_figures not installed/written: the tables still stand
        return f'<p class="note">figure unavailable: {esc(exc)}</p>'
    return figure_html(fig)


def qk_scores_html(qs, first_id: int = 0) -> str:
    """Live pre-softmax QK scores of the chosen heads, one interactive view per text (red +, blue -)."""
    names = [head_label(l, h) for l, h in qs.heads]
    views = []
    for s, seq in enumerate(qs.sequences):
        sc = np.asarray(qs.scores[s], dtype=np.float64)
        lim = float(np.nanmax(np.abs(sc[:, 1:, 1:]))) if len(seq) > 2 else float(np.nanmax(np.abs(sc)))
        views.append(heads_view_html(f"cv-qk-{first_id + s}", f"QK scores on text {s + 1}",
                                     [visible_token(t) for t in seq.labels], sc, names,
                                     text=seq.text, notes=seq.notes, decimals=2, maxValue=lim, minValue=-lim,
                                     positiveColor="red", negativeColor="blue"))
    return tabs_html("qk-views", [(f"text {s + 1}", v) for s, v in enumerate(views)])


def decomposition_html(d) -> str:
    head = f"L{d.layer}H{d.head}"
    rows = [[side, name, round(float(v), DECIMALS)] for side in ("key", "query") for name, v in d.top(side, 5)]
    pairs = [[a, b, round(v, DECIMALS)] for a, b, v in d.top_pairs(5)]
    facts = (f"score {d.score:.3f} (model's own {d.model_score:.3f}, largest difference {d.max_abs_error:.1e}), "
             f"attention {d.attention:.3f}; {d.how}")
    return (f"<h3>{esc(head)}</h3><p class='muted'>{esc(facts)}</p>{_plot(d)}<div class='cards'>"
            "<div><b>Largest contributions</b>" + table_html(["side", "component", "score units"], rows) + "</div>"
            "<div><b>Largest query × key component pairs</b>"
            + table_html(["query component", "key component", "score units"], pairs)
            + f"</div></div><p class='muted'>{esc(d.note)}</p>")


def positional_html(p) -> str:
    rows = []
    for n, (l, h) in enumerate(p.heads):
        curve = p.offset_curve[n]
        peak = int(p.offsets[np.nanargmax(curve)])
        rows.append([head_label(l, h), peak, round(float(np.nanmax(curve)), DECIMALS),
                     round(float(curve[1]), DECIMALS) if len(curve) > 1 else float("nan")])
    return (_plot(p) + table_html(["head", "peak offset", "peak score", "score at offset 1"], rows)
            + f"<p class='muted'>{esc(p.method)}</p>")


def token_qk_html(t) -> str:
    rows = [[round(float(d["singular_value"]), DECIMALS),
             *((tokens_html(d[k]), "") for k in ("queries_plus", "keys_plus", "queries_minus", "keys_minus"))]
            for d in t.directions]
    pairs = [[(tokens_html([q]), q), (tokens_html([k]), k), round(v, DECIMALS)] for q, k, v in t.top_pairs(6)]
    return (f"<h3>L{t.layer}H{t.head}</h3>{_plot(t)}<div class='cards'>"
            "<div><b>Highest-scoring query/key token pairs</b>"
            + table_html(["query token", "key token", "score"], pairs) + "</div>"
            "<div><b>Top singular directions of the full-vocabulary circuit</b>"
            + table_html(["σ", "queries +", "keys +", "queries −", "keys −"], rows)
            + f"</div></div><p class='muted'>{esc(t.method)}</p>")


def composition_html(c, res: InductionResult | None = None, heads: list[tuple[int, int]] | None = None) -> str:
    """The composition figure and, per chosen later head, the earlier heads it reads most (K, Q, V)."""
    heads = heads or ([(l, h) for l, h, _ in res.top_heads("induction", 3)] if res is not None else [])
    rows = []
    for l, h in heads:
        if l == 0:
            continue
        for kind in c.scores:
            for sl, sh, v in c.top_sources(l, h, kind, 3):
                prev = [round(float(res.scores["previous_token"][sl, sh]), DECIMALS)] if res is not None else []
                rows.append([head_label(l, h), kind, head_label(sl, sh), round(v, DECIMALS), *prev])
    cols = ["later head", "kind", "earlier head", "excess"] + (["earlier head's previous-token score"] if res else [])
    base = f"random baseline {c.baseline:.4f} ± {c.baseline_std:.4f} (d_model {c.d_model}, d_head {c.d_head})"
    sources = ""
    later = [lh for lh in heads if lh[0] > 0]
    if later:
        try:
            from .qk_figures import plot_k_sources

            prev = res.scores["previous_token"] if res is not None else None
            sources = figure_html(plot_k_sources(c, later, prev))
        except ImportError as exc:
            sources = f'<p class="note">figure unavailable: {esc(exc)}</p>'
    return (f"<p class='muted'>{esc(base)}; {esc(c.note)}</p>{sources}{_plot(c)}"
            f"<details><summary>The strongest sources of each chosen head, every kind (table)</summary>"
            + table_html(cols, rows, sortable=True) + "</details>")


def qk_definitions(qk: dict) -> dict[str, str]:
    try:
        from .. import qk as qk_pkg

        given = dict(getattr(qk_pkg, "DEFINITIONS", {}) or {})
    except ImportError:
        given = {}
    return given or QK_DEFINITIONS


# --- the page --------------------------------------------------------------------------------
#: What a report's ``qk`` dict may hold, in page order.
QK_PARTS = ("scores", "decompositions", "positional", "token", "composition")


@dataclass
class Report:
    """Everything one page shows. Any part may be missing (``headscope qk --report`` has no scan).

    ``texts``: the top heads' attention on the user's texts, ``sources`` those texts as
    written (same order; optional); ``qk``: QK results keyed by
    :data:`QK_PARTS` (``decompositions`` and ``token`` are lists); ``notes``: anything the
    reader should know (what was cut, skipped or rounded).
    """

    model: dict
    induction: InductionResult | None = None
    texts: list[AttentionSample] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    qk: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def sections(self) -> list[tuple[str, str, str]]:
        """``[(anchor, title, html)]`` in page order."""
        res, out = self.induction, []
        views = []
        if res is not None:
            out.append(("top", "Top heads and their roles",
                        settings_html(res) + "<h3>Top induction heads</h3>" + top_heads_html(res)
                        + "<h3>Best heads for the other roles</h3>" + other_roles_html(res) + all_heads_html(res)))
            from .induction_figures import TITLES, ablation_chart, loss_by_position, score_heatmap

            out.append(("heatmaps", "Score heatmaps",
                        tabs_html("heatmap", [(TITLES.get(s, s), figure_html(score_heatmap(res, s)))
                                              for s in SCORE_ORDER])))
            out.append(("loss", "Loss by position",
                        f"<p>First repeat {res.loss_first_repeat:.2f} nats, later repeats "
                        f"{res.loss_later_repeats:.2f} nats: a drop means the model predicts repeated tokens "
                        "from context, the behaviour induction heads implement.</p>"
                        + figure_html(loss_by_position(res))))
            if res.ablation:
                out.append(("ablation", "Causal check", verdicts_html(res) + figure_html(ablation_chart(res))))
            views += [(s, None) for s in res.samples]
        views += [(s, self.sources[i] if i < len(self.sources) else None) for i, s in enumerate(self.texts)]
        if views:
            body = ("<p class='muted'>Hover over a head to see its pattern, click to lock it; hover over a cell to "
                    "read its weight. Queries down, keys across. One tab per sequence.</p>"
                    + tabs_html("views", [(_tab_label(s.title), attention_view_html(s, f"cv-{i}", text))
                                          for i, (s, text) in enumerate(views)]))
            out.append(("attention", "Attention of the top heads (interactive)", body))
        qk = self.qk
        if qk.get("scores") is not None:
            heads = ", ".join(head_label(l, h) for l, h in qk["scores"].heads)
            out.append(("qk-live", "QK scores on text (interactive)",
                        f"<p class='muted'>Heads {esc(heads)}: pre-softmax scores q·k/√d_head, red positive, blue "
                        "negative, scaled to the largest non-BOS score of each text; the softmax of each row is "
                        "the attention pattern.</p>" + qk_scores_html(qk["scores"])))
        if qk.get("decompositions"):
            out.append(("qk-decomposition", "Why they attend there: QK decompositions",
                        "".join(decomposition_html(d) for d in qk["decompositions"])))
        if qk.get("positional") is not None:
            out.append(("qk-positional", "Positional QK circuit", positional_html(qk["positional"])))
        if qk.get("token"):
            out.append(("qk-token", "Token QK circuit", "".join(token_qk_html(t) for t in qk["token"])))
        if qk.get("composition") is not None:
            out.append(("composition", "Composition scores",
                        composition_html(qk["composition"], res, self.settings.get("qk_heads"))))
        defs = induction_definitions(res) if res is not None else {}
        if qk:
            defs.update(qk_definitions(qk))
        out.append(("legend", "Legend: what each score means and where it comes from", legend_html(defs)))
        return out

    def to_html(self) -> str:
        """The whole page: one self-contained HTML document."""
        from .. import __version__

        nonce = secrets.token_urlsafe(16)
        sections = self.sections()
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src data:; "
               "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")
        nav = "".join(f'<a href="#{a}">{esc(t.split(":")[0])}</a>' for a, t, _ in sections)
        body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in sections)
        has_views = 'data-cv-component="' in body  # escaped text can never spell the quote
        notes = self.page_notes()
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
            f"<footer>{notes}<p>Made by headscope {esc(__version__)} on {esc(when)}. This page is one self-contained "
            "file: it loads nothing from the network and can be sent as it is.</p></footer>"
            + (scripts_html(nonce) if has_views else f"<script nonce='{nonce}'>{page_asset('page.js')}</script>")
            + "</body></html>\n"
        )

    def subtitle(self) -> str:
        m = self.model
        bits = [f"{m.get('n_layers')} layers × {m.get('n_heads')} heads"]
        if self.induction is not None:
            s = self.induction.settings
            bits.append(f"induction scan on {s['batch']} sequences of {s['seq_len']} random tokens × {s['repeats']}")
        if self.qk:
            bits.append("QK analysis of " + ", ".join(head_label(l, h) for l, h in self.settings.get("qk_heads", [])))
        return "; ".join(b for b in bits if b)

    def page_notes(self) -> str:
        notes = list(self.notes)
        notes.append(f"Numbers on this page are rounded to {DECIMALS} decimals and attention views keep at most "
                     f"{MAX_VIEW_TOKENS} tokens per sequence; the JSON output (--json) has full precision.")
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


# --- collecting the results (runs the analyses; the page itself never touches a model) ---------
def default_texts() -> list[tuple[str, str]]:
    try:
        from ..qk.inputs import SAMPLE_TEXTS
    except ImportError:
        SAMPLE_TEXTS = ("The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.",)
    return [(f"sample text {i}", t) for i, t in enumerate(SAMPLE_TEXTS, 1)]


def qk_heads_for(res: InductionResult, n_induction: int = 3) -> list[tuple[int, int]]:
    """The heads a report analyses: the top induction heads, then the best previous- and duplicate-token heads."""
    heads = [(l, h) for l, h, _ in res.top_heads("induction", n_induction)]
    for score in ("previous_token", "duplicate_token"):
        l, h, _ = res.top_heads(score, 1)[0]
        if (l, h) not in heads:
            heads.append((l, h))
    return heads


def collect_qk(model, heads: list[tuple[int, int]], texts: list[str], *, decompose: list[tuple[int, int]] | None = None,
               log: Callable[[str], None] = lambda s: None) -> dict:
    """The QK results a page shows, for ``heads`` on ``texts`` (see :data:`QK_PARTS`).

    ``decompose``: the heads whose score is split into components, on the first text
    (default: the first of ``heads``). The token circuit is the first head's, on the first
    text's distinct tokens (at most 24).
    """
    from .. import qk as Q
    from ..qk.inputs import prepare_texts
    from ..weights import head_weights

    w = head_weights(model)
    seqs = prepare_texts(model, texts, max_tokens=MAX_VIEW_TOKENS)
    out: dict[str, Any] = {}
    log("QK: live scores")
    out["scores"] = Q.qk_scores(model, heads, seqs)
    log("QK: decompositions")
    out["decompositions"] = [Q.decompose_qk(model, h, seqs[0], weights=w) for h in (decompose or heads[:1])]
    log("QK: positional and token circuits")
    out["positional"] = Q.positional_qk(model, heads, weights=w)
    ids = list(dict.fromkeys(seqs[0].ids[1:]))[:24]
    out["token"] = [Q.token_qk(model, heads[0], ids, weights=w)] if len(ids) >= 2 else []
    log("QK: composition scores")
    out["composition"] = Q.composition_scores(w)
    return out


def build_report(model, texts: list[str] | list[tuple[str, str]] | None = None, *, seq_len: int = 50,
                 batch: int = 10, repeats: int = 2, seed: int = 0, top_k: int = 5, ablate: bool = True,
                 ablation: str = "mean", thresholds: dict[str, float] | None = None, qk: bool = True,
                 max_memory_gb: float = 2.0, progress: bool | None = None,
                 log: Callable[[str], None] = lambda s: None) -> Report:
    """Run the induction scan and the QK analysis on ``model`` and gather them into a :class:`Report`.

    ``texts``: strings or ``(title, text)`` pairs for the attention views and the QK analysis;
    None uses the built-in sample texts.

    >>> report = build_report(headscope.load_model(), seq_len=20, batch=4)   # doctest: +SKIP
    >>> report.save("report.html")                                            # doctest: +SKIP
    """
    from ..scan import attention_sample, encode_text, scan_induction

    pairs = default_texts() if not texts else [t if isinstance(t, tuple) else (f"text {i}", t)
                                               for i, t in enumerate(texts, 1)]
    res = scan_induction(model, seq_len=seq_len, batch=batch, repeats=repeats, seed=seed, top_k=top_k,
                         ablate=ablate, ablation=ablation, thresholds=thresholds, max_memory_gb=max_memory_gb,
                         progress=progress)
    heads = [(l, h) for l, h, _ in res.top_heads("induction", min(top_k, 6))]
    log("attention on the texts")
    samples = [attention_sample(model, encode_text(model, t), heads, f"Top induction heads on {title}",
                                max_tokens=MAX_VIEW_TOKENS) for title, t in pairs]
    rep = Report(model=dict(res.model), induction=res, texts=samples, sources=[t for _, t in pairs])
    if qk:
        rep.settings["qk_heads"] = qk_heads_for(res)
        prev = res.top_heads("previous_token", 1)[0][:2]
        rep.qk = collect_qk(model, rep.settings["qk_heads"], [t for _, t in pairs],
                            decompose=list(dict.fromkeys([heads[0], prev])), log=log)
    return rep
