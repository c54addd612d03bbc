"""Result values of the logit analysis: numbers in, frames/JSON/figures out, no model inside.

Each class converts to a tidy :mod:`pandas` frame (``.to_frame()``) and a JSON-ready dict
(``.to_dict()``), draws itself through :mod:`headscope.render.logit_figures` (imported
lazily, so computing never needs matplotlib) and shows a table plus its figure in a
notebook (``_repr_html_``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..head_labels import head_label
from ..models.inputs import TokenSequence
from ..results import Result, _html, rounded

DLA_DEFINITION = (
    "Direct logit attribution: a component's output (a head's z W_O, read at the input of the attention "
    "output projection) through the final norm with its scale frozen at the position's actual value and the "
    "unembedding, for the logit of the actual next token, minus the mean logit over the vocabulary "
    "(centred: the softmax ignores a shared shift). All components sum to the model's centred logit."
)
REPEAT_DEFINITION = (
    "Mean direct logit effect (centred, see direct logit attribution) of each head on the actual next token, "
    "on repeated random tokens [BOS] + r * repeats: first_repeat averages targets in repeat 1 (no earlier copy "
    "to look back on), later_repeat targets in repeats 2..R (the copied token), as the scan's loss does."
)
#: How a source token is read, per effective-embedding convention (headscope.models.embedding).
OV_EMBEDDINGS = {
    "block0": "the token's block-0 effective embedding (the token alone through block 0: embedding + its attention "
    "to itself + MLP0; McDougall et al. 2023, the embedding the copying and copy-suppression scores read)",
    "embed": "the token's bare embedding W_E (the direct token path only)",
    "mlp0": "the first MLP's output on the token's bare embedding (Gould et al. 2023)",
}


def ov_definition(embedding: str = "block0") -> str:
    """The OV-row definition for the effective-embedding convention ``embedding``."""
    return (
        "Row of the full OV circuit x W_V W_O W_U for a source token t (Elhage et al. 2021), kept factored: "
        f"(x_t W_V W_O) W_U with x_t {OV_EMBEDDINGS.get(embedding, embedding)}, normalised as the head's ln1 would "
        "see it alone (centred for LayerNorm, divided by its RMS; gains folded into W_V and W_U), biases left out, "
        "centred over the vocabulary. It is what attending to t makes the head add to each logit, in units of one "
        "final-norm scale; self_rank is t's own rank in its row (1 = the head promotes t above every other token)."
    )


OV_DEFINITION = ov_definition("block0")


@dataclass
class LogitAttribution(Result):
    """Direct logit attribution on one token sequence (see :mod:`headscope.logits.dla`).

    Position ``p`` (``0..T-2``) holds token ``sequence.labels[p]`` and is scored on the next
    token ``target_ids[p] = sequence.ids[p + 1]``. ``heads [P, L, H]``: each head's direct
    effect on that centred logit; ``components[name] [P]``: embeddings, each MLP, biases,
    ``float_error``; ``heads.sum((1, 2)) + sum(components) == logit``; ``model_logit [P]``
    is the model's own centred logit (``max_abs_error`` compares them); ``scale [P]`` is the
    frozen final-norm scale.
    """

    model_name: str
    sequence: TokenSequence
    heads: np.ndarray
    components: dict[str, np.ndarray]
    logit: np.ndarray
    model_logit: np.ndarray
    scale: np.ndarray
    definition: str = DLA_DEFINITION

    @property
    def target_ids(self) -> list[int]:
        return list(self.sequence.ids[1:])

    @property
    def token_labels(self) -> list[str]:
        """Token at each scored position (raw text; see :func:`headscope.tokens.visible_whitespace`)."""
        return list(self.sequence.labels[:-1])

    @property
    def target_labels(self) -> list[str]:
        return list(self.sequence.labels[1:])

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.logit - self.model_logit).max())

    def head(self, layer: int, head: int) -> np.ndarray:
        """``[P]`` direct effect of one head at every position."""
        return self.heads[:, layer, head]

    def to_frame(self):
        """One row per (position, head): position, token, target, layer, head, effect."""
        import pandas as pd

        P, L, H = self.heads.shape
        p, l, h = (a.ravel() for a in np.meshgrid(np.arange(P), np.arange(L), np.arange(H), indexing="ij"))
        return pd.DataFrame(
            {
                "position": p,
                "token": np.array(self.token_labels, dtype=object)[p],
                "target": np.array(self.target_labels, dtype=object)[p],
                "layer": l,
                "head": h,
                "label": [head_label(a, b) for a, b in zip(l, h)],
                "effect": self.heads.ravel(),
            }
        )

    def components_frame(self):
        """One row per (position, non-head component), plus the heads' total and the logit."""
        import pandas as pd

        rows = {
            "position": np.arange(len(self.logit)),
            "token": self.token_labels,
            "target": self.target_labels,
            "heads": self.heads.sum((1, 2)),
            **self.components,
            "logit": self.logit,
            "model_logit": self.model_logit,
        }
        return pd.DataFrame(rows)

    def top(self, k: int = 10, sign: int = 1):
        """The ``k`` (position, head) cells that push the actual next token most (``sign=-1``: suppress most)."""
        f = self.to_frame()
        return f.reindex((sign * f["effect"]).sort_values(ascending=False).index).head(k).reset_index(drop=True)

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "definition": self.definition,
            "text": self.sequence.text,
            "notes": self.sequence.notes,
            "tokens": self.token_labels,
            "targets": self.target_labels,
            "target_ids": self.target_ids,
            "heads": rounded(self.heads, 5),
            "components": {k: rounded(v, 5) for k, v in self.components.items()},
            "logit": rounded(self.logit, 5),
            "model_logit": rounded(self.model_logit, 5),
            "scale": rounded(self.scale, 5),
            "max_abs_error": self.max_abs_error,
            "top": self.top(10).drop(columns=["label"]).to_dict(orient="records"),
        }

    def plot(self, heads=None, **kwargs):
        """Tokens x heads heatmap of the direct effect (``heads``: list of (layer, head); default: the strongest)."""
        from ..render.logit_figures import token_head_heatmap

        return token_head_heatmap(self, heads, **kwargs)

    def _repr_html_(self) -> str:
        f = self.top(10)
        return _html(f"Direct logit attribution, {self.model_name} (largest pushes on the next token)", f, self.plot())


