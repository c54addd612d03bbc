"""Pictures of edge attribution: the circuit as a layered graph, and the faithfulness curve.

The graph is a networkx ``MultiDiGraph`` (one edge per receiving input) drawn by networkx on matplotlib, its nodes in columns by
their point in the forward pass (input -> layer 0's heads -> MLP0 -> ... -> logits). networkx is
pure Python and already installed with torch; graphviz would lay out edges more neatly but needs
its ``dot`` binary, which many users lack.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from ..results.edge_results import EdgeCircuit, EdgeScores
from ._mpl import plt
from .circuit_figures import gap_title

_KIND_STYLE = {"q": "dotted", "k": "solid", "v": "dashed", "mlp": "solid", "logits": "solid"}
#: How far each receiving input's edges bend: a sender that feeds a head's query, key and value draws three
#: separate arcs (one graph edge per input; the graph is a multigraph, so none replaces another).
_KIND_BEND = {"q": -0.12, "k": 0.05, "v": 0.22, "mlp": 0.05, "logits": 0.05}


def _stage(name: str, n_layers: int) -> int:
    """Column of a node: input 0, layer l's attention 2l+1, its MLP 2l+2, logits 2L+1."""
    if name == "input":
        return 0
    if name == "logits":
        return 2 * n_layers + 1
    m = re.match(r"MLP(\d+)", name)
    if m:
        return 2 * int(m.group(1)) + 2
    return 2 * int(re.match(r"L(\d+)", name).group(1)) + 1  # type: ignore[union-attr]


def _receiver_node(receiver: str) -> tuple[str, str]:
    """``("L18KV2", "k")``, ``("L1H0", "q")``, ``("MLP3", "mlp")``, ``("logits", "logits")``."""
    if "." in receiver:
        node, kind = receiver.rsplit(".", 1)
        return node, kind
    return receiver, "mlp" if receiver.startswith("MLP") else "logits"


def _layered_positions(g) -> dict:
    """Column ``subset`` left to right; nodes of a column stacked one unit apart, columns staggered
    up and down in turn so an edge that skips columns does not pass through the nodes between."""
    cols: dict[int, list] = {}
    for n, d in g.nodes(data=True):
        cols.setdefault(d["subset"], []).append(n)
    pos = {}
    for c, nodes in cols.items():
        for i, n in enumerate(sorted(nodes)):
            pos[n] = (float(c), (len(nodes) - 1) / 2 - i + 0.4 * ((c % 3) - 1))
    return pos


def edge_graph(res: EdgeScores | EdgeCircuit, k: int | None = None, ax=None):
    """The top ``k`` edges by ``|score|``: nodes in columns by layer, edge width by ``|score|``, colour by sign,
    line style by the receiving input (query dotted, key solid, value dashed). Default ``k``: a circuit's own
    ``top_edges`` (the edges its faithfulness was measured on), else 30."""
    import networkx as nx

    if k is None:
        k = res.top_edges if isinstance(res, EdgeCircuit) else 30
    scores = res.attribution if isinstance(res, EdgeCircuit) else res
    top = scores.top(k)
    n_layers = int(scores.model.get("n_layers", 0)) or 1 + max(
        int(m.group(1)) for s, _, _ in top for m in [re.match(r"L(\d+)", s)] if m
    )
    g = nx.MultiDiGraph()  # one edge per (sender, receiving input): a DiGraph kept only the last of L1H0's q/k/v
    for s, r, x in top:
        node, kind = _receiver_node(r)
        for n in (s, node):
            g.add_node(n, subset=_stage(n, n_layers))
        g.add_edge(s, node, key=kind, score=x, kind=kind)
    used = sorted({d["subset"] for _, d in g.nodes(data=True)})
    for n in g.nodes:  # compress the columns to those with a node
        g.nodes[n]["subset"] = used.index(g.nodes[n]["subset"])
    pos = _layered_positions(g)
    per_column = max(np.bincount([d["subset"] for _, d in g.nodes(data=True)]))
    if ax is None:
        fig, ax = plt.subplots(
            figsize=(min(18.0, 2.5 + 1.2 * len(used)), min(14.0, 2.8 + 0.9 * max(2, per_column))), layout="constrained"
        )
    else:
        fig = ax.figure
    biggest = max((abs(x) for _, _, x in top), default=1.0) or 1.0
    for (kind, style), far in itertools.product(_KIND_STYLE.items(), (False, True)):
        # an edge that skips columns bends, so it does not run straight through the nodes between
        edges = [
            (u, v, k) for u, v, k, d in g.edges(keys=True, data=True)
            if d["kind"] == kind and (g.nodes[v]["subset"] - g.nodes[u]["subset"] > 1) == far
        ]  # fmt: skip
        if not edges:
            continue
        sc = np.array([g.edges[e]["score"] for e in edges])
        nx.draw_networkx_edges(
            g, pos, edgelist=edges, ax=ax, width=0.5 + 4.0 * np.abs(sc) / biggest, style=style,
            edge_color=["#c0392b" if x > 0 else "#2471a3" for x in sc], arrows=True, arrowsize=8,
            connectionstyle=f"arc3,rad={_KIND_BEND[kind] + (0.2 if far else 0.0)}", node_size=900,
        )  # fmt: skip
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=900, node_color="#f4f4f4", edgecolors="#555555", linewidths=0.8)
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=6)
    ax.set_axis_off()
    what = "EAP-IG" if scores.method == "eap-ig" else "EAP"
    ax.set_title(
        f"Top {len(top)} edges by |{what} score| ({scores.task.get('metric', '')}); width = |score|, "
        "blue = corrupting it lowers the metric, red = raises it;\nreceiving input: key solid, query dotted, "
        "value dashed (KV = a key/value head shared by a group of query heads)",
        fontsize=7,
    )
    return fig


