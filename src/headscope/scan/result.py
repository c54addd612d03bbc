"""The result of an induction scan: a value with tables, JSON, files and pictures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .attention import AttentionSample
from .scores import DEFINITIONS

#: A head takes a role when its score reaches the threshold (adjustable per call / --threshold).
DEFAULT_THRESHOLDS = {"induction": 0.4, "previous_token": 0.4, "duplicate_token": 0.4, "copying": 0.7}
#: Roles come from these scores, in this order.
ROLE_SCORES = ("induction", "previous_token", "duplicate_token", "copying")
#: An ablation "raises" the loss when it adds at least this many nats.
MIN_RISE = 0.01
SCORE_ORDER = ("induction", "prefix_matching", "previous_token", "duplicate_token", "copying")

LOSS_DEFINITION = (
    "Cross-entropy (nats) of predicting each token from the ones before it, averaged over the batch. "
    "first_repeat: targets in repeat 1 (unpredictable, about ln(vocab)); later_repeats: targets in repeats "
    "2..R, where induction can predict them."
)
ABLATION_DEFINITION = (
    "Rise in later-repeat loss when a head's output (hook_z) is replaced by its mean over all sequences "
    "and positions of the clean run (mean ablation) or by zero (zero ablation); each top induction head "
    "alone, all of them together, and a control of as many other heads drawn at random."
)


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


@dataclass
class InductionResult:
    """Scores for every head, loss by position and the causal check.

    ``scores[name]`` is ``[n_layers, n_heads]`` for name in ``SCORE_ORDER``;
    ``per_position_loss[p]`` is the loss of predicting token ``p + 1``.
    """

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

    # --- views -----------------------------------------------------------------------------
    def top_heads(self, score: str = "induction", k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the highest ``score``: ``[(layer, head, value), ...]``."""
        a = self.scores[score]
        order = np.argsort(-a, axis=None, kind="stable")[:k]
        n_heads = a.shape[1]
        return [(int(i // n_heads), int(i % n_heads), float(a.flat[i])) for i in order]

    def roles(self) -> dict[tuple[int, int], list[str]]:
        """Roles of every head that has at least one, from :attr:`thresholds`."""
        out: dict[tuple[int, int], list[str]] = {}
        for role in ROLE_SCORES:
            layers, heads = np.nonzero(self.scores[role] >= self.thresholds[role])
            for l, h in zip(layers.tolist(), heads.tolist()):
                out.setdefault((l, h), []).append(role)
        return out

    def heads(self) -> list[dict]:
        """One entry per (head, role), best first within each role."""
        entries = []
        for role in ROLE_SCORES:
            a = self.scores[role]
            layers, heads = np.nonzero(a >= self.thresholds[role])
            found = sorted(zip(layers.tolist(), heads.tolist()), key=lambda lh: -a[lh])
            entries += [{"layer": l, "head": h, "role": role, "score": round(float(a[l, h]), 6)} for l, h in found]
        return entries

    def verdicts(self) -> list[str]:
        """Plain statements about the causal check, one per ablation."""
        out = []
        for e in self.ablation:
            d = e["loss_increase"]
            if e["kind"] == "head":
                who = head_label(e["layer"], e["head"])
                ok = d >= MIN_RISE
                out.append(f"{who}: ablating it {'raises' if ok else 'does NOT raise'} the later-repeat loss "
                           f"({d:+.3f} nats)" + ("" if ok else " - not causally important on its own here"))
            elif e["kind"] == "all_top":
                out.append(f"all {len(e['heads'])} top induction heads together: {d:+.3f} nats")
            else:
                out.append(f"control, {len(e['heads'])} other heads at random: {d:+.3f} nats")
        return out

    def to_frame(self):
        """One row per head: layer, head, every score, and its roles."""
        import pandas as pd

        L, H = self.scores["induction"].shape
        roles = self.roles()
        rows = []
        for l in range(L):
            for h in range(H):
                row = {"layer": l, "head": h}
                row.update({name: float(self.scores[name][l, h]) for name in SCORE_ORDER})
                row["roles"] = "+".join(roles.get((l, h), []))
                rows.append(row)
        return pd.DataFrame(rows)

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        def r(x):
            return np.round(np.asarray(x, dtype=np.float64), 6).tolist()

        return {
            "model": self.model,
            "settings": self.settings,
            "scores": {name: r(self.scores[name]) for name in SCORE_ORDER},
            "loss": {"per_position": r(self.per_position_loss), "first_repeat": round(self.loss_first_repeat, 6),
                     "later_repeats": round(self.loss_later_repeats, 6)},
            "ablation": [{**e, "loss": round(e["loss"], 6), "loss_increase": round(e["loss_increase"], 6)}
                         for e in self.ablation],
            "heads": self.heads(),
            "thresholds": self.thresholds,
            "definitions": {**DEFINITIONS, "loss": LOSS_DEFINITION, "ablation": ABLATION_DEFINITION},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    # --- pictures --------------------------------------------------------------------------
    def plot_scores(self, score: str = "induction", ax=None):
        from ..render.induction_figures import score_heatmap

        return score_heatmap(self, score, ax=ax)

    def plot_loss(self, ax=None):
        from ..render.induction_figures import loss_by_position

        return loss_by_position(self, ax=ax)

    def plot_ablation(self, ax=None):
        from ..render.induction_figures import ablation_chart

        return ablation_chart(self, ax=ax)

    def save(self, out_dir: str | Path, texts: list[AttentionSample] | None = None) -> list[Path]:
        """Write scores.json, scores.csv and the PNG figures into ``out_dir``; returns the paths."""
        from ..render.induction_figures import save_figures

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scores.json").write_text(self.to_json())
        self.to_frame().to_csv(out / "scores.csv", index=False, float_format="%.6f")
        return [out / "scores.json", out / "scores.csv"] + save_figures(self, out, texts or [])

    def _repr_html_(self) -> str:
        from ..render.induction_figures import result_html

        return result_html(self)
