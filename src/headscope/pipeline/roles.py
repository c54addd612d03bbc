"""Every kind of head at once: the role table of ``headscope heads``.

One induction scan (repeated random tokens, one forward pass per chunk) gives the registry's
(:data:`headscope.scores.SCORES`) attention scores from the pass and the weight scores (copying,
successor, copy suppression) from the weights, cached on disk. The attention-sink role is read
in Gu et al.'s setting, on natural text (:func:`headscope.kinds.sink_scores_on_text`: 100 windows
of 64 tokens, cached on disk), and joins the scan's scores. A head takes a role for each score
that reaches its threshold. Olsson et al.'s in-context learning score with each top induction
head's ablation delta (:func:`headscope.kinds.icl_score`) follows. The scan's own causal check (ablations on repeated
tokens) is left to ``headscope induction``: here the causal check is the ICL one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..head_labels import head_label
from ..head_labels import top_k as top_k_heads
from ..jsonsafe import dumps
from ..kinds.icl import DEFINITION as ICL_DEFINITION
from ..kinds.icl import ICL_DEFAULT_WINDOWS, ICLResult, icl_score
from ..kinds.sink import DEFINITIONS as SINK_DEFINITIONS
from ..kinds.sink import SinkScores, sink_scores_on_text
from ..models.model import as_model
from ..scan import scan_induction
from ..scan.result import InductionResult
from ..scores import definitions, role_scores, roles_legend
from ..scores import score as declared

#: Natural-text windows of the ICL check by default: enough for a standard error of about 0.3 nats
#: (kinds.icl); the ablated passes restart at the ablated layer and read two positions.
ICL_WINDOWS = ICL_DEFAULT_WINDOWS
#: Heads whose ICL ablation delta is measured by default (the top induction heads).
ICL_TOP = 3
#: Olsson et al.'s positions and headscope's window (kinds.icl's defaults).
ICL_LATE, ICL_WINDOW = 500, 512
#: Gu et al.'s setting: windows of 64 tokens of natural text.
SINK_WINDOWS = 100
SINK_ROLE = "attention_sink"


@dataclass
class HeadsAnalysis:
    """Roles of every head across every score, with the in-context learning check.

    ``induction`` holds the scores (``scores[name]`` is ``[n_layers, n_heads]``), thresholds and
    settings (``settings["weight_scores"]`` says which successor sets the tokenizer had); ``icl``
    the ICL score on natural text with one entry per ablated head (None with ``icl=False``);
    ``natural_sinks`` Gu et al.'s sink scores on natural text, whose ``alpha`` is the attention-sink
    role's score (None with ``natural_sinks=False``: then no head takes that role).
    """

    induction: InductionResult
    icl: ICLResult | None = None
    natural_sinks: SinkScores | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # --- views -----------------------------------------------------------------------------
    @property
    def model(self) -> dict:
        return self.induction.model

    @property
    def thresholds(self) -> dict[str, float]:
        return self.induction.thresholds

    def roles(self) -> dict[tuple[int, int], list[str]]:
        """``{(layer, head): [role, ...]}`` for every head with at least one role, roles in registry order."""
        return self.induction.roles()

    def role_names(self) -> list[str]:
        """The registry's roles this analysis can give (every score with a threshold that was computed)."""
        return [s.name for s in role_scores() if s.name in self.induction.scores and s.name in self.thresholds]

    def role_table(self) -> list[dict]:
        """One entry per head with at least one role, by layer then head: its roles and the score behind each."""
        sc = self.induction.scores
        notes = self.induction.role_notes()
        return [
            {
                "head": head_label(l, h),
                "layer": l,
                "head_index": h,
                "roles": roles,
                "scores": {r: round(float(sc[r][l, h]), 6) for r in roles},
                **({"note": notes[(l, h)]} if (l, h) in notes else {}),
            }
            for (l, h), roles in sorted(self.roles().items())
        ]

    def role_counts(self) -> dict[str, int]:
        """How many heads take each role (0 included: an absent kind is a finding)."""
        sc = self.induction.scores
        return {r: int((sc[r] >= self.thresholds[r]).sum()) for r in self.role_names()}

    def successor_sets(self) -> dict:
        """Which ordinal sets the successor score used (``sets``) and why the others were skipped (``skipped``)."""
        return dict(self.induction.settings.get("weight_scores", {}).get("successor", {}))

    def legend(self) -> dict[str, str]:
        """Every role's definition with its threshold, the ICL score's, and the natural-text sinks' if measured."""
        out = {f"{declared(r).label} (≥ {self.thresholds[r]})": declared(r).definition for r in self.role_names()}
        if self.icl is not None:
            out["in-context learning"] = ICL_DEFINITION
        if self.natural_sinks is not None:
            out["sink rate"] = SINK_DEFINITIONS["sink_rate"]
        out["roles"] = roles_legend(self.thresholds)
        return out

    def to_frame(self):
        """One row per head: layer, head, label, every score, roles; natural-text sinks and ICL delta when measured."""
        frame = self.induction.to_frame()
        frame.insert(2, "label", [head_label(l, h) for l, h in zip(frame["layer"], frame["head"], strict=True)])
        if self.natural_sinks is not None:  # alpha_1 is the attention_sink column already
            frame["sink_rate"] = self.natural_sinks.sink_rate.ravel().astype(float)
        if self.icl is not None and self.icl.ablations:
            delta = {(e["layer"], e["head"]): e["delta"] for e in self.icl.ablations}
            frame["icl_delta"] = [delta.get((l, h), np.nan) for l, h in zip(frame["layer"], frame["head"], strict=True)]
        return frame

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        res = self.induction
        icl = None
        if self.icl is not None:
            icl = self.icl.to_dict()
            icl["ablations"] = [{"label": head_label(e["layer"], e["head"]), **e} for e in icl["ablations"]]
        return {
            "model": res.model,
            "settings": {k: v for k, v in res.settings.items() if k != "weight_scores"},
            "thresholds": self.thresholds,
            "roles": self.role_table(),
            "role_counts": self.role_counts(),
            "successor_sets": self.successor_sets(),
            "weight_scores": res.settings.get("weight_scores", {}),
            "scores": {n: np.round(res.scores[n], 6).tolist() for n in res.score_order()},
            "icl": icl,
            "natural_sinks": None if self.natural_sinks is None else self.natural_sinks.to_dict(),
            "definitions": {**definitions(), "icl": ICL_DEFINITION},
            "legend": self.legend(),
            "timings": {k: round(v, 3) for k, v in {**res.timings, **self.timings}.items()},
            "notes": self.notes,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)  # strict JSON: NaN -> null

    def _repr_html_(self) -> str:
        from ..render.page import heads_html

        return heads_html(self)


