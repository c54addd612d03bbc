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

They are stated side by side, never subtracted or divided: a logit is not a loss.

K-composition is a weight product, not a causal number. Where the paths were measured
(``headscope logits --paths``; :mod:`headscope.circuits.path_patching`, computed by the pipeline
and handed in as plain data through ``paths=``), the story states them instead: the senders
whose path into the head's keys carries most of the clean - corrupted gap on the induction task,
and the head's path to the logits, directly and through the strongest later heads, each with
its 95% interval over the examples.

:func:`induction_story` gathers these for one head from plain arrays (``[L, H]`` scores,
``[L, H, L, H]`` composition scores), so it does not care which module computed them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..head_labels import head_label
from ..results.logit_results import (
    STORY_DEFINITION,
    InductionStories,
    InductionStory,
    OVRows,
    logit_definitions,
)

__all__ = [
    "STORY_DEFINITION",
    "InductionStories",
    "InductionStory",
    "induction_stories",
    "induction_story",
    "logit_definitions",
]


def _ablation_lookup(ablation) -> dict[tuple[int, int], dict]:
    """``{(l, h): {"delta", "interval", "verdict"}}`` from a scan's ``ablation`` entries (kind == "head"), whose
    bootstrap interval and verdict come along; or from a mapping ``{(l, h): Δloss}`` (no interval: None)."""
    if ablation is None:
        return {}
    if isinstance(ablation, Mapping):
        return {tuple(k): {"delta": float(v), "interval": None, "verdict": None} for k, v in ablation.items()}
    return {
        (e["layer"], e["head"]): {
            "delta": float(e["loss_increase"]),
            "interval": [float(x) for x in e["interval"]] if e.get("interval") is not None else None,
            "verdict": e.get("verdict"),
        }
        for e in ablation
        if e.get("kind") == "head"
    }


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
    paths: Mapping[tuple[int, int], dict] | None = None,
) -> InductionStory:
    """Gather head ``layer.head``'s story from result arrays.

    ``induction``, ``previous_token``, ``copying``, ``dla_first``, ``dla_later``: ``[L, H]``.
    ``k_composition``: ``[L, H, L, H]`` (earlier layer, head, later layer, head), NaN where not
    earlier, ideally minus the random baseline (``CompositionScores.excess("K")``).
    ``ov``: the head's :class:`OVRows` over some source tokens. ``ablation``: ``{(l, h): Δloss}``
    or an induction scan's ``ablation`` list. ``paths``: ``{(l, h): {"k": [...], "logits": [...], "about": str}}``,
    measured path effects (see :class:`~headscope.results.logit_results.InductionStory`).
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
    ab = _ablation_lookup(ablation).get((layer, head))
    if ab is not None:
        story.ablation_delta_loss, story.ablation_interval, story.ablation_verdict = (
            ab["delta"],
            ab["interval"],
            ab["verdict"],
        )
    measured = (paths or {}).get((layer, head))
    if measured:
        story.k_paths = list(measured.get("k", []))
        story.logit_paths = list(measured.get("logits", []))
        story.paths_about = str(measured.get("about", ""))
    return story


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
