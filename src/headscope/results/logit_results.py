"""Result values of the logit analysis: numbers in, frames/JSON/figures out, no model inside.

Each class converts to a tidy :mod:`pandas` frame (``.to_frame()``) and a JSON-ready dict
(``.to_dict()``); its figures (``plot*``) and notebook view come from the view registered for
its type (:mod:`headscope.render.views.logit_parts`), so computing never needs matplotlib.
The induction story's records (:class:`InductionStory`) live here too; :mod:`headscope.logits.story`
gathers them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import BadInput
from ..head_labels import Head, head_label, top_k
from ..models.inputs import TokenSequence
from ..scores import default_thresholds
from ..scores import score as declared
from ..stats import signed, with_interval
from ..tokens import visible_whitespace
from .base import Result, how_many, one_of, rounded
from .qk_results import WEIGHT_PRODUCT, CompositionScores
from .scan_result import InductionResult

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


@dataclass(repr=False, eq=False)  # Result gives both
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
        k, sign = how_many(k), one_of(sign, (1, -1), "sign")
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
        return self._figure("token_head_heatmap", heads, **kwargs)


@dataclass(repr=False, eq=False)  # Result gives both
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
        k, which = how_many(k), one_of(which, ("later", "first"), "which")
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
        return self._figure("repeat_effect_heatmap", which, **kwargs)


@dataclass(repr=False, eq=False)  # Result gives both
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

    def plot(self, index: int = 0, ax=None):
        """Source token ``token_ids[index]``'s row: the tokens it promotes and suppresses most, as bars."""
        return self._figure("ov_row_bars", index, ax=ax)

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


def story_definition(ablation: str | None = "mean", measured: bool = False) -> str:
    """The induction story's definition as a run made it: the ablation it ran (None: none, so no Δloss), and
    whether paths through later components were measured (path patching)."""
    loss = (
        f" and its ablation Δloss (a change in cross-entropy, nats: the later-repeat loss with the head's output "
        f"{ablation}-ablated minus the clean loss). The last two are different quantities in different units and are "
        "shown side by side, not compared"
        if ablation
        else ". No ablation ran (--no-ablate): no Δloss was measured"
    )
    paths = (
        "paths were measured by path patching (path effect), on the task they name."
        if measured
        else "no path through later components was measured."
    )
    return (
        "The numbers measured about one induction head, every one from the same run: its strongest K-composition "
        "sources (Elhage et al. 2021; score minus the random baseline) with their previous-token scores, its "
        "induction score (attention to the token after the earlier copy), its OV copying score and the median "
        "self-rank of source tokens in its OV rows, its direct logit effect on first- and later-repeat targets (a "
        "centred logit, logit units: what the head itself writes into the unembedding for the target)"
        + loss
        + "; "
        + paths
    )


#: The story's definition for the default run (mean ablation, no path measured): logits.json's definitions.
STORY_DEFINITION = story_definition()


def logit_definitions() -> dict[str, str]:
    """What each number of the logit analysis means and where it comes from (JSON ``definitions``, the legend)."""
    return {
        "direct logit attribution": DLA_DEFINITION,
        "direct_logit_later": declared("direct_logit_later").definition,
        "direct_logit_first": declared("direct_logit_first").definition,
        "OV circuit row": OV_DEFINITION,
        "induction story": STORY_DEFINITION,
    }