def faithfulness_curve_figure(res: EdgeCircuit, ax=None):
    """Normalised metric with only the top-n edges clean, against n, with 95% intervals over examples."""
    rows = res.curve
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
    else:
        fig = ax.figure
    n = np.array([r["n_edges"] for r in rows], dtype=float)
    metric = res.attribution.task.get("metric")
    if res.normalised_meaningful:
        f = np.array([r["faithfulness"] for r in rows])
        lo = np.array([r["low"] for r in rows])
        hi = np.array([r["high"] for r in rows])
        ax.fill_between(n, lo, hi, color="#2471a3", alpha=0.2, lw=0, label="95% interval over examples")
        ax.plot(n, f, "o-", color="#2471a3", ms=3, label="measured by patching")
        ax.axhline(1.0, color="k", lw=0.6, ls="--")
        ax.axhline(0.0, color="k", lw=0.6)
    else:  # the clean - corrupted gap is no gap: the metric itself, not a share of it
        ax.plot(n, [r["metric"] for r in rows], "o-", color="#2471a3", ms=3, label="measured by patching")
        ax.axhline(res.clean, color="k", lw=0.6, ls="--", label="clean run")
        ax.axhline(res.corrupt, color="k", lw=0.6, label="corrupted run")
    ax.axvline(res.top_edges, color="#c0392b", lw=0.8, ls=":", label=f"the circuit ({res.top_edges} edges)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, float(n.max()) * 1.3)
    ax.set_xlabel(f"edges kept clean (top by |score|, of {res.attribution.n_edges})")
    ax.set_ylabel("faithfulness (1 = clean, 0 = corrupted)" if res.normalised_meaningful else f"{metric}, mean")
    ax.set_title(f"Faithfulness of the {res.attribution.label()} circuit ({metric}){gap_title(res)}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def agreement_figure(res: EdgeCircuit, ax=None):
    """Attribution score against the measured change when each sampled edge alone is corrupted."""
    edges = res.agreement.get("edges", [])
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.0))
    else:
        fig = ax.figure
    a = np.array([e["attribution"] for e in edges])
    p = np.array([e["patched"] for e in edges])
    ax.scatter(a, p, s=10, color="#2471a3")
    if len(a):
        lim = float(np.nanmax(np.abs(np.concatenate([a, p])))) * 1.05 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.6, ls="--")
    ax.axhline(0, color="#999999", lw=0.5)
    ax.axvline(0, color="#999999", lw=0.5)
    ax.set_xlabel(f"{res.attribution.label()} score")
    ax.set_ylabel("metric change, edge patched alone")
    rho = res.agreement.get("spearman", float("nan"))
    ax.set_title(f"Attribution vs patching, {len(edges)} edges (Spearman {rho:.2f})", fontsize=8)
    fig.tight_layout()
    return fig
