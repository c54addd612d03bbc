"""Results of edge attribution (EAP, EAP-IG) and of the circuit it picks: scores, faithfulness, agreement, stability.

:class:`EdgeScores` holds one score per edge (an estimate); :class:`EdgeCircuit` adds what was
measured by patching: the faithfulness curve (the metric with only the top edges clean), how
well the estimates rank edges against each edge patched alone, and whether a second seed of the
task picks the same edges. Plain data: the view (``render/views/edge_view.py``) draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import BadInput
from ..settings import whole_number
from .base import GapChecked, Result, rounded

#: Definitions for the legend and ``--help``.
EDGE_DEFINITIONS = {
    "edge": "sender -> receiver. Senders: the embeddings (input), each head's output z_h W_O_h, each MLP's output. "
    "Receivers: each head's query (.q), key (.k) and value (.v) input separately, each MLP's input, the logits. "
    "On grouped-query models keys and values belong to key/value heads (L18KV2.k), shared by a group of query heads.",
    "EAP score": "sum over positions of (corrupted - clean output of the sender) . d metric / d (receiver's input), "
    "mean over examples: the first-order change in the metric if that one edge carried its corrupted value. "
    "Negative = corrupting the edge lowers the metric. Source: Syed et al. 2023 (EAP).",
    "EAP-IG score": "the same with the gradient averaged over inputs on the straight path from the corrupted to "
    "the clean embeddings (alpha = k/steps, k = 0..steps-1). Source: Hanna et al. 2024, 'Have Faith in "
    "Faithfulness' (EAP-IG-inputs).",
    "faithfulness": "the metric with only the circuit's edges clean and every other edge given its corrupted "
    "value (each receiver's input = corrupted input + the circuit senders' (patched - corrupted) outputs), "
    "normalised (mean patched - mean corrupted) / (mean clean - mean corrupted): 1 = clean behaviour, "
    "0 = corrupted. Measured by patching. 95% percentile bootstrap over examples, each resampled with its "
    "own clean - corrupted gap.",
    "rank agreement": "Spearman correlation between each sampled edge's attribution score and the change in "
    "the metric when that edge alone is patched to its corrupted value (everything else clean).",
    "overlap": "Jaccard index |A & B| / |A | B| of the top-k edge sets found on two seeds of the task data.",
}


#: Why edge attribution does not read back from ``circuit.json`` (the read-back error and the docstrings say it).
NOT_READ_BACK = (
    "circuit.json keeps the attribution's strongest edges (--top-edges of them, at least 50), not the score of every "
    "edge (70,651 on SmolLM2), which its edge count, ranking and larger graphs need; edges.csv beside it has "
    "every edge's score"
)

READ_EDGES = "read edges.csv and faithfulness.csv (pandas.read_csv) for its numbers"


@dataclass(repr=False, eq=False)  # Result gives both
class EdgeScores(Result):
    """One attribution score per edge: ``scores[sender, receiver]`` (NaN where the pair is not an edge).

    Does not read back from its JSON: :meth:`to_dict` keeps the top edges only (:data:`NOT_READ_BACK`).
    """

    json_what: ClassVar[str] = "edge attribution"
    json_keys: ClassVar[frozenset[str]] = frozenset({"top_edges", "n_edges", "n_senders", "n_receivers"})

    model: dict
    task: dict
    method: str  # "eap" or "eap-ig"
    ig_steps: int | None
    senders: list[str]
    receivers: list[str]
    scores: np.ndarray  # [n_senders, n_receivers]
    n_kv_heads: int = 0
    seconds: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_edges(self) -> int:
        return int(np.isfinite(self.scores).sum())

    def ranked(self) -> np.ndarray:
        """Edge indices ``[(sender, receiver), ...]`` by descending ``|score|`` (ties: sender, then receiver order)."""
        u, v = np.nonzero(np.isfinite(self.scores))
        order = np.lexsort((v, u, -np.abs(self.scores[u, v])))
        return np.stack([u[order], v[order]], axis=1)

    def top(self, k: int) -> list[tuple[str, str, float]]:
        """The ``k`` edges of largest ``|score|``: ``(sender, receiver, score)``."""
        if whole_number("k", k) < 0:
            raise BadInput(f"k={k!r}: the number of edges must be a whole number >= 0", hint="e.g. top(20)")
        return [(self.senders[u], self.receivers[v], float(self.scores[u, v])) for u, v in self.ranked()[:k]]

    def label(self) -> str:
        return "EAP-IG" if self.method == "eap-ig" else "EAP"

    def to_frame(self):
        import pandas as pd

        r = self.ranked()
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(r) + 1),
                "sender": [self.senders[u] for u in r[:, 0]],
                "receiver": [self.receivers[v] for v in r[:, 1]],
                "score": self.scores[r[:, 0], r[:, 1]],
            }
        )

    def to_dict(self, top: int = 200) -> dict:
        return {
            "kind": "edge-attribution",
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "ig_steps": self.ig_steps,
            "n_edges": self.n_edges,
            "n_senders": len(self.senders),
            "n_receivers": len(self.receivers),
            "top_edges": [{"sender": s, "receiver": r, "score": rounded(x)} for s, r, x in self.top(top)],
            "seconds": {k: rounded(v, 2) for k, v in self.seconds.items()},
            "definitions": {k: EDGE_DEFINITIONS[k] for k in ("edge", f"{self.label()} score")},
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> EdgeScores:
        """Not available: :meth:`to_dict` keeps the top edges only (:data:`NOT_READ_BACK`)."""
        raise BadInput(f"edge attribution does not read back: {NOT_READ_BACK}", hint=READ_EDGES)

    def plot_graph(self, k: int = 30, **kwargs):
        """The top ``k`` edges as a layered graph (matplotlib figure)."""
        return self._figure("graph", k, **kwargs)


@dataclass(repr=False, eq=False)  # Result gives both
class EdgeCircuit(GapChecked, Result):
    """An attributed circuit and what patching says about it.

    ``curve`` rows: ``n_edges`` kept clean, ``faithfulness`` (the normalised mean metric),
    ``low``/``high`` (95% bootstrap over examples), ``metric`` (the mean patched metric). ``agreement``: ``spearman``, ``n``,
    ``sign_agreement`` and the sampled ``edges`` (``edge``, ``attribution``, ``patched``).
    ``stability``: ``seeds`` and ``jaccard`` per top-k (or empty when not measured).

    Does not read back from ``circuit.json``: it keeps the attribution's top edges, not every edge's
    score (:data:`NOT_READ_BACK`).
    """

    json_what: ClassVar[str] = "an edge circuit"
    json_keys: ClassVar[frozenset[str]] = frozenset({"attribution", "circuit", "faithfulness"})

    attribution: EdgeScores
    top_edges: int
    clean: float  # mean metric, clean prompts
    corrupt: float  # mean metric, corrupted prompts
    curve: list[dict] = field(default_factory=list)
    agreement: dict = field(default_factory=dict)
    stability: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the clean - corrupted gap the faithfulness divides by (:func:`headscope.circuits.tasks.clean_corrupt_gap`)
    gap: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> EdgeCircuit:
        """Not available: its attribution keeps the top edges only (:data:`NOT_READ_BACK`)."""
        raise BadInput(f"an edge circuit does not read back: {NOT_READ_BACK}", hint=READ_EDGES)

    def circuit(self) -> list[tuple[str, str, float]]:
        return self.attribution.top(self.top_edges)

    def faithfulness_at(self, k: int) -> dict | None:
        return next((row for row in self.curve if row["n_edges"] == k), None)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.curve)

    def to_dict(self) -> dict:
        a = self.attribution
        return {
            "kind": "edge-circuit",
            "attribution": a.to_dict(top=max(self.top_edges, 50)),
            "top_edges": self.top_edges,
            "circuit": [{"sender": s, "receiver": r, "score": rounded(x)} for s, r, x in self.circuit()],
            "metric": {"clean": rounded(self.clean), "corrupt": rounded(self.corrupt)},
            "gap": {k: rounded(v) if isinstance(v, float) else v for k, v in self.gap.items()},
            "normalised_meaningful": self.normalised_meaningful,
            "faithfulness": [{k: rounded(v) for k, v in row.items()} for row in self.curve],
            "rank_agreement": {
                k: (rounded(v) if k != "edges" else [{kk: rounded(vv) for kk, vv in e.items()} for e in v])
                for k, v in self.agreement.items()
            },
            "stability": {
                k: rounded(v) if not isinstance(v, dict) else {str(kk): rounded(vv) for kk, vv in v.items()}
                for k, v in self.stability.items()
            },
            "definitions": dict(EDGE_DEFINITIONS),
            "notes": list(self.notes),
        }

    def plot_graph(self, k: int | None = None, **kwargs):
        """The circuit (its top ``k`` edges, default ``top_edges``) as a layered graph."""
        return self._figure("graph", k or self.top_edges, **kwargs)

    def plot_faithfulness(self, **kwargs):
        """The faithfulness curve: normalised metric against the number of edges kept, with intervals."""
        return self._figure("faithfulness", **kwargs)
