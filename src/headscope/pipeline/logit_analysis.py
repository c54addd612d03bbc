"""The logit analysis as ``headscope logits`` runs it: what heads write, on your text and on repeated tokens.

One run gathers, for one model:

- **direct logit attribution** on each text (:func:`headscope.logits.logit_attribution`): every
  head's push on the centred logit of the actual next token, at every position;
- **an induction scan with the causal check** (:func:`headscope.scan.scan_induction`): induction,
  previous-token and copying scores, each head's direct logit effect on first- and later-repeat
  targets (computed in the scan's own pass), and the ablation Δloss of the top induction heads;
- **K-composition scores** from the weights (:func:`headscope.qk.composition_scores`);
- **OV rows** (:func:`headscope.logits.ov_rows`) of the chosen heads and the top induction heads,
  for the texts' tokens and any token asked for by name;

and puts them side by side in each top induction head's **induction story**
(:func:`headscope.logits.induction_stories`), every number from this one run: the direct logit
effect (a centred logit) and the ablation Δloss (a cross-entropy) are stated with their units and
never combined (see :mod:`headscope.logits.story`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import BadInput
from ..folded_weights import head_weights
from ..head_labels import Head, head_label, top_k
from ..logits import LogitAttribution, induction_stories, logit_attribution, ov_rows
from ..logits.ov_rows import source_tokens
from ..models.embedding import effective_embedding
from ..models.inputs import TokenSequence, as_heads, as_sequences
from ..models.model import as_model, in_eval_mode
from ..progress import Progress
from ..qk import CompositionScores, composition_scores
from ..qk.analysis import COMPOSITION_OFFSETS
from ..qk.composition import composition_by_offset
from ..qk.rotary import is_rotary
from ..results.logit_results import SCAN_SCORES, InductionStories, LogitAnalysis, arrow
from ..scan import InductionResult, check_settings, scan_induction
from ..scan.induction_scan import check_scan_of
from ..settings import ScanSettings
from ..tokens import token_text
from .circuit_analysis import story_paths

__all__ = ["SCAN_SCORES", "LogitAnalysis", "analyze_logits", "arrow"]


#: The direct logit attribution is said to add up when its total and its rounding term ``float_error`` are
#: both within this fraction of the largest logit (at least 1); otherwise a note says by how much they miss.
SUM_TOLERANCE = 1e-4


def _check_sums(attributions: list, model, notes: list[str]) -> None:
    """A note where the components do not add up to the model's logit, or only through a large ``float_error``."""
    size = max(1.0, *(float(np.abs(a.model_logit).max()) for a in attributions))
    err = max(a.max_abs_error for a in attributions)
    fe = max(float(np.abs(a.components["float_error"]).max()) for a in attributions)
    if err > SUM_TOLERANCE * size or fe > SUM_TOLERANCE * size:
        notes.append(
            f"on {model.cfg.architecture} the direct logit attribution does not add up: the components miss the "
            f"model's own logit by up to {err:.3g} and the unexplained residual (float_error) reaches {fe:.3g}; "
            "the per-head effects leave out what this architecture does between the heads and the residual "
            "(e.g. final logit soft-capping), so read them as approximate"
        )


def _pick(
    texts: list[LogitAttribution], scan: InductionResult, top: int, notes: list[str]
) -> tuple[list[Head], dict[str, str]]:
    """The ``top`` heads with the largest push on the actual next token (any text, any position), then the top
    induction heads; with the reason for each (and a line in ``notes`` saying how they were picked)."""
    heads: list[Head] = []
    why: dict[str, list[str]] = {}
    peak = np.max(np.stack([t.heads.max(0) for t in texts]), axis=0)  # [L, H]
    for rank, (l, h, v) in enumerate(top_k(peak, top), 1):
        why.setdefault(head_label(l, h), []).append(f"#{rank} push on the next token ({v:+.2f})")
        heads.append((l, h))
    for rank, (l, h, v) in enumerate(scan.top_heads("induction", top), 1):
        why.setdefault(head_label(l, h), []).append(f"#{rank} induction score ({v:.2f})")
        if (l, h) not in heads:
            heads.append((l, h))
    notes.append(
        f"heads picked: the top {top} by their largest push on the actual next token in the texts, and "
        f"the top {top} induction heads of the scan"
    )
    return heads, {k: "; ".join(v) for k, v in why.items()}


