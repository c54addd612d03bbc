"""The view of an induction scan: settings, top heads and roles, heatmaps, loss, causal check; terminal table.

Draws a :class:`~headscope.results.scan_result.InductionResult`; the notebook view
(:func:`induction_html`) is built from the same pieces as the page.
"""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from ...head_labels import head_label
from ...results.scan_result import InductionResult
from ...scores import (
    ABLATION_DEFINITION,
    CONTROL_DRAWS,
    LOSS_DEFINITION,
    SCORES,
    ablation_definition,
    definitions,
    roles_legend,
    roles_present,
    weight_notes,
)
from ...scores import score as declared
from ...stats import signed, with_interval
from ..html import DECIMALS, Column, esc, figure_html, fmt, kv_html, legend_html, page_asset, table_html, tabs_html
from ..induction_figures import ablation_chart, loss_by_position, score_heatmap
from ..lookup import register
from ..view_base import Section, View


def _label(name: str) -> str:
    """A score's name in prose (the registry's label); other names as they are."""
    try:
        return declared(name).label
    except KeyError:
        return name


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
        "role thresholds": ", ".join(f"{_label(k)} ≥ {v}" for k, v in res.thresholds.items() if k in res.scores)
        + "".join(f"; {_label(k)}: not measured" for k in res.thresholds if k not in res.scores),
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


#: The causal check's two columns: the short name shown, the full one in the header's tooltip.
CAUSAL_COLUMNS: list[Column] = [
    ("Δloss, nats [95%]", "ablation Δloss: change in later-repeat loss when the head is ablated, nats [95% interval]"),
    ("Δfirst, nats", "Δ first repeat: change in first-repeat loss when the head is ablated, nats"),
]


def score_column(name: str) -> Column:
    """A score's column header: the registry's short ``header``, its prose ``label`` in the tooltip."""
    s = declared(name)
    return (s.header, s.label)


def columns_key(names: list[str], causal: bool = False) -> str:
    """The line under a table of short headers saying what each stands for (a tooltip is not always at hand)."""
    short = [f"{declared(n).header} = {declared(n).label}" for n in names if declared(n).header != declared(n).label]
    if causal:
        short += [
            "Δloss = change in later-repeat loss (nats) when the head alone is ablated, [95% bootstrap interval "
            "over sequences], green where the interval lies above 0 (raises it), red where below 0 (lowers it)",
            "Δfirst = the same ablation's change in first-repeat loss",
        ]
    return f'<p class="muted key">Columns: {esc("; ".join(short))}. The legend defines each.</p>' if short else ""


def top_heads_html(res: InductionResult, k: int | None = None) -> str:
    """The top induction heads: the causal check first (when it ran), every score, their roles.

    Short headers (the registry's ``header``, the full name in a tooltip and in the line under the
    table) keep the table as wide as the page, the causal check beside the head's name.
    """
    k = k or res.settings.get("top_k", 5)
    roles, sc, order = res.roles(), res.scores, res.score_order()
    rows = []
    for l, h, _ in res.top_heads("induction", k):
        rows.append(
            [
                head_label(l, h),
                *(ablation_cells(res.ablation_of(l, h)) if res.ablation else []),
                *(round(float(sc[n][l, h]), DECIMALS) for n in order),
                (roles_html(roles.get((l, h), [])), "+".join(roles.get((l, h), []))),
            ]
        )
    cols = ["head", *(CAUSAL_COLUMNS if res.ablation else []), *(score_column(n) for n in order), "roles"]
    return table_html(cols, rows, sortable=True) + columns_key(order, causal=bool(res.ablation))


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


def role_holders(best: list[tuple[int, int, float]], threshold: float) -> str:
    """The heads of ``best`` (``(layer, head, score)``, best first) that take the role (score at
    ``threshold`` or above); where none does, that none does and the highest score, so that no
    head is named for a role it does not hold.

    >>> role_holders([(0, 1, 0.6), (1, 0, 0.2)], 0.5)
    'L0H1 0.60'
    >>> role_holders([(1, 0, 0.2), (0, 1, 0.15)], 0.5)
    'none at >= 0.5 (highest: L1H0 0.20)'
    >>> role_holders([(0, 0, float("nan"))], 0.5)
    'not measured (see the notes)'
    """
    if not best or all(v != v for _, _, v in best):  # NaN: the score could not be measured on this model
        return "not measured (see the notes)"
    held = [f"{head_label(l, h)} {v:.2f}" for l, h, v in best if v >= threshold]
    if held:
        return ", ".join(held)
    l, h, v = best[0]
    return f"none at >= {threshold:g} (highest: {head_label(l, h)} {v:.2f})"


