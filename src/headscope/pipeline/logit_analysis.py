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

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInput
from ..folded_weights import head_weights
from ..head_labels import Head, head_label, top_k
from ..logits import InductionStories, LogitAttribution, OVRows, induction_stories, logit_attribution, ov_rows
from ..logits.ov_rows import source_tokens
from ..logits.story import logit_definitions
from ..models.embedding import effective_embedding
from ..models.inputs import as_heads, as_sequences
from ..models.model import as_model
from ..qk import CompositionScores, composition_scores
from ..qk.analysis import COMPOSITION_OFFSETS
from ..qk.composition import composition_by_offset
from ..qk.rotary import is_rotary
from ..scan import InductionResult, check_settings, scan_induction
from ..scores import default_thresholds
from ..tokens import token_text, visible_whitespace

Progress = Callable[[str], None]
#: A K-composition source "is" a previous-token head at the registry's previous-token threshold.
PREV_TOKEN_THRESHOLD = default_thresholds()["previous_token"]
#: Scores of the scan that the analysis keeps per head (``repeats.csv``, the JSON's ``scan.scores``).
SCAN_SCORES = ("induction", "previous_token", "copying", "direct_logit_first", "direct_logit_later")


def arrow(token: str, target: str) -> str:
    """A position as people read it: ``·lazy → ·dog`` (whitespace visible)."""
    return f"{visible_whitespace(token)} → {visible_whitespace(target)}"


