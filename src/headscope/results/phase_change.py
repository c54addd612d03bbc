"""The phase change of a toy training run: curves against step and the detected window (plain data).

Computed by :func:`headscope.toy.analyse_run` (the window by :func:`headscope.toy.detect_phase_change`);
written by :func:`headscope.toy.save_phase`; drawn by the view registered for :class:`PhaseAnalysis`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..head_labels import head_label
from ..jsonsafe import strict
from ..scores import default_thresholds
from .base import Result, rounded

#: Ranges of copy distance the phase page's table summarises (the figure shows every distance).
DISTANCE_BINS: tuple[tuple[int, int], ...] = ((3, 8), (9, 16), (17, 32), (33, 48), (49, 61))
DEFINITION = (
    "Induction score at copy distance d: mean attention from each token of a span copied d tokens back "
    "(its tokens occur nowhere else) to the key right after the earlier occurrence of its token "
    "(key = query - d + 1), over the span's tokens and the sequences. The registry's induction read, at "
    "distance d instead of seq_len."
)

CURVES = {
    "loss_later_repeats": "Later-repeat loss (nats): mean loss on the second copy of [BOS] + r + r (the scan's "
    "sequences), its first token left out (no context predicts it); falls when induction works.",
    "loss_first_repeat": "First-repeat loss (nats): the first copy, unpredictable, about ln(vocab).",
    "induction_best": "Highest induction score over every head at that checkpoint (ARENA definition).",
    "induction_pair": "Induction score of the tracked induction head (the last checkpoint's best).",
    "previous_token_best": "Highest previous-token score among the heads in layers below the tracked induction head.",
    "previous_token_pair": "Previous-token score of the tracked previous-token head.",
    "induction_pair_offset_min": "Lowest induction score of the tracked induction head over copy distances 3 to "
    "the context (headscope.toy.offsets): an induction head at every distance keeps this high.",
    "k_composition": "K-composition score (Elhage et al. 2021) of the tracked previous-token head's OV circuit into "
    "the tracked induction head's keys: ||W_OV W_K W_Q^T||_F / (||W_OV||_F ||W_K W_Q^T||_F).",
}


@dataclass(frozen=True)
class PhaseWindow:
    """A detected step. ``start``/``end``: the fitted 10 %-90 % window (in the curve's t units);
    ``before``/``after``: the last sample at or before ``start`` and the first at or after
    ``end`` (snapped to where the curve was measured), with the curve's values there."""

    start: float
    end: float
    center: float
    height: float  # fitted step b (negative: a drop)
    direction: str  # "down" or "up"
    before: float
    after: float
    value_before: float
    value_after: float
    snr: float  # |b| / residual std
    span: float  # t range of the curve

    @property
    def width(self) -> float:
        """Width of the snapped window (``after - before``): what a reader of the samples can vouch for."""
        return self.after - self.before

    @property
    def width_fraction(self) -> float:
        return self.width / self.span if self.span else float("nan")

    @property
    def ratio(self) -> float:
        """``value_after / value_before``: below 0.5 means the curve more than halved inside the window."""
        return self.value_after / self.value_before if self.value_before else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "width": self.width, "width_fraction": self.width_fraction, "ratio": self.ratio}


@dataclass
class OffsetCurves:
    """Induction score of every head at every copy distance, per checkpoint; numbers only.

    ``scores[step]`` is ``[L, H, D]`` (D = ``len(distances)``), from ``batch`` sequences per
    distance drawn with ``seed``. ``recheck`` is the last checkpoint measured again on a fresh,
    larger sample (``recheck_batch`` sequences, ``recheck_seed``): the same numbers a second time.
    """

    distances: list[int]
    batch: int
    seed: int
    scores: dict[int, np.ndarray]
    recheck: np.ndarray | None = None
    recheck_batch: int = 0
    recheck_seed: int = 0
    threshold: float = field(default_factory=lambda: default_thresholds()["induction"])

    @property
    def definition(self) -> str:
        return DEFINITION

    def head(self, step: int, head: tuple[int, int]) -> np.ndarray:
        """``[D]``: one head's score at every distance at one checkpoint."""
        return self.scores[step][head[0], head[1]]

    def bins(self, values: np.ndarray) -> list[dict]:
        """Min and mean of ``values [D]`` over each range of :data:`DISTANCE_BINS` (those measured)."""
        d = np.asarray(self.distances)
        out = []
        for lo, hi in DISTANCE_BINS:
            sel = (d >= lo) & (d <= hi)
            if sel.any():
                out.append(
                    {"distances": f"{lo}-{hi}", "min": float(values[sel].min()), "mean": float(values[sel].mean())}
                )
        return out

    def aim(self, step: int, head: tuple[int, int]) -> dict:
        """``induction_head_at_every_offset``: the head scores at least the induction role threshold at every
        measured distance at ``step``, and so does the fresh recheck sample (when there is one)."""
        v = self.head(step, head)
        worst = int(np.argmin(v))
        every = bool(v.min() >= self.threshold)
        res: dict = {
            "offset_min": float(v.min()),
            "offset_min_distance": self.distances[worst],
            "offset_threshold": self.threshold,
        }
        if self.recheck is not None:
            r = self.recheck[head[0], head[1]]
            every = every and bool(r.min() >= self.threshold)
            res["offset_recheck_min"] = float(r.min())
            res["offset_recheck_max_difference"] = float(np.abs(r - v).max())
        return {"induction_head_at_every_offset": every, **res}

    def to_dict(self, head: tuple[int, int] | None = None) -> dict:
        last = max(self.scores)
        out = {
            "distances": self.distances,
            "batch": self.batch,
            "seed": self.seed,
            "definition": DEFINITION,
            "scores": {str(s): np.round(g, 6) for s, g in self.scores.items()},
            "recheck": None
            if self.recheck is None
            else {
                "batch": self.recheck_batch,
                "seed": self.recheck_seed,
                "step": last,
                "scores": np.round(self.recheck, 6),
            },
        }
        if head is not None:
            out["tracked_head_bins"] = self.bins(self.head(last, head))
        return strict(out)