def other_roles_html(res: InductionResult, k: int = 3) -> str:
    parts = [
        f"<li><b>{esc(s.label)}</b>: {esc(role_holders(res.top_heads(s.name, k), res.thresholds[s.name]))}</li>"
        for s in roles_present(res.scores, res.thresholds)
        if s.name != "induction"
    ]
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
        + table_html(["head", *(score_column(n) for n in order), "roles"], rows, table_id, sortable=True)
        + columns_key(order)
        + "</details>"
    )


def role_counts_html(res: InductionResult) -> str:
    """Per role of the registry: its threshold, how many heads take it (0 included) and the best head."""
    rows = []
    for s in roles_present(res.scores, res.thresholds):
        t = res.thresholds[s.name]
        ((l, h, v),) = res.top_heads(s.name, 1)
        best = f"{head_label(l, h)} ({fmt(v)})" if v == v else "not measured (see the notes)"  # NaN
        rows.append([s.label, t, int((res.scores[s.name] >= t).sum()), best])
    return table_html(["role", "threshold", "heads", "best head (score)"], rows, sortable=True)


def role_table_html(res: InductionResult, table_id: str = "roles-table") -> str:
    """Every head with at least one role: its roles and every role score (held ones in bold), sortable."""
    roles = res.roles()
    names = [s.name for s in roles_present(res.scores, res.thresholds)]
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
    sets = "".join(f"<p>{esc(line)}</p>" for line in weight_notes(res.settings.get("weight_scores", {})))
    notes = res.role_notes()
    opposite = (
        "<p><b>Heads with two opposite roles</b>, and why:</p><ul>"
        + "".join(f"<li>{esc(head_label(*lh))}: {esc(v)}</li>" for lh, v in sorted(notes.items()))
        + "</ul>"
        if notes
        else ""
    )
    return (
        f"<p>{n} of {L * H} heads take at least one role. {esc(roles_legend(res.thresholds, res.scores))} Bold: the score "
        "behind a role the head holds.</p>" + role_counts_html(res) + sets + opposite + role_table_html(res)
    )


def verdicts_html(res: InductionResult) -> str:
    return '<ul class="verdicts">' + "".join(f"<li>{esc(v)}</li>" for v in res.verdicts()) + "</ul>"


def induction_definitions(res: InductionResult | None = None) -> dict[str, str]:
    names = res.score_order() if res is not None else [s.name for s in SCORES]
    defs = {declared(n).label: declared(n).definition for n in names}
    defs["loss by position"] = LOSS_DEFINITION
    if res is None:
        defs["ablation Δloss"] = ABLATION_DEFINITION
    elif res.ablation:  # a run without the causal check shows no Δloss, so it defines none
        defs["ablation Δloss"] = ablation_definition(res.settings.get("controls") or CONTROL_DRAWS)
    if res is not None:
        defs["roles"] = roles_legend(res.thresholds, res.scores)
    return defs


def induction_html(res: InductionResult) -> str:
    """The notebook view of an induction scan: settings, top heads, causal check, heatmap, legend."""
    from ..induction_figures import score_heatmap

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
    from ..induction_figures import ablation_chart, loss_by_position, score_heatmap

    out = [
        (
            "top",
            "Top heads and their roles",
            settings_html(res)
            + "<h3>Top induction heads</h3>"
            + top_heads_html(res)
            + "<h3>Heads that take the other roles</h3>"
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
            "a drop means the model predicts repeated tokens from context"
            + (
                "; the causal check below measures how much the top induction heads contribute.</p>"
                if res.ablation
                else " (this run made no causal check of which heads it comes from).</p>"
            )
            + figure_html(loss_by_position(res)),
        ),
    ]
    if res.ablation:
        out.append(("ablation", "Causal check", verdicts_html(res) + figure_html(ablation_chart(res))))
    return out