def analyze_heads(
    model,
    *,
    seq_len: int = 50,
    batch: int = 10,
    repeats: int = 2,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
    icl: bool = True,
    icl_top: int = ICL_TOP,
    icl_windows: int | None = ICL_WINDOWS,
    ablation: str = "mean",
    natural_sinks: bool = True,
    sink_windows: int = SINK_WINDOWS,
    files=None,
    max_memory_gb: float = 2.0,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> HeadsAnalysis:
    """Every head's roles across every score of the registry, and the ICL check of the top induction heads.

    The scan (``seq_len``, ``batch``, ``repeats``, ``seed``: as ``scan_induction``, without its
    causal check) scores every head; ``thresholds`` override the registry's role thresholds.
    With ``icl``, Olsson et al.'s score on ``icl_windows`` windows of 512 tokens of ``files``
    (default: CPython's ``pydoc_data.topics``) and the change when each of the ``icl_top`` top
    induction heads is ``ablation``-ablated. With ``natural_sinks``, Gu et al.'s alpha_1 on
    ``sink_windows`` windows of 64 tokens of the same text gives the attention-sink role.

    >>> a = analyze_heads(model, seq_len=8, batch=2, icl=False, progress=False)
    >>> sorted(a.role_counts()) == sorted(a.role_names()), a.icl is None
    (True, True)
    """
    m = as_model(model)
    timings: dict[str, float] = {}
    res = scan_induction(
        m,
        seq_len=seq_len,
        batch=batch,
        repeats=repeats,
        seed=seed,
        top_k=max(icl_top, 1),
        ablate=False,
        thresholds=thresholds,
        max_memory_gb=max_memory_gb,
        sample=False,
        progress=progress,
    )
    out = HeadsAnalysis(induction=res, timings=timings, notes=list(res.notes))
    window = icl_window(m)
    if icl and window is None:
        out.notes.append(
            f"in-context learning score skipped: it reads the loss at token {ICL_LATE}, and this model's "
            f"context holds {m.cfg.n_ctx} tokens"
        )
    elif icl and window is not None:
        k = min(icl_top, m.n_layers * m.n_heads)
        heads = [(l, h) for l, h, _ in top_k_heads(res.scores["induction"], k)] if k > 0 else []
        named = ", ".join(head_label(*h) for h in heads) or "no head"
        log(f"in-context learning score on natural text, ablating {named}")
        if window < ICL_WINDOW:
            out.notes.append(
                f"in-context learning score on windows of {window} tokens (the model's context), not {ICL_WINDOW}"
            )
        t0 = time.perf_counter()
        out.icl = icl_score(m, files, heads=heads, ablation=ablation, window=window, max_windows=icl_windows)
        timings["icl_s"] = time.perf_counter() - t0
    if natural_sinks:
        log("attention sinks on natural text (Gu et al.'s setting)")
        t0 = time.perf_counter()
        out.natural_sinks = add_sink_role(m, res, files, sink_windows)
        timings["natural_sinks_s"] = time.perf_counter() - t0
    else:
        out.notes.append("attention-sink role not measured (--no-natural-sinks): no head takes it")
    return out


def add_sink_role(model, res: InductionResult, files=None, windows: int = SINK_WINDOWS) -> SinkScores:
    """Gu et al.'s alpha_1 on natural text (:func:`~headscope.kinds.sink_scores_on_text`) as the scan's attention-sink score.

    The registry declares ``attention_sink`` on natural text, so the scan leaves it out; this
    puts it beside the scan's scores, where the roles, tables, JSON and page read it.
    """
    sinks = sink_scores_on_text(model, files, n_sequences=windows)
    res.scores[SINK_ROLE] = sinks.alpha
    return sinks


def icl_window(model) -> int | None:
    """Document tokens per ICL window: 512, or what the model's context holds past its BOS when that is shorter.

    None when the context cannot reach token 500 (the score reads the loss there).
    """
    m = as_model(model)
    n_ctx = getattr(m.cfg, "n_ctx", None)
    room = ICL_WINDOW if n_ctx is None else min(ICL_WINDOW, n_ctx - (m.first_token.id is not None))
    return room if room > ICL_LATE else None


def describe_icl(icl: ICLResult) -> list[str]:
    """Plain sentences: the ICL score and each ablated head's delta, each with its SE and 95% interval."""
    lo, hi = icl.icl_ci95
    lines = [
        f"In-context learning score: {icl.icl_score:+.3f} nats (SE {icl.icl_stderr:.3f}, 95% interval "
        f"[{lo:+.3f}, {hi:+.3f}]; loss at token {icl.late} {icl.loss_late:.2f} minus token {icl.early} "
        f"{icl.loss_early:.2f}) on {icl.source}"
    ]
    for e in icl.ablations:
        d, se = e["delta"], e["delta_stderr"]
        a, b = e.get("delta_ci95", (float("nan"), float("nan")))
        lines.append(
            f"  {head_label(e['layer'], e['head'])} {icl.ablation_kind}-ablated: Δ {d:+.3f} (SE {se:.3f}, 95% "
            f"interval [{a:+.3f}, {b:+.3f}])"
            + (
                " - raises the score on these windows (interval above 0: weaker in-context learning)"
                if a > 0
                else " - lowers it on these windows (interval below 0)"
                if b < 0
                else " - the interval includes 0"
            )
        )
    return lines
