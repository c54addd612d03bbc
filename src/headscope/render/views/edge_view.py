"""The views of edge attribution: the scored edges (:class:`EdgeScores`) and the checked circuit
(:class:`EdgeCircuit`: graph, faithfulness curve, attribution against patching, two-seed overlap)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ...results.edge_results import EDGE_DEFINITIONS, EdgeCircuit, EdgeScores
from ...stats import signed
from ..edge_figures import agreement_figure, edge_graph, faithfulness_curve_figure
from ..html import esc, kv_html, table_html
from ..lookup import register
from ..view_base import Section, View, plotted
from .circuit_view import gap_text, gap_warning_html


def _edge_rows(scores: EdgeScores, k: int) -> list[list]:
    return [[i + 1, s, r, round(x, 4)] for i, (s, r, x) in enumerate(scores.top(k))]


def _timing(scores: EdgeScores) -> str:
    t = scores.seconds
    return f"{t.get('wall', float('nan')):.1f} s wall, {t.get('cpu', float('nan')):.1f} s CPU" if t else ""


@register(EdgeScores)
class EdgeScoresView(View):
    figures = {"graph": edge_graph}

    def title(self, result) -> str:
        return f"Edge attribution ({result.label()})"

    def subtitle(self, result) -> str:
        return f"{result.label()} over {result.n_edges} edges"

    def sections(self, result) -> list[Section]:
        steps = f", {result.ig_steps} integration steps" if result.ig_steps else ""
        body = (
            f"<p>{esc(result.label())}{esc(steps)} over every edge ({result.n_edges}) on the "
            f"{esc(result.task.get('name'))} task ({result.task.get('n_examples')} examples, metric "
            f"{esc(result.task.get('metric'))}); {esc(_timing(result))}. Scores are estimates; see the "
            "faithfulness curve for what patching measures.</p>"
            + plotted(edge_graph, result, 30)
            + table_html(["rank", "sender", "receiver", "score"], _edge_rows(result, 25))
        )
        return [Section("edge-attribution", f"Edge attribution: top edges ({result.label()})", body)]

    def legend(self, result) -> dict[str, str]:
        return {k: EDGE_DEFINITIONS[k] for k in ("edge", f"{result.label()} score")}

    def notebook_figure(self, result):
        return edge_graph(result)

    def terminal(self, result, console) -> None:
        top = result.top(15)
        # short enough not to wrap over a four-column table; the timing goes on its own line
        t = Table(title=f"{result.label()}: top {len(top)} of {result.n_edges:,} edges")
        for c in ("rank", "sender", "receiver", "score"):
            t.add_column(c, justify="right" if c in ("rank", "score") else "left")
        for i, (s, r, x) in enumerate(top):
            t.add_row(str(i + 1), s, escape(r), signed(x, 4))
        console.print(t)
        if _timing(result):
            console.print(f"{result.label()} took {_timing(result)}.")


@register(EdgeCircuit)
class EdgeCircuitView(View):
    figures = {"graph": edge_graph, "faithfulness": faithfulness_curve_figure, "agreement": agreement_figure}

    def title(self, result) -> str:
        return f"Edge circuit ({result.attribution.label()})"

    def subtitle(self, result) -> str:
        row = result.faithfulness_at(result.top_edges)
        f = f", faithfulness {row['faithfulness']:.2f}" if row and result.normalised_meaningful else ""
        return f"{result.attribution.label()} circuit of {result.top_edges} edges{f}"

    def _facts(self, result) -> dict:
        row = result.faithfulness_at(result.top_edges) or {}
        facts = {
            "method": f"{result.attribution.label()}"
            + (f", {result.attribution.ig_steps} steps" if result.attribution.ig_steps else ""),
            "edges scored": f"{result.attribution.n_edges:,}",
            "time": _timing(result.attribution),
            "metric clean / corrupted": f"{result.clean:.3f} / {result.corrupt:.3f}",
        }
        if result.gap:
            facts["clean - corrupted gap (95% interval)"] = gap_text(result.gap)
        if result.normalised_meaningful:
            facts[f"faithfulness, top {result.top_edges} edges"] = (
                f"{row['faithfulness']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" if row else "not measured"
            )
        else:  # a share of a gap that is no gap means nothing: the metric itself
            facts[f"metric with the top {result.top_edges} edges kept"] = (
                f"{row['metric']:.3f} (faithfulness not meaningful: see the note)" if row else "not measured"
            )
        if result.agreement:
            a = result.agreement
            facts["attribution vs patching"] = (
                f"Spearman {a['spearman']:.2f} over {a['n']} edges; same sign {a['sign_agreement']:.0%}"
            )
        if result.stability:
            j = ", ".join(f"top {k}: {v:.2f}" for k, v in result.stability["jaccard"].items())
            facts[f"overlap, seeds {result.stability['seeds']}"] = f"Jaccard {j}"
        return facts

    def sections(self, result) -> list[Section]:
        a = result.attribution
        body = (
            gap_warning_html(result)
            + kv_html(self._facts(result))
            + plotted(edge_graph, result, result.top_edges)
            + plotted(faithfulness_curve_figure, result)
            + table_html(
                ["edges kept", "faithfulness", "95% low", "95% high", "metric"],
                [
                    [
                        r["n_edges"],
                        round(r["faithfulness"], 3),
                        round(r["low"], 3),
                        round(r["high"], 3),
                        round(r["metric"], 3),
                    ]
                    for r in result.curve
                ],
            )  # fmt: skip
            + (plotted(agreement_figure, result) if result.agreement else "")
            + table_html(["rank", "sender", "receiver", "score"], _edge_rows(a, max(result.top_edges, 20)))
        )
        return [Section("edge-circuit", f"Edge circuit: {a.label()} and its faithfulness", body)]

    def legend(self, result) -> dict[str, str]:
        keys = ["edge", f"{result.attribution.label()} score", "faithfulness"]
        keys += ["rank agreement"] if result.agreement else []
        keys += ["overlap"] if result.stability else []
        return {k: EDGE_DEFINITIONS[k] for k in keys}

    def notebook_figure(self, result):
        return edge_graph(result, result.top_edges)

    def terminal(self, result, console) -> None:
        EdgeScoresView().terminal(result.attribution, console)
        for k, v in self._facts(result).items():
            console.print(f"{escape(str(k))}: {escape(str(v))}", highlight=False)
