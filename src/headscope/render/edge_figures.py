"""Pictures of edge attribution: the circuit as a layered graph, and the faithfulness curve.

The graph is a networkx ``MultiDiGraph`` (one edge per receiving input) drawn by networkx on matplotlib, its nodes in columns by
their point in the forward pass (input -> layer 0's heads -> MLP0 -> ... -> logits). networkx is
pure Python and already installed with torch; graphviz would lay out edges more neatly but needs
its ``dot`` binary, which many users lack. networkx draws each edge as an arc (matplotlib's
``arc3``) that may pass through the nodes between its ends, so :class:`_Routes` chooses where each
edge runs: the least-bent arc that keeps clear of every node it does not connect, or, where no arc
does, a route with its bends in the gaps beside the node columns. It decides at draw time, from
where the nodes are on the drawn figure, so the figure stays clear at any size it is drawn at.
"""

from __future__ import annotations

import re

import numpy as np
from matplotlib.patches import ConnectionStyle
from matplotlib.path import Path

from ..results.edge_results import EdgeCircuit, EdgeScores
from ._mpl import plt, tight_layout
from .circuit_figures import gap_title

_KIND_STYLE = {"q": "dotted", "k": "solid", "v": "dashed", "mlp": "solid", "logits": "solid"}
#: How far each receiving input's edges bend: a sender that feeds a head's query, key and value draws three
#: separate arcs (one graph edge per input; the graph is a multigraph, so none replaces another).
_KIND_BEND = {"q": -0.12, "k": 0.05, "v": 0.22, "mlp": 0.05, "logits": 0.05}
#: Node marker area (points squared, as networkx and ``scatter`` take it) and the room in points an edge keeps from
#: a node it does not connect (half the widest edge, 2.25, and a little air).
_NODE_SIZE = 1300  # points^2: a 36 pt circle holds 'L18KV2' at 7.5 pt
_CLEARANCE = 4.0
#: Bends added to all of a sender -> node pair's arcs when their own bends cross a node: the least bent first.
_SHIFTS = sorted((round(0.1 * i, 1) for i in range(-5, 6)), key=lambda x: (abs(x), x < 0))


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
    up and down in turn so that fewer edges that skip columns have to bend around the nodes between."""
    cols: dict[int, list] = {}
    for n, d in g.nodes(data=True):
        cols.setdefault(d["subset"], []).append(n)
    pos = {}
    for c, nodes in cols.items():
        for i, n in enumerate(sorted(nodes)):
            pos[n] = (float(c), (len(nodes) - 1) / 2 - i + 0.4 * ((c % 3) - 1))
    return pos


class _Routes:
    """Where each edge of the graph runs on the drawn axes, decided for all of them at once when the axes are
    drawn (again whenever their size changes), in display units from where the nodes are drawn.

    A sender -> node pair's arcs (one per receiving input) keep their bends (:data:`_KIND_BEND`) and are all
    bent further by the least shift in :data:`_SHIFTS` that keeps every one of them clear of the nodes the pair
    does not connect and inside the axes. Where no shift does, each arc is replaced by a route: level out of its
    sender, an S-bend in the gap after the sender's column to the nearest level that passes every node between at a
    distance, an S-bend in the gap before the receiver's column to the receiver's level (square bends where an S
    would graze a node; routes that overlap in columns take different levels where they can). Pairs are placed in
    the graph's edge order, the strongest edge's first, so the strongest get the most direct routes.
    """

    def __init__(self, ax, pos: dict, edges: list[tuple]):
        self.ax, self.pos, self.edges = ax, pos, edges
        self._key = b""
        self._paths: dict[tuple, Path] = {}

    def style(self, edge: tuple) -> _Routed:
        """The connection style that draws ``edge`` along its route (set on its arrow)."""
        return _Routed(self, edge)

    def path(self, edge: tuple) -> Path:
        """``edge``'s route in display units, from its sender's centre to its receiver's."""
        key = self.ax.transData.transform([(0.0, 0.0), (1.0, 1.0)]).tobytes() + np.array(self.ax.bbox.bounds).tobytes()
        if key != self._key:  # first drawn, or drawn at another size
            self._paths, self._key = self._decide(), key
        return self._paths[edge]

    def _decide(self) -> dict[tuple, Path]:
        px = self.ax.figure.dpi / 72.0
        at = {n: self.ax.transData.transform(xy) for n, xy in self.pos.items()}
        r = (np.sqrt(_NODE_SIZE) / 2 + _CLEARANCE) * px
        pairs: dict[tuple, list] = {}
        for e in self.edges:
            pairs.setdefault(e[:2], []).append(e)
        paths: dict[tuple, Path] = {}
        used: dict = {}  # where the routes so far bend and run (:meth:`_route`)
        for (u, v), es in pairs.items():
            others = np.array([xy for n, xy in at.items() if n not in (u, v)]).reshape(-1, 2)
            for shift in _SHIFTS:
                arcs = [ConnectionStyle.Arc3(rad=_KIND_BEND[e[2]] + shift).connect(at[u], at[v]) for e in es]
                if all(_clears(a, others, r, self.ax.bbox) for a in arcs):
                    break
            else:
                arcs = [self._route(at, u, v, others, r, used) for _ in es]
            paths.update(zip(es, arcs))
        return paths

    def _route(self, at: dict, u, v, others: np.ndarray, r: float, used: dict) -> Path:
        """A route from ``u`` to ``v``: a bend in the gap after ``u``'s column and one in the gap before ``v``'s
        (each a little beside the routes already bent there), along the level nearest the two ends that passes
        the nodes between at ``r`` or more (``used``: the routes so far, their bends' x and their levels); one
        bend between neighbouring columns."""
        px = self.ax.figure.dpi / 72.0
        (xa, ya), (xb, yb) = at[u], at[v]
        t = self.ax.transData
        room = max(0.0, (t.transform((1.0, 0.0))[0] - t.transform((0.0, 0.0))[0]) / 2 - r)  # a gap's, either side
        x1, x2 = (
            t.transform((x, 0.0))[0] + np.clip(5 * px * _beside(used.setdefault(("gap", x), [])), -room, room)
            for x in (self.pos[u][0] + 0.5, self.pos[v][0] - 0.5)
        )
        box = self.ax.bbox
        levels = np.concatenate([[ya, yb], np.arange(box.y0 + r, box.y1 - r, px)])  # the ends' own among them
        between = others[(others[:, 0] > x1 - r) & (others[:, 0] < x2 + r), 1]
        blocked = (np.abs(levels[:, None] - between[None, :]) < r).any(axis=1)
        # the nearest clear level; of equally near ones, one of the ends' own (a bend fewer)
        cost = np.abs(levels - ya) + np.abs(levels - yb) + 1e-3 * np.minimum(np.abs(levels - ya), np.abs(levels - yb))
        cost += 1e6 * blocked
        for lo, hi, y in used.setdefault("levels", []):  # a route along the same columns: keep apart if there is room
            if lo < x2 and x1 < hi:
                cost += 1e3 * (np.abs(levels - y) < 5 * px)
        y = float(levels[np.argmin(cost)])
        used["levels"].append((x1, x2, y))
        steps = [(x1, ya, y), (x2, y, yb)] if x2 - x1 > 20 * px else [((x1 + x2) / 2, ya, yb)]
        for bend in (10 * px, 0.0):  # S-bends, or square ones where an S would graze a node
            path = _stepped((xa, ya), steps, (xb, yb), bend)
            if _clears(path, others, r, box):
                break
        return path


