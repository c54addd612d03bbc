"""The induction story of a head: the numbers headscope measures about it, side by side.

Olsson et al. 2022 and Elhage et al. 2021 describe an induction head in three steps; for each
step headscope has a number, and the story puts them in one row:

1. a **previous-token head** writes "the token before me was A" into each position and the
   induction head's *keys* read it: **K-composition** (Elhage et al., from the weights) with
   the source's **previous-token score**;
2. the induction head's query (current token A) matches the key after the earlier A:
   **induction score** (attention to that key on repeated random tokens);
3. its **OV circuit** copies the attended token B: **copying score** (eigenvalue positivity)
   and **self-rank** of B in its OV row (from the weights).

Two further numbers say what the head does to the prediction, and they are different
quantities in different units:

- the **direct logit effect** (``dla_later``): the head's own write straight into the
  unembedding, as a *centred logit* of the copied token (logit units), averaged over
  later-repeat targets;
- the **ablation Δloss** (``ablation_delta_loss``): the change in the *cross-entropy* (nats) of
  the later-repeat targets when the head's output is replaced by its mean (or zero), which also
  moves the model off the activations it was trained on.

They are stated side by side, never subtracted or divided: a logit is not a loss, and nothing
here measured a path from the head through later components (that needs a path-patching
measurement, which headscope does not make).

:func:`induction_story` gathers these for one head from plain arrays (``[L, H]`` scores,
``[L, H, L, H]`` composition scores), so it does not care which module computed them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..head_labels import head_label
from ..results import Result, rounded
from ..scores import score as declared
from .results import DLA_DEFINITION, OV_DEFINITION, OVRows

STORY_DEFINITION = (
    "The numbers measured about one induction head, every one from the same run: its strongest K-composition "
    "sources (Elhage et al. 2021; score minus the random baseline) with their previous-token scores, its induction "
    "score (attention to the token after the earlier copy), its OV copying score and the median self-rank of source "
    "tokens in its OV rows, its direct logit effect on first- and later-repeat targets (a centred logit, logit "
    "units: what the head itself writes into the unembedding for the target) and its ablation Δloss (a change in "
    "cross-entropy, nats: the later-repeat loss with the head's output mean-ablated minus the clean loss). The "
    "last two are different quantities in different units and are shown side by side, not compared; no path "
    "through later components was measured."
)


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
        }

    def to_dict(self) -> dict:
        return {k: rounded(v) for k, v in {**asdict(self), "label": self.label}.items()}


def _ablation_lookup(ablation) -> dict[tuple[int, int], float]:
    """``{(l, h): Δloss}`` from a mapping or from a scan's ``ablation`` entries (kind == "head")."""
    if ablation is None:
        return {}
    if isinstance(ablation, Mapping):
        return {tuple(k): float(v) for k, v in ablation.items()}
    return {(e["layer"], e["head"]): float(e["loss_increase"]) for e in ablation if e.get("kind") == "head"}


def induction_story(
    layer: int,
    head: int,
    *,
    induction: np.ndarray,
    previous_token: np.ndarray,
    k_composition: np.ndarray,
    copying: np.ndarray | None = None,
    ov: OVRows | None = None,
    dla_first: np.ndarray | None = None,
    dla_later: np.ndarray | None = None,
    ablation=None,
    n_sources: int = 3,
) -> InductionStory:
    """Gather head ``layer.head``'s story from result arrays.

    ``induction``, ``previous_token``, ``copying``, ``dla_first``, ``dla_later``: ``[L, H]``.
    ``k_composition``: ``[L, H, L, H]`` (earlier layer, head, later layer, head), NaN where not
    earlier, ideally minus the random baseline (``CompositionScores.excess("K")``).
    ``ov``: the head's :class:`OVRows` over some source tokens. ``ablation``: ``{(l, h): Δloss}``
    or an induction scan's ``ablation`` list.
    """
    col = np.nan_to_num(np.asarray(k_composition)[:, :, layer, head], nan=-np.inf)
    H = col.shape[1]
    order = [int(i) for i in np.argsort(-col, axis=None) if np.isfinite(col.flat[i])][:n_sources]
    sources = [
        {
            "head": head_label(i // H, i % H),
            "layer": i // H,
            "head_index": i % H,
            "k_composition": float(col.flat[i]),
            "previous_token": float(previous_token[i // H, i % H]),
        }
        for i in order
    ]
    notes = []
    if not sources:
        notes.append("layer 0: no earlier head can K-compose with it")
    story = InductionStory(
        layer=layer, head=head, induction=float(induction[layer, head]), k_sources=sources, notes=notes
    )
    if copying is not None:
        story.copying = float(copying[layer, head])
    if ov is not None:
        if (ov.layer, ov.head) != (layer, head):
            raise ValueError(f"OV rows are for {ov.label}, not {story.label}")
        story.self_rank_median = float(np.median(ov.self_rank))
        story.copies_fraction = float(np.mean(ov.self_rank == 1))
    if dla_first is not None:
        story.dla_first = float(dla_first[layer, head])
    if dla_later is not None:
        story.dla_later = float(dla_later[layer, head])
    story.ablation_delta_loss = _ablation_lookup(ablation).get((layer, head))
    return story


@dataclass
class InductionStories(Result):
    """Stories of several heads (e.g. the top induction heads), one table."""

    model_name: str
    stories: list[InductionStory]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([s.row() for s in self.stories])

    def to_dict(self) -> dict:
        return {"model": self.model_name, "heads": [s.to_dict() for s in self.stories]}

    def _repr_html_(self) -> str:
        from ..results import _html

        return _html(f"Induction stories, {self.model_name}", self.to_frame())


def induction_stories(
    heads: Sequence[tuple[int, int]],
    model_name: str = "model",
    *,
    ov: Mapping[tuple[int, int], OVRows] | None = None,
    **arrays,
) -> InductionStories:
    """:func:`induction_story` for each of ``heads``; ``ov`` maps a head to its OV rows."""
    ov = ov or {}
    return InductionStories(model_name, [induction_story(l, h, ov=ov.get((l, h)), **arrays) for l, h in heads])