@dataclass
class LogitAnalysis:
    """What heads write, from one run (see the module docstring); numbers only, no model inside.

    ``texts``: one :class:`~headscope.logits.LogitAttribution` per text (``heads [P, L, H]``).
    ``heads``: the chosen heads (tokens x heads heatmaps, OV summary), ``reasons`` why each.
    ``ov``: :class:`~headscope.logits.OVRows` of every chosen and story head over the same source
    tokens (``asked`` ids first, then the texts' distinct tokens). ``scan``: the induction scan
    (scores ``[L, H]``, loss, ablation). ``composition``: K-composition scores
    ``[L, H, L, H]``. ``stories``: the induction story of each top induction head.
    """

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

    # --- views ------------------------------------------------------------------------------
    @property
    def story_heads(self) -> list[Head]:
        return [(s.layer, s.head) for s in self.stories.stories]

    def top_effects(self, k: int = 10, sign: int = 1):
        """The ``k`` (text, position, head) cells with the largest push on the actual next token, all texts.

        ``sign=-1``: the largest pushes down. Columns: text, position, token, target, position
        label (``·lazy → ·dog``), head, effect, and the model's own centred logit of the target.
        """
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
                    f"keys read {src['head']} most (K-composition, {self.k_where}, {src['k_composition']:+.3f}, "
                    f"previous-token {src['previous_token']:.2f})"
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
                    f"direct logit effect on the copied token {s.dla_later:+.3f} (centred logit; first repeat "
                    f"{s.dla_first:+.3f})"
                )
            if s.ablation_delta_loss is not None:
                parts.append(
                    f"ablating it changes the later-repeat cross-entropy by {s.ablation_delta_loss:+.3f} nats "
                    "(a loss, not a logit: not comparable with the direct effect)"
                )
            out.append("; ".join(parts))
        later = self.scan.scores.get("direct_logit_later")
        if later is not None and self.stories.stories:
            ind_total = sum(float(later[lh]) for lh in self.story_heads)
            best = ", ".join(f"{head_label(l, h)} {v:+.3f}" for l, h, v in top_k(later, 3))
            out.append(
                f"together the top induction heads write {ind_total:+.3f} of the copied token's centred logit "
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
        scores = {k: np.round(self.scan.scores[k], 6).tolist() for k in SCAN_SCORES if k in self.scan.scores}
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
                    "first_repeat": round(self.scan.loss_first_repeat, 6),
                    "later_repeats": round(self.scan.loss_later_repeats, 6),
                },
                "ablation": [
                    {**e, "loss": round(e["loss"], 6), "loss_increase": round(e["loss_increase"], 6)}
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
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def _repr_html_(self) -> str:
        """In a notebook: the report page's "Logit effect" section, the same pieces as the page."""
        from ..render.page import Report

        return Report(model=dict(self.model), logits=self)._repr_html_()


def _records(frame) -> list[dict]:
    out = []
    for r in frame.to_dict(orient="records"):
        out.append(
            {
                k: (
                    round(float(v), 6)
                    if isinstance(v, (float, np.floating))
                    else int(v)
                    if isinstance(v, np.integer)
                    else v
                )
                for k, v in r.items()
            }
        )
    return out


def _pick(texts: list[LogitAttribution], scan: InductionResult, top: int) -> tuple[list[Head], dict[str, str]]:
    """The ``top`` heads with the largest push on the actual next token (any text, any position), then the top
    induction heads; with the reason for each."""
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
    return heads, {k: "; ".join(v) for k, v in why.items()}


def analyze_logits(
    model,
    texts=None,
    heads=None,
    *,
    top: int = 3,
    tokens: list[str] | None = None,
    max_tokens: int | None = 64,
    seq_len: int = 50,
    batch: int = 10,
    repeats: int = 2,
    seed: int = 0,
    ablate: bool = True,
    ablation: str = "mean",
    max_memory_gb: float | None = None,
    k: int = 10,
    scan: InductionResult | None = None,
    composition: CompositionScores | None = None,
    progress: Progress | None = None,
    scan_progress: bool | None = False,
) -> LogitAnalysis:
    """What ``heads`` (or the strongest pushers and the top ``top`` induction heads) write, from one run.

    ``texts``: strings or :class:`~headscope.models.inputs.TokenSequence` (None: the built-in
    samples), each cut to ``max_tokens`` (said in ``notes``). ``tokens``: single-token strings
    whose OV rows are shown first (others are refused with how they tokenise). The scan
    (``seq_len``, ``batch``, ``repeats``, ``seed``, ``ablate``, ``ablation``) gives the induction
    story's numbers; pass an existing ``scan`` (and ``composition`` with K scores) to reuse them.
    ``k``: promoted/suppressed tokens kept per OV row. Every input is checked before anything runs.

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
    # every check before any compute
    seqs = as_sequences(m, texts, max_tokens)
    for n, s in enumerate(seqs, 1):
        if len(s) < 2:
            raise BadInput(
                f"text {n} ({s.text!r}) is a single token: there is no next token to attribute",
                hint="give at least two tokens of text",
            )
    chosen = as_heads(m, heads) if heads else None
    asked = source_tokens(m, tokens) if tokens else []
    if top < 1:
        raise BadInput(f"--top must be at least 1 (got {top})")
    if scan is None:
        check_settings(seq_len, batch, repeats, m.first_token.id is not None, m.n_ctx, m.name)
    notes = [n for s in seqs for n in s.notes]

    t = time.perf_counter()
    w = head_weights(m)
    say("direct logit attribution on the texts")
    attributions = [logit_attribution(m, s, weights=w) for s in seqs]
    timings["texts_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if scan is None:
        say("induction scan" + (f" with {ablation} ablation" if ablate else ""))
        scan = scan_induction(
            m,
            seq_len=seq_len,
            batch=batch,
            repeats=repeats,
            seed=seed,
            top_k=top,
            ablate=ablate,
            ablation=ablation,
            max_memory_gb=max_memory_gb,
            sample=False,
            progress=scan_progress,
        )
    elif "direct_logit_later" not in scan.scores:
        raise BadInput("the given scan has no direct logit effects", hint="run it with this headscope's scan_induction")
    timings["scan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if composition is None or "K" not in composition.scores:
        say("K-composition scores")
        composition = composition_scores(w, kinds=("K",))
        composition.model_name = m.name
    timings["composition_s"] = time.perf_counter() - t

    if chosen is None:
        chosen, reasons = _pick(attributions, scan, top)
        notes.append(
            f"heads picked: the top {top} by their largest push on the actual next token in the texts, and "
            f"the top {top} induction heads of the scan"
        )
    else:
        reasons = {}
    story_heads = [(l, h) for l, h, _ in scan.top_heads("induction", min(top, scan.settings.get("top_k", top)))]

    t = time.perf_counter()
    say("OV circuits")
    first = 1 if m.first_token.id is not None else 0
    ids = list(dict.fromkeys(asked + [i for s in seqs for i in s.ids[first:]]))
    eps = float(getattr(m.cfg, "eps", 1e-5))
    tok = m.tokenizer
    x = effective_embedding(m, ids, "block0")  # the embedding the copying scores read (McDougall et al. 2023)
    ov = {
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
        for lh in dict.fromkeys(chosen + story_heads)
    }
    timings["ov_s"] = time.perf_counter() - t

    k_comp, k_where = composition.excess("K"), composition.where
    if is_rotary(m):  # the rotary K form depends on the offset: average it over offsets 0-63 for the story heads
        by = composition_by_offset(m, story_heads, range(COMPOSITION_OFFSETS), weights=w, kinds=("K",))
        k_comp = np.full_like(k_comp, np.nan)
        for l, h in by.heads:
            k_comp[:, :, l, h] = by.excess((l, h), "K").mean(-1)
        k_where = f"mean over {by.span}"
    stories = induction_stories(
        story_heads,
        m.name,
        ov=ov,
        induction=scan.scores["induction"],
        previous_token=scan.scores["previous_token"],
        k_composition=k_comp,
        copying=scan.scores.get("copying"),
        dla_first=scan.scores["direct_logit_first"],
        dla_later=scan.scores["direct_logit_later"],
        ablation=scan.ablation or None,
    )
    info = {**m.info(), "norm": w.norm}
    return LogitAnalysis(
        model=info,
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
