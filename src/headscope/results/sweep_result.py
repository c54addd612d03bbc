"""A sweep's table: one row per model or checkpoint, with the failures (plain data).

Run by :func:`headscope.pipeline.sweep.run_sweep`; its figure comes from the view registered
for :class:`SweepResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..scores import score as declared
from .base import Result

SUMMARY_DEFINITIONS = {
    "induction_top": "Induction score of the entry's best head (definition: induction).",
    "induction_sum": "Induction score summed over every head of every layer: grows with the number of "
    "heads doing induction, and with the number of heads the model has.",
    "prefix_matching_top": "Prefix-matching score of the best prefix-matching head.",
    "loss_first_repeat": "Mean loss (nats) on targets in the first repeat: unpredictable, about ln(vocab).",
    "loss_later_repeats": "Mean loss (nats) on targets in repeats 2..R: falls when induction heads work.",
    "same_weights_as": "The first entry of the sweep whose weights are bit-identical to this entry's (sha256 over "
    "every parameter, weights_sha256): the same model under another name or step.",
    "induction": declared("induction").definition,
}


@dataclass(repr=False, eq=False)  # Result gives both
class SweepResult(Result):
    """A sweep's table: one row per entry (finished ones with their summary), and the failures.

    Reads back from ``sweep.json`` (:meth:`from_json`); each finished entry's whole scan reads back
    from its ``entries/<key>.json`` with ``InductionResult.from_dict(json.load(f)["result"])``.
    """

    json_file: ClassVar[str | None] = "sweep.json"
    json_what: ClassVar[str] = "a sweep"
    json_hint: ClassVar[str] = (
        "pass the sweep.json that `headscope sweep` wrote (or its folder), or SweepResult.to_json()'s output"
    )
    json_keys: ClassVar[frozenset[str]] = frozenset({"entries", "failures", "settings"})

    rows: list[dict]
    failures: list[dict]
    settings: dict
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_frame(self):
        """One row per entry: label, model, revision, step, status and the summary numbers."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "entries": self.rows,
            "failures": self.failures,
            "definitions": SUMMARY_DEFINITIONS,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SweepResult:
        """The sweep's table back from :meth:`to_dict` (what ``sweep.json`` holds: its failures without their
        tracebacks). ``out_dir`` and ``files`` are not in the JSON: None and empty."""
        with cls._reading(d):
            back = cls(
                rows=[dict(r) for r in d["entries"]],
                failures=[dict(f) for f in d["failures"]],
                settings=dict(d["settings"]),
            )
        return back

    def plot(self):
        """Induction against model size or training step, one line per series (a matplotlib figure).

        Raises :class:`~headscope.errors.BadInput` when no entry finished (``failures`` says why each failed).
        """
        if not any(r.get("status") == "done" for r in self.rows):
            from ..errors import BadInput

            reasons = "; ".join(f"{f.get('label')}: {f.get('error')}" for f in self.failures[:3])
            raise BadInput(
                f"no entry of this sweep finished, so there is nothing to plot ({reasons or 'no entries'})",
                hint="read each entry's error and hint in .failures; fix them and run the sweep again",
            )
        return self._figure("sweep_figure")
