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
    "top_head": "The entry's head with the highest induction score (L<layer>H<head>; top_layer, top_head_index).",
    "induction_top": "Induction score of the entry's best head (definition: induction).",
    "induction_sum": "Induction score summed over every head of every layer: grows with the number of "
    "heads doing induction, and with the number of heads the model has.",
    "prefix_matching_top": "Prefix-matching score of the best prefix-matching head.",
    "loss_first_repeat": "Mean loss (nats) on targets in the first repeat: unpredictable, about ln(vocab).",
    "loss_later_repeats": "Mean loss (nats) on targets in repeats 2..R: falls when induction heads work.",
    "error": "Why the entry failed (its one-line message; the hint is in sweep.json's failures); empty for an "
    "entry that finished or has not run.",
    "same_weights_as": "The first entry of the sweep whose weights are bit-identical to this entry's (sha256 over "
    "every parameter, weights_sha256): the same model under another name or step.",
    "induction": declared("induction").definition,
}

#: The columns of :meth:`SweepResult.to_frame` and ``sweep.csv``, in this order whatever the entries' fates:
#: a failed entry leaves its summary cells empty and says why in ``error`` (empty for the others).
COLUMNS = (
    "label",
    "model",
    "revision",
    "step",
    "series",
    "status",
    "n_layers",
    "n_heads",
    "top_head",
    "top_layer",
    "top_head_index",
    "induction_top",
    "induction_sum",
    "prefix_matching_top",
    "loss_first_repeat",
    "loss_later_repeats",
    "chunk_size",
    "load_s",
    "scan_s",
    "file",
    "weights_sha256",
    "same_weights_as",
    "error",
)
#: Whole numbers: kept integers (pandas' nullable ``Int64``, an empty cell where an entry has none).
INT_COLUMNS = ("step", "n_layers", "n_heads", "top_layer", "top_head_index", "chunk_size")


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
        """One row per entry: label, model, revision, step, status and the summary numbers.

        The columns are :data:`COLUMNS`, in that order, whether or not an entry failed (a key a row
        holds beyond them follows them); :data:`INT_COLUMNS` are nullable integers (``Int64``), so
        a failed entry's empty cells do not turn ``n_layers`` into ``30.0``.
        """
        import pandas as pd

        extra = [k for k in dict.fromkeys(k for r in self.rows for k in r) if k not in COLUMNS]
        frame = pd.DataFrame(self.rows, columns=[*COLUMNS, *extra])
        for col in INT_COLUMNS:
            frame[col] = frame[col].astype("Int64")
        return frame

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