@dataclass
class RepeatLogitEffects(Result):
    """Each head's mean direct effect on repeated random tokens (see :mod:`headscope.logits.repeats`).

    ``first [L, H]`` and ``later [L, H]``: mean centred direct effect on targets in repeat 1
    and in repeats 2..R. ``components_first/later``: the same means for every other component;
    ``logit_first/later``: the model's mean centred logit of the target, which everything sums to.
    """

    model_name: str
    settings: dict
    first: np.ndarray
    later: np.ndarray
    components_first: dict[str, float]
    components_later: dict[str, float]
    logit_first: float
    logit_later: float
    n_first: int  # targets averaged (batch x positions)
    n_later: int
    max_abs_error: float
    definition: str = REPEAT_DEFINITION
    timings: dict[str, float] = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        L, H = self.later.shape
        l, h = (a.ravel() for a in np.meshgrid(np.arange(L), np.arange(H), indexing="ij"))
        return pd.DataFrame(
            {
                "layer": l,
                "head": h,
                "label": [head_label(a, b) for a, b in zip(l, h)],
                "first_repeat": self.first.ravel(),
                "later_repeat": self.later.ravel(),
                "rise": (self.later - self.first).ravel(),
            }
        )

    def top(self, k: int = 5, which: str = "later") -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest mean effect on ``which`` ("later" or "first") targets."""
        a = self.later if which == "later" else self.first
        order = np.argsort(-a, axis=None)[:k]
        H = a.shape[1]
        return [(int(i // H), int(i % H), float(a.flat[i])) for i in order]

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "definition": self.definition,
            "settings": self.settings,
            "first_repeat": rounded(self.first, 5),
            "later_repeat": rounded(self.later, 5),
            "components_first_repeat": {k: rounded(v, 5) for k, v in self.components_first.items()},
            "components_later_repeat": {k: rounded(v, 5) for k, v in self.components_later.items()},
            "logit_first_repeat": rounded(self.logit_first),
            "logit_later_repeat": rounded(self.logit_later),
            "n_first": self.n_first,
            "n_later": self.n_later,
            "max_abs_error": self.max_abs_error,
            "top_later": [{"head": head_label(l, h), "effect": rounded(v)} for l, h, v in self.top(10)],
        }

    def plot(self, which: str = "later", **kwargs):
        from ..render.logit_figures import repeat_effect_heatmap

        return repeat_effect_heatmap(self, which, **kwargs)

    def _repr_html_(self) -> str:
        f = self.to_frame().sort_values("later_repeat", ascending=False)
        return _html(f"Direct logit effect on repeated tokens, {self.model_name}", f, self.plot())


@dataclass
class OVRows(Result):
    """Rows of one head's full OV circuit for chosen source tokens (see :mod:`headscope.logits.ov_rows`).

    For source token ``token_ids[i]``: ``top_ids[i]``/``top_values[i]`` the ``k`` tokens it
    makes the head promote most, ``bottom_*`` those it suppresses most (most negative first),
    ``self_value[i]`` its own entry and ``self_rank[i]`` its rank in the row (1 = top).
    """

    model_name: str
    layer: int
    head: int
    token_ids: list[int]
    token_labels: list[str]
    top_ids: np.ndarray  # [n, k]
    top_labels: list[list[str]]
    top_values: np.ndarray  # [n, k]
    bottom_ids: np.ndarray
    bottom_labels: list[list[str]]
    bottom_values: np.ndarray
    self_value: np.ndarray  # [n]
    self_rank: np.ndarray  # [n] 1-based
    d_vocab: int
    convention: str = OV_DEFINITION
    embedding: str = "block0"  # how a source token is read (headscope.models.embedding convention)

    @property
    def label(self) -> str:
        return head_label(self.layer, self.head)

    def to_frame(self):
        """One row per source token: its own value and rank, and the top/bottom tokens as text."""
        import pandas as pd

        return pd.DataFrame(
            {
                "head": self.label,
                "token": self.token_labels,
                "token_id": self.token_ids,
                "self_rank": self.self_rank,
                "self_value": self.self_value,
                "promotes": [", ".join(repr(t) for t in row[:5]) for row in self.top_labels],
                "suppresses": [", ".join(repr(t) for t in row[:5]) for row in self.bottom_labels],
            }
        )

    def to_dict(self) -> dict:
        return {
            "head": self.label,
            "model": self.model_name,
            "convention": self.convention,
            "embedding": self.embedding,
            "d_vocab": self.d_vocab,
            "tokens": [
                {
                    "token": t,
                    "token_id": int(i),
                    "self_rank": int(r),
                    "self_value": rounded(float(v)),
                    "promotes": [
                        {"token": a, "id": int(b), "value": rounded(float(c))}
                        for a, b, c in zip(self.top_labels[n], self.top_ids[n], self.top_values[n])
                    ],
                    "suppresses": [
                        {"token": a, "id": int(b), "value": rounded(float(c))}
                        for a, b, c in zip(self.bottom_labels[n], self.bottom_ids[n], self.bottom_values[n])
                    ],
                }
                for n, (t, i, r, v) in enumerate(
                    zip(self.token_labels, self.token_ids, self.self_rank, self.self_value)
                )
            ],
        }

    def _repr_html_(self) -> str:
        return _html(f"OV circuit of {self.label}, {self.model_name}", self.to_frame(), rows=30)
