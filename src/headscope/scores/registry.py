"""The registry of head scores: each score is declared here once, and only here.

A :class:`Score` says what a score is called (``name``, column ``header``, figure ``title``,
``label`` in prose), what it means (``definition``, ``source``), which role a head takes when it
reaches ``threshold``, and how it is computed: from the attention of the repeated-token scan
(``reads``: which pattern entries, see :mod:`.reads`), from the weights (``from_weights``: maths
``(HeadWeights, WeightInputs) -> WeightScore(values, notes)``, once per model, with
``describe_notes`` saying in a sentence how it was computed) or from the direct-logit reduction of
the scan's pass (``from_pass``: the scored positions it averages). Roles are filtered in one
place, :func:`roles_present`. The scan, the roles, the CLI table and legend, ``scores.json``'s
``definitions``, the CSV, the report, the sweep and the docs' tables all iterate over
:data:`SCORES`.

Adding a head type is one declaration below, its compute function, and its test
(docs/architecture.md shows how).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..folded_weights import HeadWeights
from . import copy_suppression, copying, successor
from .layout import RepeatLayout, first_repeat_targets, later_repeat_targets
from .reads import Column, KeySet, Reads, Stripe, prefix_mask, prefix_pairs
from .weight_score import WeightInputs, WeightScore


@dataclass(frozen=True)
class Score:
    """One head score: its names, meaning, role threshold and how it is computed."""

    name: str  # key in results, JSON and CSV: "previous_token"
    header: str  # short column header for terminal tables: "prev"
    label: str  # in prose and on the page: "previous-token"
    title: str  # figure title: "Previous-token score"
    definition: str  # the legend's text, source included
    source: str  # the paper or reference implementation, short
    threshold: float | None = None  # a head "is" a <label> head when its score >= this; None: no role
    reads: Reads | None = None  # attention score: the pattern entries it averages
    # weight score: maths ``(weights, inputs) -> WeightScore(values [L, H], notes)``; once per model
    from_weights: Callable[[HeadWeights, WeightInputs], WeightScore] | None = None
    # pass score: the head's direct logit effect (headscope.scan.direct) averaged over the scored positions
    # ``from_pass(layout)`` picks (position p predicts token p + 1)
    from_pass: Callable[[RepeatLayout], np.ndarray] | None = None
    # a weight score's notes (``WeightScore.notes``) in one sentence, for the page and the terminal
    describe_notes: Callable[[dict], str] | None = None
    vmin: float | None = 0.0  # heatmap range; None: symmetric around 0, from the data
    vmax: float | None = 1.0
    in_table: bool = True  # a column of the terminal table of top heads
    # weight scores that read tokens through an effective embedding: its convention (models/embedding.py)
    embedding: str | None = None
    # the role this one is the opposite of: a head holds both only when both read the same embedding
    opposes: str | None = None

    @property
    def kind(self) -> str:
        return "attention" if self.reads is not None else "weights" if self.from_weights is not None else "pass"


SCORES: tuple[Score, ...] = (
    Score(
        name="induction",
        header="induction",
        label="induction",
        title="Induction score",
        definition=(
            "Mean attention from each query in repeats 2..R to the key right after the previous "
            "occurrence of its token (key = query - seq_len + 1). 1.0 = perfect induction head. "
            "Source: ARENA 1.2 / Nanda, restricted to later-repeat queries (ARENA's diagonal also "
            "takes 2 first-repeat queries, so it reads slightly lower)."
        ),
        source="ARENA 1.2 (Nanda)",
        threshold=0.4,
        reads=Stripe(offset=lambda lay: 1 - lay.seq_len, start=lambda lay: lay.later_start),
    ),
    Score(
        name="prefix_matching",
        header="prefix",
        label="prefix-matching",
        title="Prefix-matching score",
        definition=(
            "Total attention from each query in repeats 2..R to every earlier position whose "
            "preceding token equals the query's token, averaged over queries. "
            "Source: Olsson et al. 2022; reference implementation Bansal et al. 2023 (llm-interpret)."
        ),
        source="Olsson et al. 2022; Bansal et al. 2023",
        in_table=False,  # on r + r it equals induction but for chance repeats: the JSON, CSV and page have it
        reads=KeySet(mask=prefix_mask, pairs=prefix_pairs, start=lambda lay: lay.later_start),
    ),
    Score(
        name="previous_token",
        header="prev",
        label="previous-token",
        title="Previous-token score",
        definition="Mean attention from each query to the key just before it (key = query - 1); the BOS query has none.",
        source="Elhage et al. 2021; ARENA 1.2",
        threshold=0.4,
        reads=Stripe(offset=lambda lay: -1, start=lambda lay: 1),
    ),
    Score(
        name="duplicate_token",
        header="dup",
        label="duplicate-token",
        title="Duplicate-token score",
        definition=(
            "Mean attention from each query in repeats 2..R to the previous copy of its own token (key = query - seq_len)."
        ),
        source="Wang et al. 2022 (IOI); ARENA 1.2",
        threshold=0.4,
        reads=Stripe(offset=lambda lay: -lay.seq_len, start=lambda lay: lay.later_start),
    ),
    Score(
        name="copying",
        header="copying",
        label="copying",
        title="Copying score (OV eigenvalue positivity, block-0 effective embedding)",
        definition=copying.DEFINITION,
        source="Elhage et al. 2021; McDougall et al. 2023",
        threshold=0.7,
        from_weights=copying.copying_weight_score,
        vmin=-1.0,
        embedding="block0",
    ),
    Score(
        name="copying_direct",
        header="copy-dir",
        label="copying (direct path)",
        title="Copying score on the direct path (bare W_E)",
        definition=copying.DIRECT_DEFINITION,
        source="Elhage et al. 2021",
        from_weights=copying.copying_direct_weight_score,
        vmin=-1.0,
        in_table=False,
        embedding="embed",
    ),
    Score(
        name="attention_sink",
        header="sink",
        label="attention-sink",
        title="Attention-sink score alpha_1 on natural text (Gu et al. 2024)",
        definition=(
            'alpha_1 of Gu et al. 2024 ("When Attention Sink Emerges in Language Models", arXiv 2410.10781): the '
            "mean attention to the first token over every query of a 64-token window of natural text, its own query "
            "included, averaged over 100 windows of CPython's pydoc_data.topics (or --file). The first token is what "
            "the model's own tokenizer puts first, as the paper's code does: its BOS where it adds one, else the "
            "window's first text token (no BOS prepended). A head is a sink head above 0.3, the paper's threshold; "
            "the sink rate (Sink_1^0.3) is the fraction of heads above it."
        ),
        source="Gu et al. 2024",
        threshold=0.3,
        reads=Column(key=0, start=lambda lay: 0, text="natural"),
        in_table=False,
    ),
    Score(
        name="first_token_random",
        header="1st",
        label="first-token attention on random tokens",
        title="Attention to the first token on the scan's repeated random tokens (no role)",
        definition=(
            "Mean attention to position 0 of the scan's sequences (the first token headscope puts in front of "
            "repeated random tokens: BOS, else EOS) from every query after it, averaged over sequences. Not Gu et "
            "al.'s setting (random tokens, a special token first), so it gives no role: attention_sink does."
        ),
        source="headscope",
        reads=Column(key=0, start=lambda lay: 1),
        in_table=False,
    ),
    Score(
        name="successor",
        header="succ",
        label="successor",
        title="Successor score (effective OV on ordinal sets)",
        definition=successor.DEFINITION,
        source="Gould et al. 2023",
        threshold=0.5,
        from_weights=successor.successor_weight_score,
        describe_notes=successor.describe_sets,
        in_table=False,
        embedding="mlp0",
    ),
    Score(
        name="copy_suppression",
        header="supp",
        label="copy-suppression",
        title="Copy-suppression score (token among its own 10 most suppressed)",
        definition=copy_suppression.DEFINITION,
        source="McDougall et al. 2023",
        threshold=0.5,
        from_weights=copy_suppression.copy_suppression_weight_score,
        in_table=False,
        embedding="block0",
        opposes="copying",
    ),
    Score(
        name="direct_logit_later",
        header="dla",
        label="direct logit effect (later repeats)",
        title="Direct logit effect on later-repeat targets (centred logit)",
        definition=(
            "Mean over the later-repeat loss's targets (repeats 2..R without the first token of repeat 2, which "
            "no context predicts) of the head's direct contribution to the centred logit of the actual "
            "next token: its output z W_O through the final norm (scale frozen at the token's actual value, gain "
            "folded) and W_U, minus the mean over the vocabulary (the shift the softmax ignores). Positive = the "
            "head itself raises the copied token. Source: Elhage et al. 2021 (direct path); TransformerLens's "
            "direct logit attribution convention."
        ),
        source="Elhage et al. 2021; TransformerLens",
        from_pass=later_repeat_targets,  # predictable targets in repeats 2..R
        vmin=None,
        vmax=None,
    ),
    Score(
        name="direct_logit_first",
        header="dla1",
        label="direct logit effect (first repeat)",
        title="Direct logit effect on first-repeat targets (centred logit)",
        definition=(
            "As direct_logit_later, over targets in repeat 1, which no head can predict from context: a baseline "
            "for the later-repeat effect."
        ),
        source="Elhage et al. 2021; TransformerLens",
        from_pass=first_repeat_targets,  # targets in repeat 1
        vmin=None,
        vmax=None,
        in_table=False,
    ),
)

#: Quantities that are not head scores but sit in the same legend and JSON ``definitions``.
LOSS_DEFINITION = (
    "Cross-entropy (nats) of predicting each token from the ones before it, averaged over the batch. "
    "first_repeat: targets in repeat 1 (unpredictable, about ln(vocab)); later_repeats: targets in repeats "
    "2..R, where induction can predict them, except the first token of repeat 2 (it follows the end of "
    "repeat 1, a pair seen nowhere earlier, so no context predicts it)."
)

#: The causal check's noise model: every ablation's change is a mean over sequences with a
#: percentile-bootstrap interval (sequences resampled with replacement, seeded), and the random
#: control is drawn CONTROL_DRAWS times.
INTERVAL_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
CONTROL_DRAWS = 10


def ablation_definition(controls: int = CONTROL_DRAWS) -> str:
    """The causal check's definition, with the number of control draws a run made (default: the registry's)."""
    return (
        "Change in later-repeat loss (nats, ablated - clean, per sequence then averaged) when heads' outputs "
        "(hook_z) are replaced: by their mean over all sequences and positions of the clean run (mean), by zero "
        "(zero), or by the same head's output on another sequence of the batch (resample). Each top induction "
        f"head alone, all of them together, and a control of as many other heads drawn at random, {controls} "
        f"time{'s' if controls != 1 else ''} (median and range, lowest to highest, of the draws; a model with "
        "no more other heads than top heads has one control, all the others). [low, high]: "
        f"{INTERVAL_LEVEL:.0%} bootstrap interval over sequences ({BOOTSTRAP_RESAMPLES:,} resamples, seeded). "
        "Verdict: 'raises' only when the interval lies above 0, 'lowers' when below 0, else 'no clear change'. "
        "first-repeat change: the same ablation's change in first-repeat loss (specificity: an induction head "
        "should change it little). Against the control: all top heads' change minus the largest draw's, per "
        "sequence (both ablate the same sequences), with its bootstrap interval."
    )


ABLATION_DEFINITION = ablation_definition()


def ablation_verdict(low: float, high: float) -> str:
    """What an ablation's interval ``[low, high]`` says: "raises", "lowers" or "no clear change".

    >>> ablation_verdict(0.02, 0.4), ablation_verdict(-0.1, 0.3), ablation_verdict(-0.5, -0.2)
    ('raises', 'no clear change', 'lowers')
    """
    if low > 0:
        return "raises"
    if high < 0:
        return "lowers"
    return "no clear change"


_BY_NAME = {s.name: s for s in SCORES}


def score(name: str) -> Score:
    """The declaration of ``name`` (``KeyError`` lists the known names)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown score {name!r}; known: {', '.join(_BY_NAME)}") from None


