"""The in-context learning score on natural text and each ablated head's share in it (plain data).

Computed by :func:`headscope.kinds.icl_score`; the definition below is what its legend and
JSON say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..jsonsafe import dumps
from .base import Result, array_of, float_of, rounded

DEFINITION = (
    "In-context learning score: loss (nats) at document token 500 minus loss at token 50 (counting from 0, i.e. with "
    "500 and 50 tokens of context), averaged over windows of natural text; negative = later tokens are predicted "
    "better. Source: Olsson et al. 2022. Per head: the change of that score when the head's hook_z is mean-ablated. "
    "Each comes with its standard error over windows and a 95% interval (Student t; deltas paired by window)."
)


@dataclass(repr=False, eq=False)  # Result gives both
class ICLResult(Result):
    """``per_position_loss[i]`` is the mean loss of document token i (nan where there is none).

    Reads back from its :meth:`to_dict` (``heads.json``'s ``icl``; :meth:`from_dict`).
    """

    json_what: ClassVar[str] = "an in-context learning score"
    json_hint: ClassVar[str] = "pass ICLResult.to_json()'s output, or the icl entry of heads.json"
    json_keys: ClassVar[frozenset[str]] = frozenset({"icl_score", "loss_early", "loss_late", "ablations"})

    icl_score: float
    icl_stderr: float
    loss_early: float
    loss_late: float
    early: int
    late: int
    per_position_loss: np.ndarray
    n_windows: int
    source: str
    ablation_kind: str | None
    ablations: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    icl_ci95: tuple[float, float] = (float("nan"), float("nan"))  # 95% interval of icl_score (issue 19.10)

    def to_dict(self) -> dict:
        return {
            "definition": DEFINITION,
            "icl_score": self.icl_score,
            "icl_stderr": self.icl_stderr,
            "icl_ci95": list(self.icl_ci95),
            "loss_early": self.loss_early,
            "loss_late": self.loss_late,
            "early": self.early,
            "late": self.late,
            "n_windows": self.n_windows,
            "source": self.source,
            "ablation": self.ablation_kind,
            "ablations": self.ablations,
            "per_position_loss": rounded(self.per_position_loss, 5),
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ICLResult:
        """The result back from :meth:`to_dict` (numbers as written; null as NaN)."""
        with cls._reading(d):
            lo, hi = d.get("icl_ci95") or (None, None)
            back = cls(
                icl_score=float_of(d["icl_score"]),
                icl_stderr=float_of(d["icl_stderr"]),
                loss_early=float_of(d["loss_early"]),
                loss_late=float_of(d["loss_late"]),
                early=int(d["early"]),
                late=int(d["late"]),
                per_position_loss=array_of(d["per_position_loss"]),
                n_windows=int(d["n_windows"]),
                source=str(d["source"]),
                ablation_kind=d["ablation"],
                ablations=[dict(e) for e in d.get("ablations", [])],
                timings=dict(d.get("timings", {})),
                icl_ci95=(float_of(lo), float_of(hi)),
            )
        return back

    def to_json(self, indent: int | None = None, **kw) -> str:
        return dumps(self.to_dict(), indent=indent, **kw)  # strict JSON: NaN/Infinity -> null

    def to_frame(self):
        """One row per ablated head."""
        import pandas as pd

        return pd.DataFrame(self.ablations)
