"""Result values of the QK analysis: numbers in, frames/JSON/figures out, no model inside.

Each class carries one idea, converts to a tidy :mod:`pandas` frame (``.to_frame()``) and a
JSON-ready dict (``.to_dict()``); its figures (``plot*``) and notebook view come from the view
registered for its type (:mod:`headscope.render.views.qk_parts`), so computing never needs matplotlib.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import BadInput
from ..head_labels import Head, as_head, head_label, top_k
from ..models.inputs import TokenSequence
from ..scores import default_thresholds
from ..settings import ScanSettings
from .base import Result, how_many, in_range, one_of, rounded

#: What a composition score is and is not: the same words as the logits page's K-composition sources.
WEIGHT_PRODUCT = "a weight product, not a measured path"
#: The stripes a decomposition is averaged over, in prose (headscope.qk.decompose.STRIPES holds their pairs).
STRIPE_NAMES = {"induction": "the induction stripe", "previous_token": "the previous-token stripe"}
#: The sentence every place that shows composition scores carries.
COMPOSITION_CAVEAT = (
    f"A composition score is {WEIGHT_PRODUCT}: by the weights alone, which earlier heads could feed a later "
    "head's queries, keys (K-composition) or values; `headscope circuit` measures a path (path patching, with "
    "its interval)."
)

#: The quick induction scan that ranks heads when none are given (headscope.qk.pick_heads). Smaller than
#: `headscope induction`'s (ScanSettings' defaults, 10 x 50), so its scores differ from the other pages':
#: at 10 x 50 the whole `headscope qk` on SmolLM2 took 188 s instead of 51 s, scan 124 s instead of 13 s
#: (one run each, on 2 CPU cores shared with other jobs).
QUICK_SCAN = {"seq_len": 20, "batch": 4, "repeats": 2, "seed": 0}


def scan_source(settings: dict | None = None) -> str:
    """Where a QK analysis' scan scores come from, in words: the quick scan, or a given scan's ``settings``.

    >>> scan_source()
    "a quick scan (4 sequences x 20 random tokens x 2 repeats, seed 0, no causal check; `headscope induction`'s scan of 10 x 50 gives the scores the other pages report)"
    """
    if settings is None:
        full = ScanSettings()
        return (
            f"a quick scan ({QUICK_SCAN['batch']} sequences x {QUICK_SCAN['seq_len']} random tokens x "
            f"{QUICK_SCAN['repeats']} repeats, seed {QUICK_SCAN['seed']}, no causal check; `headscope induction`'s "
            f"scan of {full.batch} x {full.seq_len} gives the scores the other pages report)"
        )
    size = {k: settings.get(k) for k in ("batch", "seq_len", "repeats", "seed")}
    if None in size.values():
        return "the given induction scan"
    return (
        f"the given induction scan ({size['batch']} sequences x {size['seq_len']} random tokens x "
        f"{size['repeats']} repeats, seed {size['seed']})"
    )


#: Definitions and sources of the QK quantities, for the legend.
QK_DEFINITIONS = {
    "QK score": "Pre-softmax score of query i against key j, q_i . k_j / sqrt(d_head), rotary applied where the model "
    "has it (what hook_attn_scores holds); the causal mask hides keys after the query. "
    "Source: Elhage et al. 2021 (the QK circuit).",
    "QK decomposition": "The score split over the residual stream's components (token and position embeddings, each "
    "earlier head, each MLP), key side and query side, with the normalisation scale frozen at "
    "each token's actual value so the score is linear in them; each side sums to the score. "
    "'vs mean key' subtracts the component's mean over every key the query sees (what the "
    "softmax responds to). Source: Elhage et al. 2021 (path expansion of the QK circuit).",
    "positional QK": "How a head's score depends on position alone: W_pos W_Q W_K^T W_pos^T / sqrt(d_head) for learned "
    "positions (GPT-2); for rotary models the expected score between a query at i and a key at "
    "i - offset, inputs drawn from the texts' residual vectors. Source: Elhage et al. 2021.",
    "token QK": "x_t W_Q W_K^T x_s^T / sqrt(d_head) on normalised token embeddings x, and the top singular directions "
    "of the full vocab x vocab circuit, taken from its rank-d_head factors (never formed). On a rotary model it "
    "is x_t W_Q M_d W_K^T x_s^T at the offset d (key d tokens before the query) that the head gives the most "
    "attention on the analysed texts, M_d the model's own RoPE; W_Q W_K^T alone is the score only at offset 0. "
    "Source: Elhage et al. 2021.",
    "composition": "||W_A W_B||_F / (||W_A||_F ||W_B||_F), W_A an earlier head's OV circuit W_V W_O, W_B a later "
    "head's W_Q W_K^T (Q-), W_K W_Q^T (K-) or W_V W_O (V-composition); 'excess' subtracts the mean "
    "score of random Gaussian matrices of the same shapes. " + COMPOSITION_CAVEAT + " "
    "Source: Elhage et al. 2021; baseline subtraction as in ARENA 1.2.",
    "head names": "L18H6 is layer 18, head 6 (both from 0); --head accepts L18H6 or 18.6.",
}

#: A source head "is" a previous-token head when its previous-token score reaches the registry's threshold.
PREV_TOKEN_THRESHOLD = default_thresholds()["previous_token"]

#: What :meth:`QKDecomposition.raises_most` picks (the terminal table's "raises most" column, qk.json's ``raises_most``).
RAISES_MOST_DEF = (
    "the component with the largest positive 'vs mean key' value on that side: the one that most raises the score "
    "at these keys above the query's other keys (what the softmax responds to); null where no component raises it"
)


def _raiser(top: tuple[str, float] | None) -> dict | None:
    return None if top is None else {"component": top[0], "vs_mean_key": rounded(top[1])}


SCORE_DEF = "pre-softmax score q_i . k_j / sqrt(d_head) (rotary applied); causal mask shown as masked (NaN)"
#: How positions reach the score, by whether the model is rotary (None: not known, e.g. a hand-built result).
SCORE_POSITIONS = {
    True: "rotary applied",
    False: "no rotary embedding: this model's positions reach q and k only through the residual stream",
    None: "rotary applied where the model has it",
}


def score_definition(rotary: bool | None) -> str:
    """:data:`SCORE_DEF` saying rotary only where the model is rotary (``rotary``: the model's, None: not known).

    >>> score_definition(False).startswith("pre-softmax score q_i . k_j / sqrt(d_head) (no rotary embedding")
    True
    >>> score_definition(True) == SCORE_DEF
    True
    """
    return SCORE_DEF.replace("rotary applied", SCORE_POSITIONS[rotary])


FROZEN_NOTE = (
    "normalisation scale frozen: every component is divided by the actual token's ln1 scale "
    "(and centred first for LayerNorm), so the score is linear in the components"
)


@dataclass(repr=False, eq=False)  # Result gives both
class QKScores(Result):
    """Live scores and patterns. ``scores[s][n]`` is ``[query, key]`` for sequence ``s``, head ``heads[n]``.

    Score: ``q_i . k_j / sqrt(d_head)`` (rotary applied on a rotary model), NaN where the causal mask hides key
    j > i. Pattern: the softmax of the scores, rows summing to 1. ``rotary``: whether the model is rotary (None:
    not known); :attr:`definition` says rotary only where it is.
    """

    model_name: str
    heads: list[tuple[int, int]]
    sequences: list[TokenSequence]
    scores: list[np.ndarray]  # per sequence: [n_heads_chosen, T, T]
    patterns: list[np.ndarray]
    rotary: bool | None = None

    @property
    def definition(self) -> str:
        """What the scores are, rotary named only where the model is rotary (:func:`score_definition`)."""
        return score_definition(self.rotary)

    def to_frame(self):
        import pandas as pd

        rows = []
        for s, seq in enumerate(self.sequences):
            T = len(seq)
            qi, kj = np.tril_indices(T)
            for n, (layer, head) in enumerate(self.heads):
                rows.append(
                    pd.DataFrame(
                        {
                            "sequence": s,
                            "layer": layer,
                            "head": head,
                            "query_pos": qi,
                            "key_pos": kj,
                            "query_token": [seq.labels[i] for i in qi],
                            "key_token": [seq.labels[j] for j in kj],
                            "score": self.scores[s][n][qi, kj],
                            "attention": self.patterns[s][n][qi, kj],
                        }
                    )
                )
        return pd.concat(rows, ignore_index=True)

    def to_dict(self) -> dict:
        return {
            "definition": self.definition,
            "heads": [head_label(l, h) for l, h in self.heads],
            "sequences": [
                {
                    "text": seq.text,
                    "tokens": seq.labels,
                    "token_ids": seq.ids,
                    "notes": seq.notes,
                    "heads": {
                        head_label(l, h): {
                            "scores": rounded(self.scores[s][n], 4),
                            "pattern": rounded(self.patterns[s][n], 4),
                        }
                        for n, (l, h) in enumerate(self.heads)
                    },
                }
                for s, seq in enumerate(self.sequences)
            ],
        }

    def head_index(self, head) -> int:
        """Where ``head`` (``"L1H2"``, ``"1.2"``, ``(1, 2)``) is in :attr:`heads`; a head not computed is BadInput."""
        lh = as_head(head)
        if lh not in self.heads:
            raise BadInput(
                f"head {head_label(*lh)} is not in this result; it has {', '.join(head_label(*h) for h in self.heads)}",
                hint=f"use one of those, or compute it: qk_scores(model, {head_label(*lh)!r}, texts)",
            )
        return self.heads.index(lh)

    def attention_by_offset(self, head, skip_first: bool = True) -> np.ndarray:
        """Attention mass of ``head`` at each offset ``i - j`` (0, 1, ...), summed over every query of every text.

        ``skip_first``: leave out key 0 (the first token, where many heads park attention).
        """
        n = self.head_index(head)
        T = max(len(seq) for seq in self.sequences)
        mass = np.zeros(T)
        for p in self.patterns:
            p = p[n]
            for d in range(p.shape[0]):
                diag = np.diagonal(p, -d)  # queries d.., keys 0..
                mass[d] += diag[1:].sum() if skip_first else diag.sum()  # diag[0] is key 0
        return mass

    def used_offset(self, head, skip_first: bool = True) -> tuple[int, float]:
        """The offset ``i - j`` that ``head`` gives the most attention on these texts, and its share of that attention.

        The share is over all attention to keys other than the first token (``skip_first``).
        """
        mass = self.attention_by_offset(head, skip_first)
        d = int(np.argmax(mass))
        return d, float(mass[d] / mass.sum()) if mass.sum() > 0 else 0.0

    def plot(self, sequence: int = 0, head=None):
        """Scores and pattern of one head on one sequence, token x token (queries down, keys across)."""
        sequence = in_range(sequence, len(self.sequences), "sequence")
        return self._figure("plot_live", sequence, 0 if head is None else self.head_index(head))

    def plot_grid(self, sequence: int = 0):
        return self._figure("plot_live_grid", in_range(sequence, len(self.sequences), "sequence"))


@dataclass(repr=False, eq=False)  # Result gives both
class QKDecomposition(Result):
    """Head ``layer.head``'s score split over residual components (see :mod:`headscope.qk.decompose`).

    ``key_contrib[c]``: ``q_i . k_c(j) / sqrt(d_head)`` for key-side component c, averaged over
    ``pairs``; sums to ``score``. ``query_contrib`` likewise for the query side.
    ``*_vs_mean``: the same minus its mean over every key the query sees; sums to
    score minus the query's mean score. ``pair_contrib[a, b]``: query component a x key
    component b. ``model_score`` is ``hook_attn_scores`` at the same pairs.
    """

    model_name: str
    layer: int
    head: int
    sequence: TokenSequence
    pairs: list[tuple[int, int]]
    how: str
    query_names: list[str]
    query_kinds: list[str]
    key_names: list[str]
    key_kinds: list[str]
    key_contrib: np.ndarray
    key_vs_mean: np.ndarray
    query_contrib: np.ndarray
    query_vs_mean: np.ndarray
    pair_contrib: np.ndarray  # [C_query, C_key]
    score: float
    model_score: float
    max_abs_error: float
    attention: float
    note: str = FROZEN_NOTE
    sequence_index: int = 0  # which of the analysed sequences (identical texts stay apart)
    #: the stripe the pairs are ("induction", "previous_token"); None: one chosen query/key pair
    stripe: str | None = None

    @property
    def label(self) -> str:
        return head_label(self.layer, self.head)

    def to_frame(self):
        """One row per (side, component), ranked by |contribution| within each side."""
        import pandas as pd

        frames = []
        for side, names, kinds, c, rel in (
            ("key", self.key_names, self.key_kinds, self.key_contrib, self.key_vs_mean),
            ("query", self.query_names, self.query_kinds, self.query_contrib, self.query_vs_mean),
        ):
            f = pd.DataFrame({"side": side, "component": names, "kind": kinds, "contribution": c, "vs_mean_key": rel})
            f["rank"] = f["contribution"].abs().rank(ascending=False, method="first").astype(int)
            frames.append(f.sort_values("rank"))
        out = pd.concat(frames, ignore_index=True)
        out.insert(0, "head", self.label)
        return out

    def top(self, side: str = "key", k: int = 5, by: str = "contribution") -> list[tuple[str, float]]:
        """The ``k`` ``side`` ("key" or "query") components with the largest ``|by|`` ("contribution" or "vs_mean_key")."""
        one_of(side, ("key", "query"), "side")
        one_of(by, ("contribution", "vs_mean_key"), "by")
        k = how_many(k)
        f = self.to_frame()
        f = f[f.side == side]
        f = f.reindex(f[by].abs().sort_values(ascending=False).index)
        return list(zip(f.component.head(k), f[by].head(k).astype(float)))

    def raises_most(self, side: str = "key") -> tuple[str, float] | None:
        """The ``side`` component that most raises the score above the query's other keys, and by how much.

        The largest positive ``vs_mean_key`` on that side (the measure the softmax responds to;
        ``float_error`` is never picked); None where no component raises it. :meth:`top` ranks by
        ``|value|`` instead, so its first entry may be a component that lowers the score.

        >>> d = headscope.decompose_qk(model, "1.2", " a b c a b c")
        >>> name, v = d.raises_most("key")
        >>> v > 0 and bool(v == max(x for n, x in zip(d.key_names, d.key_vs_mean) if n != "float_error"))
        True
        """
        if side not in ("key", "query"):
            raise ValueError(f"side must be 'key' or 'query', not {side!r}")
        names, kinds, rel = (
            (self.key_names, self.key_kinds, self.key_vs_mean)
            if side == "key"
            else (self.query_names, self.query_kinds, self.query_vs_mean)
        )
        best = max(
            ((n, float(v)) for n, kind, v in zip(names, kinds, rel) if kind != "rounding" and v > 0),
            key=lambda nv: nv[1],
            default=None,
        )
        return best

    def top_pairs(self, k: int = 10) -> list[tuple[str, str, float]]:
        flat = np.argsort(-np.abs(self.pair_contrib), axis=None)[:k]
        a, b = np.unravel_index(flat, self.pair_contrib.shape)
        return [(self.query_names[i], self.key_names[j], float(self.pair_contrib[i, j])) for i, j in zip(a, b)]

    def to_dict(self) -> dict:
        return {
            "head": self.label,
            "text": self.sequence.text,
            "pairs": [list(p) for p in self.pairs],
            "how": self.how,
            "stripe": self.stripe,
            "pairs_tokens": [[self.sequence.labels[i], self.sequence.labels[j]] for i, j in self.pairs[:50]],
            "score": rounded(self.score),
            "model_score": rounded(self.model_score),
            "max_abs_error": self.max_abs_error,
            "attention": rounded(self.attention),
            "note": self.note,
            "key_side": {
                n: {"contribution": rounded(float(c)), "vs_mean_key": rounded(float(r))}
                for n, c, r in zip(self.key_names, self.key_contrib, self.key_vs_mean)
            },
            "query_side": {
                n: {"contribution": rounded(float(c)), "vs_mean_key": rounded(float(r))}
                for n, c, r in zip(self.query_names, self.query_contrib, self.query_vs_mean)
            },
            "top_pairs": [
                {"query_component": a, "key_component": b, "contribution": rounded(v)} for a, b, v in self.top_pairs()
            ],
            "raises_most": {"definition": RAISES_MOST_DEF}
            | {side: _raiser(self.raises_most(side)) for side in ("key", "query")},
        }

    def plot(self, top: int = 12):
        return self._figure("plot_decomposition", top)


@dataclass(repr=False, eq=False)  # Result gives both
class PositionalQK(Result):
    """What a head's QK circuit does with positions alone, per head.

    ``offset_curve[n][d]``: expected score of a query at position i with a key at i - d.
    ``matrix[n]`` (learned positions only): ``W_pos W_Q W_K^T W_pos^T / sqrt(d_head)``
    over the first positions, queries down.
    """

    model_name: str
    heads: list[tuple[int, int]]
    offsets: np.ndarray  # [n_offsets]
    offset_curve: np.ndarray  # [n_heads_chosen, n_offsets]
    matrix: np.ndarray | None  # [n_heads_chosen, n_pos, n_pos] or None (rotary)
    method: str
    rope_theta: float | None = None

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(
            [
                {"layer": l, "head": h, "offset": int(d), "score": float(self.offset_curve[n, m])}
                for n, (l, h) in enumerate(self.heads)
                for m, d in enumerate(self.offsets)
            ]
        )

    def to_dict(self) -> dict:
        out = {
            "method": self.method,
            "rope_theta": self.rope_theta,
            "offsets": self.offsets.tolist(),
            "heads": {
                head_label(l, h): {
                    "offset_curve": rounded(self.offset_curve[n], 5),
                    "peak_offset": int(self.offsets[np.nanargmax(self.offset_curve[n])]),
                }
                for n, (l, h) in enumerate(self.heads)
            },
        }
        if self.matrix is not None:
            for n, (l, h) in enumerate(self.heads):
                out["heads"][head_label(l, h)]["matrix"] = rounded(self.matrix[n], 4)
        return out

    def plot(self):
        return self._figure("plot_positional")


@dataclass(repr=False, eq=False)  # Result gives both
class TokenQK(Result):
    """One head's token QK circuit ``x_t W_Q W_K^T x_s^T / sqrt(d_head)``, x the normalised embedding.

    ``matrix``: the circuit on ``token_ids`` (queries down). ``singular_values`` and
    ``directions``: the top of the SVD of the full vocab x vocab circuit, computed from its
    d_head-rank factors (never materialised); each direction lists the query tokens and
    key tokens at its two ends, which pair up to raise the score.
    """

    model_name: str
    layer: int
    head: int
    token_ids: list[int]
    labels: list[str]
    matrix: np.ndarray  # [n_tokens, n_tokens]
    singular_values: np.ndarray  # [k]
    directions: list[dict] = field(default_factory=list)
    method: str = ""
    offset: int | None = None  # rotary: key at query - offset; None: no rotary positions (position-free form)

    @property
    def label(self) -> str:
        return head_label(self.layer, self.head)

    @property
    def where(self) -> str:
        """The position the circuit is taken at, for every label: ``"offset 3"`` or ``"position-free"``."""
        return "position-free" if self.offset is None else f"offset {self.offset}"

    def top_pairs(self, k: int = 10) -> list[tuple[str, str, float]]:
        flat = np.argsort(-self.matrix, axis=None)[:k]
        a, b = np.unravel_index(flat, self.matrix.shape)
        return [(self.labels[i], self.labels[j], float(self.matrix[i, j])) for i, j in zip(a, b)]

    def to_frame(self):
        import pandas as pd

        n = len(self.labels)
        a, b = np.meshgrid(range(n), range(n), indexing="ij")
        return pd.DataFrame(
            {
                "head": self.label,
                "offset": self.offset,
                "query_token": [self.labels[i] for i in a.ravel()],
                "key_token": [self.labels[j] for j in b.ravel()],
                "score": self.matrix.ravel(),
            }
        )

    def to_dict(self) -> dict:
        return {
            "head": self.label,
            "offset": self.offset,
            "method": self.method,
            "tokens": self.labels,
            "token_ids": self.token_ids,
            "matrix": rounded(self.matrix, 4),
            "top_pairs": [{"query": q, "key": k, "score": rounded(v, 4)} for q, k, v in self.top_pairs()],
            "singular_values": rounded(self.singular_values, 4),
            "directions": self.directions,
        }

    def plot(self):
        return self._figure("plot_token_qk")


@dataclass(repr=False, eq=False)  # Result gives both
class CompositionScores(Result):
    """Composition scores (Elhage et al.): ``scores[kind][la, ha, lb, hb]`` for earlier head
    ``la.ha`` into later head ``lb.hb``, kind Q, K or V; NaN unless ``lb > la``.

    ``||W_A W_B||_F / (||W_A||_F ||W_B||_F)``, W_A the earlier OV, W_B the later head's
    ``W_Q W_K^T`` (Q), ``W_K W_Q^T`` (K) or ``W_V W_O`` (V). ``baseline``: the same for random
    Gaussian matrices of the same shapes; ``excess(kind)`` subtracts it.
    """

    model_name: str
    scores: dict[str, np.ndarray]
    baseline: float
    baseline_std: float
    d_model: int
    d_head: int
    note: str = (
        "norm gains folded into the reading weights; for LayerNorm models reads and writes are "
        "centred along d_model (TransformerLens fold_ln + center_writing_weights convention)"
    )
    #: rotary models: the offset the Q/K forms are taken at (0: W_Q W_K^T alone); None: no rotary positions
    offset: int | None = None

    @property
    def where(self) -> str:
        """For every label: ``"Q/K at offset 0"`` on rotary models, ``"position-free"`` otherwise."""
        return "position-free" if self.offset is None else f"Q/K at offset {self.offset}"

    @property
    def shape(self) -> tuple[int, int]:
        L, H = next(iter(self.scores.values())).shape[:2]
        return L, H

    def excess(self, kind: str = "K") -> np.ndarray:
        return self.scores[kind] - self.baseline

    def top_sources(self, layer: int, head: int, kind: str = "K", k: int = 5) -> list[tuple[int, int, float]]:
        """The earlier heads whose output the later head's ``kind`` side reads most: (layer, head, excess)."""
        L, H = self.shape
        if not (isinstance(layer, numbers.Integral) and isinstance(head, numbers.Integral)):
            raise BadInput(
                f"top_sources takes the later head as two integers, layer and head; got {layer!r}, {head!r}",
                hint="e.g. top_sources(18, 6, 'K', 5) for L18H6",
            )
        if not (0 <= layer < L and 0 <= head < H):
            raise BadInput(f"head L{layer}H{head} does not exist: layers 0..{L - 1}, heads 0..{H - 1}")
        one_of(kind, tuple(self.scores), "composition kind (computed here)")
        k = how_many(k)
        s = self.excess(kind)[:, :, layer, head]
        order = [i for i in np.argsort(-np.nan_to_num(s, nan=-np.inf), axis=None) if not np.isnan(s.flat[i])][:k]
        H = s.shape[1]
        return [(int(i // H), int(i % H), float(s.flat[i])) for i in order]

    def to_frame(self):
        import pandas as pd

        frames = []
        for kind, s in self.scores.items():
            la, ha, lb, hb = np.nonzero(~np.isnan(s))
            v = s[la, ha, lb, hb]
            frames.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "src_layer": la,
                        "src_head": ha,
                        "dst_layer": lb,
                        "dst_head": hb,
                        "offset": self.offset if kind != "V" else None,
                        "score": v,
                        "excess": v - self.baseline,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def to_dict(self, top: int = 5) -> dict:
        L, H = self.shape
        return {
            "definition": "||W_A W_B||_F / (||W_A||_F ||W_B||_F); W_A = earlier W_V W_O; W_B = later W_Q W_K^T (Q), "
            "W_K W_Q^T (K), W_V W_O (V); excess = score - random baseline",
            "baseline": self.baseline,
            "baseline_std": self.baseline_std,
            "offset": self.offset,
            "where": self.where,
            "note": self.note,
            "top_sources": {
                kind: {
                    head_label(l, h): [
                        {"head": head_label(a, b), "excess": rounded(v, 5)}
                        for a, b, v in self.top_sources(l, h, kind, top)
                    ]
                    for l in range(1, L)
                    for h in range(H)
                }
                for kind in self.scores
            },
        }

    def plot(self, kind: str | None = None):
        return self._figure("plot_composition", kind)


@dataclass(repr=False, eq=False)  # Result gives both
class OffsetComposition(Result):
    """Q/K-composition into a few later heads at each rotary offset (Elhage et al.'s score, RoPE applied).

    ``scores[kind][n, la, ha, m]``: earlier head ``la.ha`` into ``heads[n]`` with the later head's
    form taken between a query at i and a key at i - ``offsets[m]`` (``W_Q M_d W_K^T`` for Q,
    ``W_K M_d^T W_Q^T`` for K). Sources are ranked by their excess averaged over the offsets.
    """

    model_name: str
    heads: list[tuple[int, int]]
    offsets: np.ndarray  # [n_offsets]
    scores: dict[str, np.ndarray]  # kind -> [n_heads, L, H, n_offsets]
    baseline: float
    baseline_std: float

    @property
    def span(self) -> str:
        """The offsets, for labels: ``"offsets 0-63"``."""
        lo, hi = int(self.offsets.min()), int(self.offsets.max())
        return f"offset {lo}" if lo == hi else f"offsets {lo}-{hi}"

    @property
    def where(self) -> str:
        """For every label: ``"mean over offsets 0-63"``."""
        return f"mean over {self.span}"

    def excess(self, head, kind: str = "K") -> np.ndarray:
        """``[L, H, n_offsets]`` score minus the random baseline for later head ``head``."""
        return self.scores[kind][self.heads.index(as_head(head))] - self.baseline

    def top_sources(self, layer: int, head: int, kind: str = "K", k: int = 5) -> list[tuple[int, int, float]]:
        """The earlier heads with the largest excess averaged over the offsets: (layer, head, mean excess)."""
        if (layer, head) not in self.heads:
            return []
        mean = self.excess((layer, head), kind).mean(-1)
        order = [i for i in np.argsort(-np.nan_to_num(mean, nan=-np.inf), axis=None) if not np.isnan(mean.flat[i])]
        H = mean.shape[1]
        return [(int(i // H), int(i % H), float(mean.flat[i])) for i in order[:k]]

    def at(self, later, earlier, kind: str = "K", offset: int = 0) -> float:
        """Excess of ``earlier`` into ``later`` at one offset."""
        m = int(np.flatnonzero(self.offsets == offset)[0])
        return float(self.excess(later, kind)[(*as_head(earlier), m)])

    def to_frame(self):
        import pandas as pd

        frames = []
        for kind, s in self.scores.items():
            n, la, ha, m = np.nonzero(~np.isnan(s))
            v = s[n, la, ha, m]
            frames.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "src_layer": la,
                        "src_head": ha,
                        "dst_layer": [self.heads[i][0] for i in n],
                        "dst_head": [self.heads[i][1] for i in n],
                        "offset": self.offsets[m],
                        "score": v,
                        "excess": v - self.baseline,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def to_dict(self, top: int = 5) -> dict:
        return {
            "definition": "Elhage et al.'s composition score with the later head's form at rotary offset d: "
            "W_B = W_Q M_d W_K^T (Q), W_K M_d^T W_Q^T (K), M_d the model's RoPE between a query at i and a key at "
            f"i - d; {self.span}; sources ranked by the excess averaged over these offsets",
            "offsets": self.offsets.tolist(),
            "baseline": self.baseline,
            "top_sources": {
                kind: {
                    head_label(l, h): [
                        {
                            "head": head_label(a, b),
                            "mean_excess": round(v, 5),
                            "excess_by_offset": rounded(self.excess((l, h), kind)[a, b], 5),
                        }
                        for a, b, v in self.top_sources(l, h, kind, top)
                    ]
                    for l, h in self.heads
                }
                for kind in self.scores
            },
        }


#: Why :class:`QKAnalysis` does not read back from ``qk.json``.
QK_NOT_READ_BACK = (
    "qk.json keeps each decomposition's 10 strongest query x key component pairs and the composition's top "
    "sources, not what the analysis holds: each decomposition's whole pair matrix (components x components, "
    "with each component's kind) and the composition score of every pair of heads ([L, H, L, H] per kind: "
    "72,900 numbers per kind on SmolLM2; composition.csv has them)"
)


@dataclass(repr=False, eq=False)  # Result gives both
class QKAnalysis(Result):
    """Every QK view of the chosen heads on the chosen texts (see each member's class).

    Does not read back from ``qk.json`` (:data:`QK_NOT_READ_BACK` says why).
    """

    json_file: ClassVar[str | None] = "qk.json"
    json_what: ClassVar[str] = "a QK analysis"
    json_keys: ClassVar[frozenset[str]] = frozenset({"live", "decompositions", "positional"})

    model: dict
    heads: list[Head]
    reasons: dict[str, str]
    live: QKScores
    decompositions: list[QKDecomposition]  # sequence-major: [s * len(heads) + n]
    positional: PositionalQK
    token_circuits: list[TokenQK]
    composition: CompositionScores
    #: rotary models: Q/K-composition into the chosen heads at offsets 0-63 (None without rotary positions)
    composition_by_offset: OffsetComposition | None = None
    #: rotary models: each chosen head's most-attended offset on the texts and its share (first-token key left out)
    used_offsets: dict[str, tuple[int, float]] = field(default_factory=dict)
    scan_scores: dict[str, np.ndarray] | None = None  # the scan's scores [L, H] by name (see scan_from)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: decompositions left out because they did not reproduce the model's scores: head, sequence, error, reason
    skipped_decompositions: list[dict] = field(default_factory=list)
    #: where ``scan_scores`` come from, in words (:func:`scan_source`); None: the quick scan
    scan_from: str | None = None

    @property
    def scan_words(self) -> str:
        """Where the scan scores shown beside the heads come from (every place that shows them says it)."""
        return self.scan_from or scan_source()

    @classmethod
    def from_dict(cls, d: dict) -> QKAnalysis:
        """Not available: ``qk.json`` does not hold the whole analysis (:data:`QK_NOT_READ_BACK`)."""
        raise BadInput(
            f"a QK analysis does not read back: {QK_NOT_READ_BACK}",
            hint="load qk.json with json.load (or the CSVs beside it with pandas) to query its numbers",
        )

    def decomposition(self, layer: int, head: int, sequence: int = 0) -> QKDecomposition | None:
        """The decomposition of ``layer.head`` on text ``sequence``; None where it was left out (it did not add up)."""
        for d in self.decompositions:
            if (d.layer, d.head, d.sequence_index) == (layer, head, sequence):
                return d
        return None

    def head_score(self, name: str, layer: int, head: int) -> float | None:
        return None if self.scan_scores is None else float(self.scan_scores[name][layer, head])

    @property
    def k_where(self) -> str:
        """Where the K-composition sources are read, for every label: ``"mean over offsets 0-63"`` or ``"position-free"``."""
        c = self.composition_by_offset
        return "position-free" if c is None else f"mean over {c.span}"

    def k_sources(self, k: int = 5) -> dict[str, list[dict]]:
        """For each chosen head, its strongest K-composition sources and their previous-token score.

        Rotary models: ranked by the excess averaged over offsets 0-63 (:attr:`composition_by_offset`),
        with the excess at offset 0 and at the head's most-used offset beside it.
        """
        out: dict[str, list[dict]] = {}
        by = self.composition_by_offset
        for l, h in self.heads:
            rows = []
            top = by.top_sources(l, h, "K", k) if by is not None else self.composition.top_sources(l, h, "K", k)
            for a, b, v in top:
                row = {"head": head_label(a, b), "excess": rounded(v, 5), "where": self.k_where}
                if by is not None:
                    used = self.used_offsets.get(head_label(l, h), (0, 0.0))[0]
                    row["excess_offset_0"] = rounded(by.at((l, h), (a, b), "K", 0), 5)
                    if used in by.offsets:
                        row[f"excess_offset_{used}"] = rounded(by.at((l, h), (a, b), "K", used), 5)
                row["previous_token"] = (
                    None if self.scan_scores is None else rounded(float(self.scan_scores["previous_token"][a, b]), 4)
                )
                rows.append(row)
            out[head_label(l, h)] = rows
        return out

    def findings(self) -> list[str]:
        """Plain sentences: what the K-composition sources (weights) and the decompositions (this text) show."""
        out: list[str] = []
        if self.scan_scores is None:
            return out
        for l, h in self.heads:
            ind = self.head_score("induction", l, h)
            if ind is None or ind < default_thresholds()["induction"] or l == 0:
                continue
            src = self.k_sources(3)[head_label(l, h)]
            listed = ", ".join(f"{s['head']} ({s['excess']:+.3f}, prev-token {s['previous_token']:.2f})" for s in src)
            prev = [s for s in src if s["previous_token"] >= PREV_TOKEN_THRESHOLD]
            verdict = (
                f"{len(prev)} of the top {len(src)} {'is a previous-token head' if len(prev) == 1 else 'are previous-token heads'}"
                f" (score >= {PREV_TOKEN_THRESHOLD})"
                if prev
                else "none of them is a previous-token head; best previous-token heads: "
                + ", ".join(f"{head_label(a, b)} ({v:.2f})" for a, b, v in top_k(self.scan_scores["previous_token"], 3))
            )
            out.append(
                f"induction head {head_label(l, h)} (induction score {ind:.2f}): strongest K-composition sources "
                f"by the weights ({self.k_where}; {WEIGHT_PRODUCT}: heads that could feed its keys) {listed}; {verdict}"
            )
        for dec in self.decompositions:
            stripe = dec.stripe
            role = self.head_score(stripe, dec.layer, dec.head) if stripe in STRIPE_NAMES else None
            if stripe is None or role is None or role < default_thresholds()[stripe]:
                continue
            top = dec.raises_most("key")
            said = (
                f"the key-side component that most raises the score above the query's other keys is "
                f"{top[0]} ({top[1]:+.2f})"
                if top is not None
                else "no key-side component raises the score above the query's other keys"
            )
            out.append(
                f"head {dec.label} on {STRIPE_NAMES[stripe]} of text {dec.sequence_index + 1} "
                f"(mean attention {dec.attention:.2f} there): {said}"
            )
        if out:
            out.append(f"the induction and previous-token scores above are from {self.scan_words}")
        return out

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "heads": [
                {
                    "head": head_label(l, h),
                    "reason": self.reasons.get(head_label(l, h), "chosen with --head"),
                    "scan": None
                    if self.scan_scores is None
                    else {k: rounded(float(v[l, h]), 4) for k, v in self.scan_scores.items()},
                }
                for l, h in self.heads
            ],
            "notes": self.notes,
            "findings": self.findings(),
            "quick_scan": QUICK_SCAN,
            "scan_scores_from": self.scan_words,
            "live": self.live.to_dict(),
            "decompositions": [d.to_dict() | {"sequence": d.sequence_index} for d in self.decompositions],
            "decompositions_skipped": self.skipped_decompositions,
            "positional": self.positional.to_dict(),
            "token_circuits": [t.to_dict() for t in self.token_circuits],
            "composition": self.composition.to_dict(),
            "composition_by_offset": None
            if self.composition_by_offset is None
            else self.composition_by_offset.to_dict(),
            "used_offsets": {k: {"offset": d, "share": round(v, 4)} for k, (d, v) in self.used_offsets.items()},
            "k_composition_sources": self.k_sources(),
            "timings": {k: rounded(v, 2) for k, v in self.timings.items()},
        }

    def to_frame(self):
        """One row per chosen head: why, quick-scan scores, the key- and query-side components that most raise
        the score (:meth:`QKDecomposition.raises_most`, sequence 0; None where none raises it or the
        decomposition was left out), top K-composition source."""
        import pandas as pd

        rows = []
        sources = self.k_sources(1)
        for l, h in self.heads:
            dec = self.decomposition(l, h)  # sequence 0; None where it did not reproduce the model's scores
            key, qry = (dec.raises_most(side) if dec is not None else None for side in ("key", "query"))
            src = sources[head_label(l, h)]
            used = self.used_offsets.get(head_label(l, h))
            rows.append(
                {
                    "head": head_label(l, h),
                    "reason": self.reasons.get(head_label(l, h), "chosen with --head"),
                    "induction": self.head_score("induction", l, h),
                    "previous_token": self.head_score("previous_token", l, h),
                    "key_raises_most": key[0] if key else None,
                    "key_raises_most_vs_mean_key": key[1] if key else None,
                    "query_raises_most": qry[0] if qry else None,
                    "query_raises_most_vs_mean_key": qry[1] if qry else None,
                    "top_key_component": key[0] if key else None,  # the old name of key_raises_most, kept for callers
                    "used_offset": used[0] if used else None,
                    "top_k_source": src[0]["head"] if src else None,
                    "k_excess": src[0]["excess"] if src else None,
                    "k_where": self.k_where,
                }
            )
        return pd.DataFrame(rows)