def _texts_to_attribute(m, texts, max_tokens: int | None) -> list[TokenSequence]:
    """The texts through the one input path; each needs a next token to attribute."""
    seqs = as_sequences(m, texts, max_tokens)
    for n, s in enumerate(seqs, 1):
        if len(s) < 2:
            raise BadInput(
                f"text {n} ({s.text!r}) is a single token: there is no next token to attribute",
                hint="give at least two tokens of text",
            )
    return seqs


def _ov_circuits(m, w, heads: list[Head], asked: list[int], seqs: list[TokenSequence], k: int) -> dict:
    """Each head's OV rows for the asked tokens, then every token of the texts (the first token left out)."""
    first = 1 if m.first_token.id is not None else 0
    ids = list(dict.fromkeys(asked + [i for s in seqs for i in s.ids[first:]]))
    eps = float(getattr(m.cfg, "eps", 1e-5))
    tok = m.tokenizer
    x = effective_embedding(m, ids, "block0")  # the embedding the copying scores read (McDougall et al. 2023)
    return {
        lh: ov_rows(
            w,
            lh[0],
            lh[1],
            ids,
            k=k,
            eps=eps,
            decode=lambda i: token_text(tok, i),
            model=m.name,
            x=x,
            embedding="block0",
        )
        for lh in dict.fromkeys(heads)
    }


def _k_for_stories(m, w, composition: CompositionScores, story_heads: list[Head]) -> tuple[np.ndarray, str]:
    """K-composition into the story heads, and where it was read: position-free, or on a rotary model (whose K
    form depends on the offset) the mean over offsets 0-63."""
    k_comp, k_where = composition.excess("K"), composition.where
    if is_rotary(m):
        by = composition_by_offset(m, story_heads, range(COMPOSITION_OFFSETS), weights=w, kinds=("K",))
        k_comp = np.full_like(k_comp, np.nan)
        for l, h in by.heads:
            k_comp[:, :, l, h] = by.excess((l, h), "K").mean(-1)
        k_where = f"mean over {by.span}"
    return k_comp, k_where


def _stories(
    heads: list[Head], model: str, ov: dict, scan: InductionResult, k_comp: np.ndarray, paths: dict | None = None
) -> InductionStories:
    """Each induction head's numbers side by side, from the scan, the K-composition and its OV rows."""
    return induction_stories(
        heads,
        model,
        ov=ov,
        induction=scan.scores["induction"],
        previous_token=scan.scores["previous_token"],
        k_composition=k_comp,
        copying=scan.scores.get("copying"),
        dla_first=scan.scores["direct_logit_first"],
        dla_later=scan.scores["direct_logit_later"],
        ablation=scan.ablation or None,
        paths=paths,
    )


def _k_composition(m, w, composition: CompositionScores | None, say) -> CompositionScores:
    """The given K-composition scores, or computed from the weights when none (or no K) were given."""
    if composition is None or "K" not in composition.scores:
        say("K-composition scores")
        composition = composition_scores(w, kinds=("K",))
        composition.model_name = m.name
    return composition