def _beside(taken: list) -> int:
    """The next place beside the routes bent in one gap: 0, 1, -1, 2, -2, ... (and take it)."""
    n = len(taken)
    taken.append(n)
    return (n + 1) // 2 * (1 if n % 2 else -1)


class _Routed(ConnectionStyle._Base):
    """A matplotlib connection style that draws one edge along its :class:`_Routes` route; matplotlib's own base
    class clips it to the nodes' edges (the arrow's ``shrinkA``/``shrinkB``) as it does for ``arc3``."""

    def __init__(self, routes: _Routes, edge: tuple):
        self.routes, self.edge = routes, edge

    def connect(self, posA, posB) -> Path:
        return self.routes.path(self.edge)


def _clears(path: Path, centres: np.ndarray, r: float, box) -> bool:
    """Whether ``path`` stays inside ``box`` and never comes within ``r`` of a point of ``centres`` (display units;
    its ends lie outside those circles, so not crossing one's outline is staying outside it; ``filled=False``, or an
    arc that bends around a node would count as crossing it)."""
    ext = path.get_extents()
    if ext.x0 < box.x0 or ext.y0 < box.y0 or ext.x1 > box.x1 or ext.y1 > box.y1:
        return False
    near = centres[
        (centres[:, 0] > ext.x0 - r) & (centres[:, 0] < ext.x1 + r)
        & (centres[:, 1] > ext.y0 - r) & (centres[:, 1] < ext.y1 + r)
    ]  # fmt: skip
    return not any(path.intersects_path(Path.circle(tuple(c), r), filled=False) for c in near)