@dataclass(repr=False, eq=False)  # Result gives both
class PhaseAnalysis(Result):
    """Curves against training step and the detected window; numbers only.

    ``curves[name]`` is a list aligned with ``steps``; ``scores[step][name]`` the ``[L, H]``
    score grid of one checkpoint (induction, previous_token) and ``k_comp[step]`` the
    ``[H, H]`` K-composition of earlier-layer heads (rows) into the induction head's layer
    (columns). ``window`` comes from the later-repeat loss; ``windows`` holds the detector's
    answer for every curve in :data:`DIRECTION`.
    """

    run_dir: Path
    steps: list[int]
    curves: dict[str, list[float]]
    induction_head: tuple[int, int]
    previous_token_head: tuple[int, int]
    window: PhaseWindow | None
    windows: dict[str, PhaseWindow | None]
    scores: dict[int, dict[str, np.ndarray]]
    k_comp: dict[int, np.ndarray]
    k_baseline: float
    total_steps: int
    live: list[dict] = field(default_factory=list)  # the training log (finer than the checkpoints)
    offsets: OffsetCurves | None = None  # induction against copy distance, every checkpoint

    @property
    def before_step(self) -> int | None:
        return None if self.window is None else int(self.window.before)

    @property
    def after_step(self) -> int | None:
        return None if self.window is None else int(self.window.after)

    def aims(self) -> dict:
        """The issue's aims, checked on these curves: True/False per aim, and the numbers.

        Induction head: best score > 0.6; previous-token head: at least headscope's role
        threshold (0.4); the later-repeat loss more than halves between the window's
        checkpoints, which are less than 20 % of the run apart; the tracked induction head
        passes the induction threshold (0.4) at every copy distance at the last checkpoint,
        on both offset samples (``induction_head_at_every_offset``)."""
        last = {k: v[-1] for k, v in self.curves.items()}
        w = self.window
        return {
            "induction_best_final": last["induction_best"],
            "induction_head_formed": last["induction_best"] > 0.6,
            "previous_token_final": last["previous_token_best"],
            "previous_token_head_formed": last["previous_token_best"] >= default_thresholds()["previous_token"],
            "window_found": w is not None,
            "loss_ratio_in_window": None if w is None else w.ratio,
            "loss_more_than_halved_in_window": w is not None and w.ratio < 0.5,
            "window_fraction_of_run": None if w is None else w.width / self.total_steps,
            "window_shorter_than_20pc": w is not None and w.width / self.total_steps < 0.2,
            **({} if self.offsets is None else self.offsets.aim(self.steps[-1], self.induction_head)),
        }

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "steps": self.steps,
            "total_steps": self.total_steps,
            "curves": {k: rounded(v) for k, v in self.curves.items()},
            "induction_head": head_label(*self.induction_head),
            "previous_token_head": head_label(*self.previous_token_head),
            "window": None if self.window is None else self.window.to_dict(),
            "windows": {k: (None if w is None else w.to_dict()) for k, w in self.windows.items()},
            "k_composition_baseline": self.k_baseline,
            "heatmaps": {
                str(s): {
                    "step": s,
                    **{k: rounded(v) for k, v in self.scores[s].items()},
                    "k_composition": rounded(self.k_comp[s]),
                }
                for s in self.heatmap_steps()
            },
            "offsets": None if self.offsets is None else self.offsets.to_dict(self.induction_head),
            "aims": self.aims(),
            "definitions": CURVES,
        }

    def to_frame(self):
        """One row per checkpoint: step and every curve."""
        import pandas as pd

        return pd.DataFrame({"step": self.steps, **self.curves})

    def heatmap_steps(self) -> list[int]:
        """The checkpoints the before/after heatmaps show: the window's ends, else the first and last."""
        if self.window is None:
            return [self.steps[0], self.steps[-1]]
        return [int(self.window.before), int(self.window.after)]

    def plot(self):
        return self._figure("phase_figure")

    def plot_heatmaps(self):
        return self._figure("phase_heatmaps")
