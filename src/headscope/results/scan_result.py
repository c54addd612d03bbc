"""The result of an induction scan: scores of every head, loss by position, the causal check.

Numbers and metadata only: pictures and the notebook view come from the view registered for
each type (:mod:`headscope.render.views`); files are written by :mod:`headscope.pipeline.files`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import BadInput
from ..head_labels import head_label, top_k
from ..scores import (
    BOOTSTRAP_RESAMPLES,
    INTERVAL_LEVEL,
    definitions,
    opposite_reason,
    opposite_roles,
    roles_present,
    score_names,
)
from ..stats import bootstrap_interval, signed, spread, with_interval
from .attention import AttentionSample
from .base import Result, array_of, float_of, rounded


@dataclass(repr=False, eq=False)  # Result gives both
class InductionResult(Result):
    """Scores for every head, loss by position and the causal check.

    ``scores[name]`` is ``[n_layers, n_heads]`` for every score of the registry
    (:data:`headscope.scores.SCORES`); ``per_position_loss[p]`` is the loss of predicting
    token ``p + 1``. Reads back from ``scores.json`` (:meth:`from_json`).
    """

    json_file: ClassVar[str | None] = "scores.json"
    json_what: ClassVar[str] = "an induction scan"
    json_hint: ClassVar[str] = (
        "pass the scores.json that `headscope induction` wrote (or its folder), or InductionResult.to_json()'s output"
    )
    json_keys: ClassVar[frozenset[str]] = frozenset({"scores", "loss", "ablation_control"})

    model: dict
    settings: dict
    scores: dict[str, np.ndarray]
    per_position_loss: np.ndarray
    loss_first_repeat: float
    loss_later_repeats: float
    ablation: list[dict]
    thresholds: dict[str, float]
    samples: list[AttentionSample] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "--top 50 is more than this model's 8 heads ..."

    # --- views -----------------------------------------------------------------------------
    def top_heads(self, score: str = "induction", k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the highest ``score``: ``[(layer, head, value), ...]`` (ties: layer, then head)."""
        return top_k(self.score_array(score), k)

    def score_array(self, score: str) -> np.ndarray:
        """``scores[score]`` ``[n_layers, n_heads]``; a score this scan did not compute is a :class:`BadInput`
        naming the ones it did (and, for a registry score read elsewhere, where it is)."""
        if score in self.scores:
            return self.scores[score]
        known = ", ".join(self.scores)
        if score in score_names():
            raise BadInput(
                f"this scan did not compute {score!r}: it is read on another input than repeated random tokens",
                hint=f"headscope.analyze_heads(model) (or `headscope heads`) reads it; this scan has: {known}",
            )
        raise BadInput(f"unknown score {score!r}", hint=f"this scan has: {known}")

    def roles(self) -> dict[tuple[int, int], list[str]]:
        """Roles of every head that has at least one, from :attr:`thresholds`."""
        out: dict[tuple[int, int], list[str]] = {}
        for s in roles_present(self.scores, self.thresholds):
            layers, heads = np.nonzero(self.scores[s.name] >= self.thresholds[s.name])
            for l, h in zip(layers.tolist(), heads.tolist()):
                out.setdefault((l, h), []).append(s.name)
        return out

    def role_notes(self) -> dict[tuple[int, int], str]:
        """Why a head holds two opposite roles (the registry's :func:`~headscope.scores.opposite_roles`), per head."""
        roles = self.roles()
        out: dict[tuple[int, int], str] = {}
        for a, b in opposite_roles():
            for lh, names in roles.items():
                if a.name in names and b.name in names:
                    va, vb = float(self.scores[a.name][lh]), float(self.scores[b.name][lh])
                    out[lh] = opposite_reason(a, b, va, vb)
        return out

    def heads(self) -> list[dict]:
        """One entry per (head, role), best first within each role."""
        entries = []
        for s in roles_present(self.scores, self.thresholds):
            a = self.scores[s.name]
            found = [(l, h, v) for l, h, v in top_k(a, a.size) if v >= self.thresholds[s.name]]
            entries += [
                {"layer": l, "head": h, "label": head_label(l, h), "role": s.name, "score": rounded(float(v))}
                for l, h, v in found
            ]
        return entries

    def ablation_rises(self) -> dict[tuple[int, int], float]:
        """Each singly ablated head's change in later-repeat loss (mean over sequences)."""
        return {(e["layer"], e["head"]): e["loss_increase"] for e in self.ablation if e["kind"] == "head"}

    def ablation_of(self, layer: int, head: int) -> dict | None:
        """The causal-check entry of ``head`` ablated alone (None if it was not)."""
        return next(
            (e for e in self.ablation if e["kind"] == "head" and (e["layer"], e["head"]) == (layer, head)), None
        )

    def loss_dict(self) -> dict:
        """The loss as ``scores.json`` (and ``heads.json``'s scan entry) writes it: per position, first, later."""
        return {
            "per_position": rounded(self.per_position_loss),
            "first_repeat": rounded(self.loss_first_repeat),
            "later_repeats": rounded(self.loss_later_repeats),
        }

    def control_spread(self) -> dict | None:
        """The random control over its draws: median and range of the draws' changes (None without one)."""
        return control_spread(self.ablation)

    def _top_against_control(self) -> str:
        """``"; all 5 top heads' change (+6.968) is above 10 of the 10 draws; above the largest draw (+6.644):
        difference +0.324 [+0.073, +0.587] nats, paired over the same 10 sequences"``: the same number in the same units
        (later-repeat loss, nats, the same sequences) set against each draw, and against the largest
        with the interval of the per-sequence difference (:func:`top_minus_draw`); "" without both."""
        top = next((e for e in self.ablation if e["kind"] == "all_top"), None)
        draws = [e for e in self.ablation if e["kind"] == "control"]
        if top is None or len(draws) < 2:
            return ""
        above = sum(top["loss_increase"] > d["loss_increase"] for d in draws)
        text = (
            f"; all {len(top['heads'])} top heads' change ({signed(top['loss_increase'])}) is above {above} of the "
            f"{len(draws)} draws"
        )
        largest = max(draws, key=lambda d: d["loss_increase"])
        paired = top_minus_draw(top, largest, seed=int(self.settings.get("seed") or 0))
        if paired is None:  # a scores.json written before the per-sequence changes were kept
            return text
        diff, lo, hi, n = paired
        said = "above" if lo > 0 else "below" if hi < 0 else "not clearly different from"
        return (
            f"{text}; {said} the largest draw ({signed(largest['loss_increase'])}): difference "
            f"{with_interval(diff, lo, hi)} nats, paired over the same {n} sequences"
        )

    def verdicts(self) -> list[str]:
        """Plain statements about the causal check: each head, all together, the control's spread."""
        out = []
        for e in self.ablation:
            if e["kind"] == "control":
                continue
            who = head_label(e["layer"], e["head"]) if e["kind"] == "head" else f"all {len(e['heads'])} top heads"
            said = {"raises": "raises", "lowers": "lowers", "no clear change": "does not clearly change"}
            out.append(
                f"{who}: ablating {'it' if e['kind'] == 'head' else 'them'} {said[e['verdict']]} the later-repeat "
                f"loss: {ablation_text(e)}"
            )
        c = self.control_spread()
        n_total = next((int(np.size(v)) for v in self.scores.values() if np.ndim(v) == 2), None)  # every head
        n_top = sum(e["kind"] == "head" for e in self.ablation)
        if c is not None and c["n"] == 1 and n_total is not None and n_total - n_top <= n_top:
            e = next(e for e in self.ablation if e["kind"] == "control")
            out.append(f"control: all {c['n_heads']} other heads (too few to draw at random): {ablation_text(e)}")
        elif c is not None:
            out.append(
                f"control, {c['n']} draws of {c['n_heads']} other heads at random: median {signed(c['median'])} nats, "
                f"draws from {signed(c['min'])} to {signed(c['max'])} "
                f"(first repeat: median {signed(c['first_repeat']['median'])}, draws from "
                f"{signed(c['first_repeat']['min'])} to {signed(c['first_repeat']['max'])} nats)"
                + self._top_against_control()
            )
        return out

    def score_order(self) -> list[str]:
        """The registry's scores that this result holds, in table order."""
        return [n for n in score_names() if n in self.scores]

    def to_frame(self):
        """One row per head: layer, head, its label (``L18H6``), every score, and its roles."""
        import pandas as pd

        L, H = self.scores["induction"].shape
        roles = self.roles()
        names = self.score_order()
        rows = []
        for l in range(L):
            for h in range(H):
                row: dict[str, Any] = {"layer": l, "head": h, "label": head_label(l, h)}
                row.update({name: float(self.scores[name][l, h]) for name in names})
                row["roles"] = "+".join(roles.get((l, h), []))
                row.update(_ablation_columns(self.ablation_of(l, h)))
                rows.append(row)
        return pd.DataFrame(rows)

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        r = rounded
        return {
            "model": self.model,
            "settings": self.settings,
            "scores": {name: r(self.scores[name]) for name in self.score_order()},
            "loss": self.loss_dict(),
            "ablation": [rounded_entry(e) for e in self.ablation],
            # from the draws as written, so that a result read back from this JSON gives the same spread
            "ablation_control": control_spread([rounded_entry(e) for e in self.ablation]),
            "heads": self.heads(),
            "thresholds": self.thresholds,
            "definitions": definitions(self.settings.get("controls")),
            "timings": {k: rounded(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> InductionResult:
        """The result back from :meth:`to_dict` (what ``scores.json`` holds), to replot or query it in a notebook.

        Numbers come back as written (6 decimals; null as NaN); the attention samples are not in the JSON,
        so none come back (``plot_scores``, ``plot_loss``, ``plot_ablation``, ``top_heads`` and
        ``to_frame`` work as on the result that wrote it). :meth:`from_json` reads the file.

        >>> res = headscope.scan_induction(model, seq_len=5, batch=2, ablate=False)
        >>> back = InductionResult.from_json(res.to_json())   # or a scores.json path, or its folder
        >>> back == res, [x[:2] for x in back.top_heads("induction", 3)] == [x[:2] for x in res.top_heads("induction", 3)]
        (True, True)
        """
        with cls._reading(d):
            loss = d["loss"]
            back = cls(
                model=dict(d["model"]),
                settings=dict(d["settings"]),
                scores={k: array_of(v) for k, v in d["scores"].items()},
                per_position_loss=array_of(loss["per_position"]),
                loss_first_repeat=float_of(loss["first_repeat"]),
                loss_later_repeats=float_of(loss["later_repeats"]),
                ablation=[dict(e) for e in d.get("ablation", [])],
                thresholds={k: float(v) for k, v in d["thresholds"].items()},
                timings=dict(d.get("timings", {})),
                notes=list(d.get("notes", [])),
            )
        return back

    # --- pictures (drawn by the view registered for this type) -------------------------------
    def plot_scores(self, score: str = "induction", ax=None):
        """Layer x head heatmap of one score (a matplotlib figure)."""
        self.score_array(score)  # an unknown score: a BadInput naming the known ones, not a KeyError
        return self._figure("scores", score, ax=ax)

    def plot_loss(self, ax=None):
        """Loss by position with the repeats marked."""
        return self._figure("loss", ax=ax)

    def plot_ablation(self, ax=None):
        """The causal check as bars."""
        return self._figure("ablation", ax=ax)


def ablation_text(e: dict) -> str:
    """``+1.880 nats [1.740, 2.030]; first repeat +0.010 [-0.020, 0.040]``: one ablation's numbers."""
    lo, hi = e["interval"]
    flo, fhi = e["first_repeat_interval"]
    return (
        f"{signed(e['loss_increase'])} nats [{signed(lo)}, {signed(hi)}]; "
        f"first repeat {with_interval(e['first_repeat_increase'], flo, fhi)}"
    )


def top_minus_draw(top: dict, draw: dict, seed: int = 0) -> tuple[float, float, float, int] | None:
    """The top set's later-repeat change minus a control draw's, per sequence (both ablated the same
    sequences), its mean and bootstrap interval: ``(mean, low, high, n)``; None without per-sequence changes.

    Two ablations of the same sequences compare paired: the sequences' shared ups and downs cancel,
    where setting one interval beside the other would count them twice.

    >>> top = {"sequence_changes": [7.0, 7.2, 6.9, 7.1]}
    >>> top_minus_draw(top, {"sequence_changes": [6.5, 6.8, 6.4, 6.7]})[0]
    0.45
    """
    a, b = top.get("sequence_changes"), draw.get("sequence_changes")
    if not a or not b or len(a) != len(b):
        return None
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    lo, hi = bootstrap_interval(d, resamples=BOOTSTRAP_RESAMPLES, level=INTERVAL_LEVEL, seed=seed)
    return round(float(d.mean()), 12), lo, hi, int(d.size)


def control_spread(ablation: list[dict]) -> dict | None:
    """The random control's draws among ``ablation``: median and range of their changes (None without one)."""
    draws = [e for e in ablation if e["kind"] == "control"]
    if not draws:
        return None
    return {
        **spread([e["loss_increase"] for e in draws]),
        "first_repeat": spread([e["first_repeat_increase"] for e in draws]),
        "n_heads": len(draws[0]["heads"]),
    }


def rounded_entry(e: dict) -> dict:
    """An ablation entry with its floats rounded to 6 decimals (the JSON's precision, the one rounding rule)."""
    return {k: rounded(v) for k, v in e.items()}


def _ablation_columns(e: dict | None) -> dict[str, Any]:
    """The CSV's causal-check columns for one head (NaN / empty where it was not ablated alone)."""
    if e is None:
        nan = float("nan")
        return {
            "ablation_delta": nan,
            "ablation_low": nan,
            "ablation_high": nan,
            "ablation_verdict": "",
            "ablation_first_repeat_delta": nan,
        }
    return {
        "ablation_delta": e["loss_increase"],
        "ablation_low": e["interval"][0],
        "ablation_high": e["interval"][1],
        "ablation_verdict": e["verdict"],
        "ablation_first_repeat_delta": e["first_repeat_increase"],
    }