@in_eval_mode
def analyze_logits(
    model,
    texts=None,
    heads=None,
    settings: ScanSettings | Mapping[str, Any] | None = None,
    *,
    top: int = 3,
    tokens: list[str] | None = None,
    max_tokens: int | None = 64,
    k: int = 10,
    scan: InductionResult | None = None,
    composition: CompositionScores | None = None,
    progress: Progress | None = None,
    scan_progress: bool | None = False,
    paths: bool = False,
    **keywords: Any,
) -> LogitAnalysis:
    """What ``heads`` (or the strongest pushers and the top ``top`` induction heads) write, from one run.

    ``texts``: strings or :class:`~headscope.models.inputs.TokenSequence` (None: the built-in
    samples), each cut to ``max_tokens`` (said in ``notes``). ``tokens``: single-token strings
    whose OV rows are shown first (others are refused with how they tokenise). The scan
    (``settings``, a :class:`~headscope.settings.ScanSettings` or a mapping of its fields, its fields replaced by
    ``keywords``: ``seq_len=``, ``batch=``, ``ablate=``, ``ablation=``, ``attention=``, ...; its
    ``top_k`` is ``top``) gives the induction story's numbers; pass an existing ``scan`` (and
    ``composition`` with K scores) to reuse them: its own settings are then used, and settings
    given beside it are refused, not ignored. ``k``: promoted/suppressed tokens kept per OV
    row. Every input is checked before anything runs. ``paths``: also measure each story head's paths by
    path patching (the senders into its keys, its paths to the logits; :func:`~.circuit_analysis.story_paths`),
    on the induction task with the scan's ``batch``, ``seq_len`` and ``seed``.

    >>> import headscope
    >>> a = headscope.analyze_logits(model, "a b c a b c", top=1, seq_len=8, batch=2)
    >>> len(a.texts), len(a.stories.stories)
    (1, 1)
    >>> a.top_effects(3)[["where", "head_label", "effect"]].shape
    (3, 3)
    >>> a.stories.to_frame().columns[:4].tolist()
    ['head', 'induction', 'k_source', 'k_composition']
    """
    m = as_model(model)
    say = progress or (lambda stage: None)
    timings: dict[str, float] = {}
    st = replace(ScanSettings.from_keywords(settings, **keywords), top_k=top)
    # every check before any compute
    seqs = _texts_to_attribute(m, texts, max_tokens)
    chosen = as_heads(m, heads) if heads else None
    asked = source_tokens(m, tokens) if tokens else []
    if scan is None:
        st.check()
        check_settings(st.seq_len, st.batch, st.repeats, m.first_token.id is not None, m.n_ctx, m.name)
    else:
        check_scan_of(m, scan)
        if settings is not None or keywords:
            given = ", ".join(sorted(keywords)) or "settings"
            raise BadInput(
                f"scan= is given, so its own settings are used, and {given} would be ignored",
                hint="drop them to reuse the scan, or drop scan= to run a new scan with them",
            )
        ran = scan.settings
        st = replace(st, seq_len=int(ran["seq_len"]), batch=int(ran["batch"]), seed=int(ran["seed"]))
        if st.top_k < 1:
            raise BadInput(f"top_k (--top) must be at least 1 (got {st.top_k})")
        if "direct_logit_later" not in scan.scores:
            raise BadInput(
                "the given scan has no direct logit effects", hint="run it with this headscope's scan_induction"
            )
    notes = [n for s in seqs for n in s.notes]
    t = time.perf_counter()
    w = head_weights(m)
    say("direct logit attribution on the texts")
    attributions = [logit_attribution(m, s, weights=w) for s in seqs]
    _check_sums(attributions, m, notes)
    timings["texts_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if scan is None:
        say("induction scan" + (f" with {st.ablation} ablation" if st.ablate else ""))
        scan = scan_induction(m, st, sample=False, progress=scan_progress)
    timings["scan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    composition = _k_composition(m, w, composition, say)
    timings["composition_s"] = time.perf_counter() - t

    chosen, reasons = (chosen, {}) if chosen is not None else _pick(attributions, scan, top, notes)
    story_heads = [(l, h) for l, h, _ in scan.top_heads("induction", min(top, scan.settings.get("top_k", top)))]

    t = time.perf_counter()
    say("OV circuits")
    ov = _ov_circuits(m, w, chosen + story_heads, asked, seqs, k)
    timings["ov_s"] = time.perf_counter() - t
    k_comp, k_where = _k_for_stories(m, w, composition, story_heads)
    measured = None
    if paths:
        t = time.perf_counter()
        say("path patching of the story heads")
        measured = story_paths(m, story_heads, st.batch, st.seq_len, st.seed, st.max_memory_gb)
        timings["paths_s"] = time.perf_counter() - t
    stories = _stories(story_heads, m.name, ov, scan, k_comp, measured)
    return LogitAnalysis(
        model={**m.info(), "norm": w.norm},
        heads=chosen,
        reasons=reasons,
        texts=attributions,
        ov=ov,
        asked=asked,
        scan=scan,
        composition=composition,
        stories=stories,
        notes=notes,
        timings=timings,
        k_where=k_where,
    )