def print_induction(con, res) -> None:
    """The terminal table of the top heads (one column per score of the registry), verdicts, legend."""
    s = res.settings
    bos = "first token: " + s.get("bos_source", "bos" if s["bos"] else "none")
    path = {"fused": "fused attention (no n x n pattern)", "eager": "eager attention (full patterns)"}
    con.print(
        f"[bold]{res.model['name']}[/]: {s['batch']} sequences of {s['seq_len']} random tokens x {s['repeats']} "
        f"repeats, {bos}; {s['chunk_size']} per forward pass"
        + (f", {path.get(s['attention'], s['attention'])}" if s.get("attention") else ""),
        highlight=False,
    )
    roles = res.roles()
    names = [n for n in res.score_order() if declared(n).in_table]
    role_names = {r for l, h, _ in res.top_heads("induction", s["top_k"]) for r in roles.get((l, h), [])}
    shown = list(dict.fromkeys([*names, *sorted(role_names)]))
    short = ", ".join(f"{declared(n).header} = {declared(n).label}" for n in shown if declared(n).header != n)
    causal = (
        ", Δloss = change in later-repeat loss when ablated, [95% bootstrap interval over sequences], "
        "Δfirst = change in first-repeat loss"
        if res.ablation
        else ""
    )
    t = Table(
        title=f"Top induction heads ({short}{causal})",
        box=box.SIMPLE_HEAD,  # one space between columns: the table fits an 80-column terminal
        padding=(0, 0),
        pad_edge=False,
        show_edge=False,
    )
    cols = ["head", *(declared(n).header for n in names), "roles", *(["Δloss [95%]", "Δfirst"] if res.ablation else [])]
    for col in cols:
        t.add_column(
            col,
            justify="left" if col in ("head", "roles") else "right",
            overflow="fold",
            no_wrap=col != "roles",
        )
    for l, h, _ in res.top_heads("induction", s["top_k"]):
        cells = [
            f"{res.scores[n][l, h]:.3f}" if declared(n).vmin == 0 else f"{res.scores[n][l, h]:+.3f}" for n in names
        ]
        e = res.ablation_of(l, h)
        t.add_row(
            head_label(l, h),
            *cells,
            " ".join(declared(r).header for r in roles.get((l, h), [])) or "-",
            *(
                []
                if not res.ablation
                else ["-", "-"]
                if e is None
                else [
                    with_interval(e["loss_increase"], e["interval"][0], e["interval"][1], decimals=2, sep=","),
                    signed(e["first_repeat_increase"], 2),
                ]
            ),
        )
    con.print(t)
    for n in [s.name for s in roles_present(res.scores, res.thresholds) if s.name != "induction"]:
        con.print(
            f"{declared(n).label.capitalize()} heads: {role_holders(res.top_heads(n, 3), res.thresholds[n])}",
            highlight=False,
        )
    con.print(
        f"Loss: first repeat {res.loss_first_repeat:.2f} nats, later repeats {res.loss_later_repeats:.2f} nats",
        highlight=False,
    )
    if res.ablation:
        con.print(f"Causal check ({s['ablation']} ablation of hook_z):", highlight=False)
        for v in res.verdicts():
            con.print(f"  {v}", highlight=False, markup=False)
    con.print("[dim]Legend:[/]")
    for name, text in definitions(s.get("controls")).items():
        if name == "ablation" and not res.ablation:
            continue  # no causal check ran: nothing on screen is defined by it
        con.print(f"[dim]  {name}: {escape(text)}[/]", highlight=False)
    con.print(f"[dim]  roles: {roles_legend(res.thresholds, res.scores)}[/]", highlight=False)


@register(InductionResult)
class InductionView(View):
    figures = {"scores": score_heatmap, "loss": loss_by_position, "ablation": ablation_chart}

    def sections(self, result) -> list[Section]:
        return [Section(*s) for s in induction_sections(result)]

    def legend(self, result) -> dict[str, str]:
        return induction_definitions(result)

    def subtitle(self, result) -> str:
        s = result.settings
        return f"induction scan on {s['batch']} sequences of {s['seq_len']} random tokens × {s['repeats']}"

    def title(self, result) -> str:
        return f"Induction scan — {result.model.get('name')}"

    def notebook_html(self, result) -> str:
        return induction_html(result)

    def terminal(self, result, console) -> None:
        print_induction(console, result)
