"""Roles of every head across every score, with the in-context learning check (plain data).

Gathered by :func:`headscope.pipeline.roles.analyze_heads`: one induction scan gives every score
of the registry; the ICL score and the natural-text sinks are measured beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import BadInput
from ..head_labels import head_label
from ..scores import definitions, roles_legend, roles_present, weight_notes
from ..scores import score as declared
from .base import Result, rounded
from .icl_result import DEFINITION as ICL_DEFINITION
from .icl_result import ICLResult
from .scan_result import InductionResult, rounded_entry
from .sink_scores import DEFINITIONS as SINK_DEFINITIONS
from .sink_scores import SinkScores


@dataclass(repr=False, eq=False)  # Result gives both
class HeadsAnalysis(Result):
    """Roles of every head across every score, with the in-context learning check.

    ``induction`` holds the scores (``scores[name]`` is ``[n_layers, n_heads]``), thresholds and
    settings (``settings["weight_scores"]`` says which successor sets the tokenizer had); ``icl``
    the ICL score on natural text with one entry per ablated head (None with ``icl=False``);
    ``natural_sinks`` Gu et al.'s sink scores on natural text, whose ``alpha`` is the attention-sink
    role's score (None with ``natural_sinks=False``: then no head takes that role).
    Reads back from ``heads.json`` (:meth:`from_json`).
    """

    json_file: ClassVar[str | None] = "heads.json"
    json_what: ClassVar[str] = "a heads analysis"
    json_hint: ClassVar[str] = (
        "pass the heads.json that `headscope heads` wrote (or its folder), or HeadsAnalysis.to_json()'s output"
    )
    json_keys: ClassVar[frozenset[str]] = frozenset({"roles", "role_counts", "scores"})

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
        return [s.name for s in roles_present(self.induction.scores, self.thresholds)]

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
                "scores": {r: rounded(float(sc[r][l, h])) for r in roles},
                **({"note": notes[(l, h)]} if (l, h) in notes else {}),
            }
            for (l, h), roles in sorted(self.roles().items())
        ]

    def role_counts(self) -> dict[str, int]:
        """How many heads take each role (0 included: an absent kind is a finding)."""
        sc = self.induction.scores
        return {r: int((sc[r] >= self.thresholds[r]).sum()) for r in self.role_names()}

    def weight_notes(self) -> list[str]:
        """How the weight scores were computed, a sentence each (successor: which ordinal sets the tokenizer had)."""
        return weight_notes(self.induction.settings.get("weight_scores", {}))

    def legend(self) -> dict[str, str]:
        """Every role's definition with its threshold, the ICL score's, and the natural-text sinks' if measured."""
        out = {f"{declared(r).label} (≥ {self.thresholds[r]})": self.definition(r) for r in self.role_names()}
        if self.icl is not None:
            out["in-context learning"] = ICL_DEFINITION
        if self.natural_sinks is not None:
            out["sink rate"] = SINK_DEFINITIONS["sink_rate"]
        out["roles"] = roles_legend(self.thresholds, self.induction.scores)
        return out

    def definition(self, name: str) -> str:
        """Score ``name``'s definition: the registry's, the attention sink's with this run's own windows."""
        if name == "attention_sink" and self.natural_sinks is not None:
            return self.natural_sinks.definition()
        return declared(name).definition

    def to_frame(self):
        """One row per head: layer, head, label, every score, roles; natural-text sinks and ICL delta when measured."""
        frame = self.induction.to_frame()  # its label column included
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
            "weight_scores": res.settings.get("weight_scores", {}),
            "scores": {n: rounded(res.scores[n]) for n in res.score_order()},
            "icl": icl,
            "natural_sinks": None if self.natural_sinks is None else self.natural_sinks.to_dict(),
            "definitions": {
                **definitions(res.settings.get("controls")),
                "attention_sink": self.definition("attention_sink"),
                "icl": ICL_DEFINITION,
            },
            "legend": self.legend(),
            "timings": {k: rounded(v, 3) for k, v in {**res.timings, **self.timings}.items()},
            "notes": self.notes,
            # the rest of the scan the scores come from (loss, causal check, its own timings and notes): read back
            "scan": {
                "loss": res.loss_dict(),
                "ablation": [rounded_entry(e) for e in res.ablation],
                "timings": {k: rounded(v, 3) for k, v in res.timings.items()},
                "notes": res.notes,
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> HeadsAnalysis:
        """The analysis back from :meth:`to_dict` (what ``heads.json`` holds), to replot or query it in a notebook.

        Numbers come back as written (6 decimals; null as NaN); the scan's attention samples are not in the
        JSON, so none come back. A ``heads.json`` from before its ``scan`` entry was written is refused.
        """
        with cls._reading(d):
            if "scan" not in d:
                raise BadInput(
                    "this heads.json was written before headscope wrote the scan entry that reading it back needs",
                    hint="run `headscope heads` again to write one that reads back",
                )
            scan = d["scan"]
            scan_timings = dict(scan.get("timings", {}))
            induction = InductionResult.from_dict(  # the scan's part of heads.json, laid out as its scores.json
                {
                    "model": d["model"],
                    "settings": {**d["settings"], "weight_scores": d["weight_scores"]},
                    "scores": d["scores"],
                    "loss": scan["loss"],
                    "ablation": scan.get("ablation", []),
                    "thresholds": d["thresholds"],
                    "timings": scan_timings,
                    "notes": scan.get("notes", []),
                }
            )
            icl = None
            if d["icl"] is not None:  # heads.json labels each ablated head; the ICL result itself does not
                icl_doc = {**d["icl"], "ablations": [_unlabelled(e) for e in d["icl"]["ablations"]]}
                icl = ICLResult.from_dict(icl_doc)
            sinks = None if d["natural_sinks"] is None else SinkScores.from_dict(d["natural_sinks"])
            own = {k: v for k, v in d.get("timings", {}).items() if scan_timings.get(k) != v}
            back = cls(induction, icl, sinks, timings=own, notes=list(d.get("notes", [])))
        return back


def _unlabelled(entry: dict) -> dict:
    """An ICL ablation entry of ``heads.json`` without the head label :meth:`HeadsAnalysis.to_dict` puts first."""
    return {k: v for k, v in entry.items() if k != "label"}