def score_names() -> list[str]:
    """Every score, in table order."""
    return [s.name for s in SCORES]


def attention_scores() -> list[Score]:
    return [s for s in SCORES if s.reads is not None]


def weight_scores() -> list[Score]:
    return [s for s in SCORES if s.from_weights is not None]


def pass_scores() -> list[Score]:
    return [s for s in SCORES if s.from_pass is not None]


def role_scores() -> list[Score]:
    """The scores that give a head a role (those with a threshold), in table order."""
    return [s for s in SCORES if s.threshold is not None]


def roles_present(scores, thresholds) -> list[Score]:
    """The role scores (those with a threshold) that ``scores`` holds and ``thresholds`` sets, in table order.

    The one role filter: a result's roles, counts, tables and legend all read it.

    >>> [s.name for s in roles_present({"induction": 0, "copying": 0}, {"induction": 0.4})]
    ['induction']
    """
    return [s for s in role_scores() if s.name in scores and s.name in thresholds]


def weight_notes(notes: dict[str, dict]) -> list[str]:
    """The sentences the weight scores' ``describe_notes`` make of ``notes`` (``{score: WeightScore.notes}``)."""
    return [s.describe_notes(notes[s.name]) for s in weight_scores() if s.describe_notes and notes.get(s.name)]