@dataclass
class InductionStory:
    """The numbers measured about one head; fields are None where that input was not given."""

    layer: int
    head: int
    induction: float
    k_sources: list[
        dict
    ]  # strongest K-composition sources: {"head", "layer", "head_index", "k_composition", "previous_token"}
    copying: float | None = None  # OV eigenvalue positivity, -1..1
    self_rank_median: float | None = None  # median self-rank over the OV source tokens given
    copies_fraction: float | None = None  # fraction of those tokens with self-rank 1
    dla_first: float | None = None  # mean direct logit effect on first-repeat targets (centred logit)
    dla_later: float | None = None  # ... on later-repeat (copied) targets (centred logit)
    ablation_delta_loss: float | None = None  # change in later-repeat cross-entropy (nats) when ablated alone
    ablation_interval: list[float] | None = None  # its 95% bootstrap interval over sequences (the causal check's)
    ablation_verdict: str | None = None  # the causal check's verdict: raises / lowers / no clear change
    # Measured by path patching (headscope.circuits), empty when not measured: the strongest senders into the
    # head's keys, and the head's paths to the logits (direct and via the strongest later heads). Each entry:
    # {"head" or "via", "effect", "low", "high"}, effect = share of the clean - corrupted gap, 95% interval.
    k_paths: list[dict] = field(default_factory=list)
    logit_paths: list[dict] = field(default_factory=list)
    paths_about: str = ""  # the task, examples and metric the paths were measured on
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return head_label(self.layer, self.head)

    @property
    def k_source(self) -> dict | None:
        return self.k_sources[0] if self.k_sources else None

    def row(self) -> dict:
        """Flat dict for a table: one row per head."""
        s = self.k_source or {}
        return {
            "head": self.label,
            "induction": self.induction,
            "k_source": s.get("head"),
            "k_composition": s.get("k_composition"),
            "source_previous_token": s.get("previous_token"),
            "copying": self.copying,
            "self_rank_median": self.self_rank_median,
            "copies_fraction": self.copies_fraction,
            "dla_first": self.dla_first,
            "dla_later": self.dla_later,
            "ablation_delta_loss": self.ablation_delta_loss,
            "ablation_low": self.ablation_interval[0] if self.ablation_interval else None,
            "ablation_high": self.ablation_interval[1] if self.ablation_interval else None,
            "ablation_verdict": self.ablation_verdict,
            "k_path_source": self.k_paths[0]["head"] if self.k_paths else None,
            "k_path_effect": self.k_paths[0]["effect"] if self.k_paths else None,
            "direct_path_effect": next((p["effect"] for p in self.logit_paths if p["via"] == "direct"), None),
        }

    def to_dict(self) -> dict:
        return {k: rounded(v) for k, v in {**asdict(self), "label": self.label}.items()}


def ablation_cell(s: InductionStory) -> str:
    """``+1.880 [+1.740, +2.030]``: a story's ablation Δloss with its 95% interval ("-" when not measured)."""
    if s.ablation_delta_loss is None:
        return "-"
    if not s.ablation_interval:
        return signed(s.ablation_delta_loss)
    lo, hi = s.ablation_interval
    return with_interval(s.ablation_delta_loss, lo, hi)


def ablation_finding(s: InductionStory) -> str:
    """The ablation Δloss in words: the causal check's verdict and the number with its interval; a number given
    without an interval is said to have none, and no verdict is drawn from it."""
    said = {"raises": "raises", "lowers": "lowers", "no clear change": "does not clearly change"}
    unit = "nats, 95% interval over sequences; a loss, not a logit: not comparable with the direct effect"
    if s.ablation_interval and s.ablation_verdict in said:
        return f"ablating it {said[s.ablation_verdict]} the later-repeat cross-entropy: {ablation_cell(s)} ({unit})"
    return (
        f"ablating it changes the later-repeat cross-entropy by {signed(s.ablation_delta_loss)} nats (given without an "
        "interval, so no verdict; a loss, not a logit: not comparable with the direct effect)"
    )


def _share(p: dict) -> str:
    return with_interval(p["effect"], p["low"], p["high"])


def _path_findings(s: InductionStory) -> list[str]:
    """The measured path effects of a story, in words (each a share of the gap with its 95% interval)."""
    out = []
    if s.k_paths:
        srcs = ", ".join(f"{p['head']} {_share(p)}" for p in s.k_paths)
        out.append(
            f"measured by path patching ({s.paths_about}), the senders whose path into its keys carries most: {srcs}"
        )
    if s.logit_paths:
        via = ", ".join(
            ("directly" if p["via"] == "direct" else f"via {p['via']}") + f" {_share(p)}" for p in s.logit_paths
        )
        out.append(f"its path to the logits carries {via}")
    return out


@dataclass(repr=False, eq=False)  # Result gives both
class InductionStories(Result):
    """Stories of several heads (e.g. the top induction heads), one table."""

    model_name: str
    stories: list[InductionStory]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([s.row() for s in self.stories])

    def to_dict(self) -> dict:
        return {"model": self.model_name, "heads": [s.to_dict() for s in self.stories]}


#: A K-composition source "is" a previous-token head at the registry's previous-token threshold.
PREV_TOKEN_THRESHOLD = default_thresholds()["previous_token"]
#: Scores of the scan that the analysis keeps per head (``repeats.csv``, the JSON's ``scan.scores``).
SCAN_SCORES = ("induction", "previous_token", "copying", "direct_logit_first", "direct_logit_later")