def _stepped(start: tuple, steps: list, end: tuple, bend: float) -> Path:
    """Level from ``start``, changing level at each ``(x, from y, to y)`` of ``steps`` by an S-bend from
    ``x - bend`` to ``x + bend`` (a cubic Bezier, level at both ends; a square step where ``bend`` is 0), to ``end``."""
    verts, codes = [start], [Path.MOVETO]
    for x, y0, y1 in steps:
        if abs(y1 - y0) > 1e-6:
            verts += [(x - bend, y0), (x, y0), (x, y1), (x + bend, y1)]
            codes += [Path.LINETO, Path.CURVE4, Path.CURVE4, Path.CURVE4]
    return Path([*verts, end], [*codes, Path.LINETO])


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
            figsize=(min(16.0, 2.0 + 1.0 * len(used)), min(14.0, 2.8 + 0.9 * max(2, per_column))), layout="constrained"
        )
    else:
        fig = ax.figure
    biggest = max((abs(x) for _, _, x in top), default=1.0) or 1.0
    xs, ys = np.array(list(pos.values())).T
    ax.set_xlim(xs.min() - 0.6, xs.max() + 0.6)
    ax.set_ylim(ys.min() - 0.9, ys.max() + 0.9)  # room above and below the columns for edges routed around them
    routes = _Routes(ax, pos, list(g.edges(keys=True)))
    for kind, style in _KIND_STYLE.items():
        edges = [(u, v, k) for u, v, k, d in g.edges(keys=True, data=True) if d["kind"] == kind]
        if not edges:
            continue
        sc = np.array([g.edges[e]["score"] for e in edges])
        arrows = nx.draw_networkx_edges(
            g, pos, edgelist=edges, ax=ax, width=0.5 + 4.0 * np.abs(sc) / biggest, style=style,
            edge_color=["#c0392b" if x > 0 else "#2471a3" for x in sc], arrows=True, arrowsize=8,
            node_size=_NODE_SIZE,
        )  # fmt: skip
        for e, arrow in zip(edges, arrows):  # networkx's arc3 would cross the nodes between: run it on its route
            arrow.set_connectionstyle(routes.style(e))
    nx.draw_networkx_nodes(
        g, pos, ax=ax, node_size=_NODE_SIZE, node_color="#f4f4f4", edgecolors="#555555", linewidths=0.8
    )
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=7.5)
    ax.set_axis_off()
    what = "EAP-IG" if scores.method == "eap-ig" else "EAP"
    ax.set_title(
        f"Top {len(top)} edges by |{what} score| ({scores.task.get('metric', '')}); width = |score|, "
        "blue = corrupting it lowers the metric, red = raises it;\nreceiving input: key solid, query dotted, "
        "value dashed (KV = a key/value head shared by a group of query heads)",
        fontsize=9,
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
    ax.set_xlabel(f"edges kept clean (top by |score|, of {res.attribution.n_edges:,})")
    ax.set_ylabel("faithfulness (1 = clean, 0 = corrupted)" if res.normalised_meaningful else f"{metric}, mean")
    ax.set_title(f"Faithfulness of the {res.attribution.label()} circuit ({metric}){gap_title(res)}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    tight_layout(fig)
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
    tight_layout(fig)
    return fig