def opposite_roles() -> list[tuple[Score, Score]]:
    """Pairs of roles that say opposite things (copy suppression, copying): ``(role, its opposite)``."""
    return [(s, score(s.opposes)) for s in SCORES if s.opposes is not None]


def opposite_reason(a: Score, b: Score, va: float, vb: float) -> str:
    """Why a head holds both of two opposite roles: the one embedding they share, and what each counts.

    Refuses (``ValueError``) a pair whose scores read different embeddings: such a pair is not a
    finding about the head but about the two conventions, and the registry must not declare it.
    """
    if a.embedding != b.embedding:
        raise ValueError(f"{a.name} reads {a.embedding!r} but {b.name} reads {b.embedding!r}: not one convention")
    return (
        f"{b.label} {vb:.2f} and {a.label} {va:.2f}, both read through the same {a.embedding} effective embedding: "
        f"{b.label} weighs the eigenvalues of the whole OV circuit, {a.label} counts how often a token's own logit "
        "is among the lowest of its row, so one head can score on both"
    )


def default_thresholds() -> dict[str, float]:
    return {s.name: s.threshold for s in SCORES if s.threshold is not None}


def definitions(controls: int | None = None) -> dict[str, str]:
    """Every score's definition, then the loss's and the ablation's: the legend and ``scores.json``.

    ``controls``: the control draws the run made (default: the registry's :data:`CONTROL_DRAWS`).

    >>> "drawn at random, 3 times" in definitions(3)["ablation"]
    True
    """
    return {
        **{s.name: s.definition for s in SCORES},
        "loss": LOSS_DEFINITION,
        "ablation": ablation_definition(controls or CONTROL_DRAWS),
    }


def roles_legend(thresholds: dict[str, float], measured=None) -> str:
    """One sentence saying when a head takes each role; roles whose score is not in ``measured`` (the
    result's scores, when given) are named as not measured instead of listed with a threshold.

    >>> roles_legend({"induction": 0.4, "attention_sink": 0.3}, measured={"induction": 0})
    'A head takes a role when its score reaches the threshold: induction ≥ 0.4 (change with --threshold NAME=VALUE on the command line, thresholds={NAME: VALUE} in Python). Not measured by this run: attention-sink (`headscope heads` measures it).'
    """
    shown = {k: v for k, v in thresholds.items() if measured is None or k in measured}
    missing = [score(k).label for k in thresholds if k not in shown]
    return (
        "A head takes a role when its score reaches the threshold: "
        + ", ".join(f"{score(k).label} ≥ {v}" for k, v in shown.items())
        + " (change with --threshold NAME=VALUE on the command line, thresholds={NAME: VALUE} in Python)."
        + (f" Not measured by this run: {', '.join(missing)} (`headscope heads` measures it)." if missing else "")
    )