def arrow(token: str, target: str) -> str:
    """A position as people read it: ``·lazy → ·dog`` (whitespace visible)."""
    return f"{visible_whitespace(token)} → {visible_whitespace(target)}"


#: Why :class:`LogitAnalysis` does not read back from ``logits.json``.
LOGITS_NOT_READ_BACK = (
    "logits.json keeps the K-composition's baseline and each story head's strongest sources, not the "
    "composition score of every pair of heads that the analysis holds ([L, H, L, H] per kind: 72,900 numbers "
    "for K alone on SmolLM2), nor the token ids asked for or the whole scan (its loss by position, thresholds)"
)
LOGITS_READ_INSTEAD = "load logits.json with json.load (or the CSVs beside it with pandas) to query its numbers"


@dataclass(repr=False, eq=False)  # Result gives both
class LogitAnalysis(Result):
    """What heads write, from one run (see the module docstring); numbers only, no model inside.

    ``texts``: one :class:`~headscope.logits.LogitAttribution` per text (``heads [P, L, H]``).
    ``heads``: the chosen heads (tokens x heads heatmaps, OV summary), ``reasons`` why each.
    ``ov``: :class:`~headscope.logits.OVRows` of every chosen and story head over the same source
    tokens (``asked`` ids first, then the texts' distinct tokens). ``scan``: the induction scan
    (scores ``[L, H]``, loss, ablation). ``composition``: K-composition scores
    ``[L, H, L, H]``. ``stories``: the induction story of each top induction head.

    Does not read back from ``logits.json`` (:data:`LOGITS_NOT_READ_BACK` says why).
    """

    json_file: ClassVar[str | None] = "logits.json"
    json_what: ClassVar[str] = "a logit analysis"
    json_keys: ClassVar[frozenset[str]] = frozenset({"texts", "ov", "stories"})

    model: dict
    heads: list[Head]
    reasons: dict[str, str]
    texts: list[LogitAttribution]
    ov: dict[Head, OVRows]
    asked: list[int]
    scan: InductionResult
    composition: CompositionScores
    stories: InductionStories
    notes: list[str] = field(default_factory=list)
    #: where the stories' K-composition is read: "mean over offsets 0-63" (rotary) or "position-free"
    k_where: str = "position-free"
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> LogitAnalysis:
        """Not available: ``logits.json`` does not hold the whole analysis (:data:`LOGITS_NOT_READ_BACK`)."""
        raise BadInput(f"a logit analysis does not read back: {LOGITS_NOT_READ_BACK}", hint=LOGITS_READ_INSTEAD)

    # --- views ------------------------------------------------------------------------------
    @property
    def story_heads(self) -> list[Head]:
        return [(s.layer, s.head) for s in self.stories.stories]

    def top_effects(self, k: int = 10, sign: int = 1):
        """The ``k`` (text, position, head) cells with the largest push on the actual next token, all texts.

        ``sign=-1``: the largest pushes down. Columns: text, position, token, target, position
        label (``·lazy → ·dog``), head, effect, and the model's own centred logit of the target.
        """
        k, sign = how_many(k), one_of(sign, (1, -1), "sign")
        import pandas as pd

        frames = []
        for n, t in enumerate(self.texts):
            f = t.to_frame()
            f.insert(0, "text", n + 1)
            f["model_logit"] = t.model_logit[f["position"].to_numpy()]
            frames.append(f.reindex((sign * f["effect"]).sort_values(ascending=False).index).head(k))
        f = pd.concat(frames, ignore_index=True)
        f = f.reindex((sign * f["effect"]).sort_values(ascending=False, kind="stable").index).head(k)
        f.insert(4, "where", [arrow(a, b) for a, b in zip(f["token"], f["target"], strict=True)])
        return f.rename(columns={"label": "head_label"}).reset_index(drop=True)

    def ov_example(self, head: Head) -> int:
        """Which source token's OV row to draw for ``head``: the first asked token, else the one it copies best."""
        if self.asked:
            return 0
        return int(np.argmin(self.ov[head].self_rank))

    def findings(self) -> list[str]:
        """Plain sentences: each top induction head's story numbers, each with its unit (no mechanism inferred)."""
        out = []
        for s in self.stories.stories:
            parts = [f"{s.label} (induction {s.induction:.2f})"]
            prev = [src for src in s.k_sources if src["previous_token"] >= PREV_TOKEN_THRESHOLD]
            if s.k_source is None:
                parts.append("is in layer 0: no earlier head can K-compose with it")
            else:
                src = s.k_source
                parts.append(
                    f"strongest K-composition source by the weights {src['head']} ({self.k_where}, "
                    f"{src['k_composition']:+.3f}, previous-token {src['previous_token']:.2f}; {WEIGHT_PRODUCT})"
                )
                if prev and prev[0] is not src:
                    parts.append(
                        f"a previous-token head among its top {len(s.k_sources)} sources: {prev[0]['head']} "
                        f"({prev[0]['previous_token']:.2f})"
                    )
                elif not prev:
                    parts.append(
                        f"none of its top {len(s.k_sources)} K-composition sources reaches previous-token "
                        f"{PREV_TOKEN_THRESHOLD}"
                    )
            if s.copying is not None:
                parts.append(
                    f"OV copying score {s.copying:+.2f}"
                    + (
                        f", self-rank median {s.self_rank_median:,.0f} of {self.model['d_vocab']:,}"
                        if s.self_rank_median is not None
                        else ""
                    )
                )
            if s.dla_later is not None and s.dla_first is not None:
                parts.append(
                    f"direct logit effect on the copied token {signed(s.dla_later)} (centred logit; first repeat "
                    f"{signed(s.dla_first)})"
                )
            if s.ablation_delta_loss is not None:
                parts.append(ablation_finding(s))
            parts += _path_findings(s)
            out.append("; ".join(parts))
        later = self.scan.scores.get("direct_logit_later")
        if later is not None and self.stories.stories:
            ind_total = sum(float(later[lh]) for lh in self.story_heads)
            best = ", ".join(f"{head_label(l, h)} {signed(v)}" for l, h, v in top_k(later, 3))
            out.append(
                f"together the top induction heads write {signed(ind_total)} of the copied token's centred logit "
                f"directly; the heads that write it most directly: {best}"
            )
        return out

    def to_frame(self):
        """One row per chosen head: why, its largest push on the texts, scan scores, OV self-rank."""
        import pandas as pd

        rows = []
        for l, h in self.heads:
            peak = max(float(t.heads[:, l, h].max()) for t in self.texts)
            ov = self.ov[(l, h)]
            rows.append(
                {
                    "head": head_label(l, h),
                    "reason": self.reasons.get(head_label(l, h), "chosen with --head"),
                    "peak_effect": peak,
                    "mean_effect": float(np.mean([t.heads[:, l, h].mean() for t in self.texts])),
                    **{k: float(self.scan.scores[k][l, h]) for k in SCAN_SCORES if k in self.scan.scores},
                    "self_rank_median": float(np.median(ov.self_rank)),
                    "copies_fraction": float(np.mean(ov.self_rank == 1)),
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        scores = {k: rounded(self.scan.scores[k]) for k in SCAN_SCORES if k in self.scan.scores}
        return {
            "model": self.model,
            "heads": [
                {"head": head_label(l, h), "reason": self.reasons.get(head_label(l, h), "chosen with --head")}
                for l, h in self.heads
            ],
            "notes": self.notes,
            "findings": self.findings(),
            "top_effects": _records(self.top_effects(10)),
            "texts": [t.to_dict() for t in self.texts],
            "ov": [self.ov[lh].to_dict() for lh in self.ov],
            "stories": self.stories.to_dict()["heads"],
            "scan": {
                "settings": self.scan.settings,
                "scores": scores,
                "loss": {
                    "first_repeat": rounded(self.scan.loss_first_repeat),
                    "later_repeats": rounded(self.scan.loss_later_repeats),
                },
                "ablation": [
                    {**e, "loss": rounded(e["loss"]), "loss_increase": rounded(e["loss_increase"])}
                    for e in self.scan.ablation
                ],
            },
            "composition": {
                "kind": "K",
                "where": self.k_where,
                "baseline": self.composition.baseline,
                "baseline_std": self.composition.baseline_std,
                "note": self.composition.note,
            },
            "definitions": logit_definitions(),
            "timings": {k: rounded(v, 2) for k, v in self.timings.items()},
        }


def _records(frame) -> list[dict]:
    out = []
    for r in frame.to_dict(orient="records"):
        out.append(
            {
                k: (
                    rounded(float(v))
                    if isinstance(v, (float, np.floating))
                    else int(v)
                    if isinstance(v, np.integer)
                    else v
                )
                for k, v in r.items()
            }
        )
    return out
