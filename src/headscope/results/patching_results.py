"""Causal circuits measured by patching (plain data): activation patching, path patching, and the set of them.

Computed by :mod:`headscope.circuits` (its modules' docstrings give the definitions); drawn by
``render/views/circuit_view.py``. Every value is normalised, 1 = the clean run's metric and
0 = the corrupted run's, with a 95% bootstrap interval over the task's examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import GapChecked, Result, rounded

#: What the numbers mean, for legends and JSON.
DEFINITIONS = {
    "normalised": "(metric - corrupted metric) / (clean metric - corrupted metric): 1 = the clean behaviour, "
    "0 = the corrupted one; the ratio of the mean over the examples, with a 95% percentile bootstrap "
    "interval over the examples (resampled in pairs with their clean - corrupted gap)",
    "denoise": "activation patching into the corrupted run: one component's activation taken from the clean run "
    "(how much of the clean behaviour that component alone restores: sufficiency)",
    "noise": "activation patching into the clean run: one component's activation taken from the corrupted run "
    "(how much is lost without it: necessity); effect = 1 - value",
    "change": "the patched run's metric minus the unpatched run's (the base run: corrupted when denoising, clean when "
    "noising), mean over the examples, in the metric's own units, with a 95% percentile bootstrap interval",
    "gap": "the clean - corrupted gap every normalised number divides by: mean over the examples and its 95% "
    "bootstrap interval; when the interval includes 0 or the gap has the wrong sign (the clean prompt favours the "
    "answer less than the corrupted one) the normalised numbers are not meaningful and changes are shown instead",
    "path": "path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023): the sender head's output changed "
    "(corrupted in the clean run) along one path only: into the receiver's query, key or value input with "
    "everything else frozen, or into the logits directly; effect = 1 - value, the share of the clean - "
    "corrupted gap this path carries",
}


def _interval(lo, hi) -> list:
    return [rounded(lo, 4), rounded(hi, 4)]


@dataclass(repr=False, eq=False)  # Result gives both
class ActivationPatching(GapChecked, Result):
    """Every head's and MLP's activation patched alone, in one direction.

    ``values``, ``low``, ``high``: ``[n_layers, n_heads + 1]`` (column ``n_heads`` is the layer's MLP),
    or ``[n_layers, n_heads + 1, n_tokens]`` when ``per_position`` (one position patched at a time).
    """

    direction: str
    metric: str
    task: str
    n_examples: int
    n_layers: int
    n_heads: int
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    clean_metric: float
    corrupt_metric: float
    per_position: bool = False
    corruption: str = ""
    notes: list[str] = field(default_factory=list)
    #: the metric's change from the base run (metric units), shaped like ``values``; empty when not kept
    change: np.ndarray = field(default_factory=lambda: np.zeros(0))
    change_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    change_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: the clean - corrupted gap (:func:`headscope.circuits.tasks.clean_corrupt_gap`)
    gap: dict = field(default_factory=dict)

    def top_change(self, k: int = 10) -> list[tuple[str, float, float, float]]:
        """The ``k`` components whose patch moves the metric most: ``(label, change, low, high)`` (metric units)."""
        v, lo, hi = self.change, self.change_low, self.change_high
        if self.per_position:
            best = np.abs(v).argmax(-1)[..., None]
            v, lo, hi = (np.take_along_axis(a, best, -1)[..., 0] for a in (v, lo, hi))
        order = np.argsort(-np.abs(v).ravel(), kind="stable")[:k]
        out = []
        for i in order:
            l, u = divmod(int(i), self.n_heads + 1)
            out.append((self.label(l, u), float(v[l, u]), float(lo[l, u]), float(hi[l, u])))
        return out

    @property
    def effect(self) -> np.ndarray:
        """How much each component matters, as a positive share: the value (denoise) or 1 - value (noise)."""
        return self.values if self.direction == "denoise" else 1 - self.values

    def whole(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, low, high)`` ``[n_layers, n_heads + 1]`` for whole-sequence patches (per position: the
        position with the largest effect per unit)."""
        if not self.per_position:
            return self.values, self.low, self.high
        best = np.abs(self.effect).argmax(-1)[..., None]
        pick = lambda a: np.take_along_axis(a, best, -1)[..., 0]
        return pick(self.values), pick(self.low), pick(self.high)

    def top(self, k: int = 10) -> list[tuple[str, float, float, float]]:
        """The ``k`` components with the largest effect: ``(label, value, low, high)``."""
        v, lo, hi = self.whole()
        eff = v if self.direction == "denoise" else 1 - v
        order = np.argsort(-np.abs(eff).ravel(), kind="stable")[:k]
        out = []
        for i in order:
            l, u = divmod(int(i), self.n_heads + 1)
            out.append((self.label(l, u), float(v[l, u]), float(lo[l, u]), float(hi[l, u])))
        return out

    def label(self, layer: int, unit: int) -> str:
        return (
            f"MLP{layer}" if unit == self.n_heads else f"L{layer}H{unit}"
        )  # MLP29: as the edges, qk and the docs name it

    def to_dict(self) -> dict:
        return {
            "kind": "activation_patching",
            "definition": {
                "normalised": DEFINITIONS["normalised"],
                self.direction: DEFINITIONS[self.direction],
                "change": DEFINITIONS["change"],
                "gap": DEFINITIONS["gap"],
            },
            "direction": self.direction,
            "metric": self.metric,
            "task": self.task,
            "corruption": self.corruption,
            "n_examples": self.n_examples,
            "columns": [f"H{h}" for h in range(self.n_heads)] + ["MLP"],
            "per_position": self.per_position,
            "clean_metric": rounded(self.clean_metric, 4),
            "corrupt_metric": rounded(self.corrupt_metric, 4),
            "gap": {k: rounded(v, 4) if isinstance(v, float) else v for k, v in self.gap.items()},
            "normalised_meaningful": self.normalised_meaningful,
            "values": rounded(self.values, 4),
            "low": rounded(self.low, 4),
            "high": rounded(self.high, 4),
            "change": rounded(self.change, 4),
            "change_low": rounded(self.change_low, 4),
            "change_high": rounded(self.change_high, 4),
            "notes": self.notes,
        }

    def to_frame(self):
        import pandas as pd

        v, lo, hi = self.whole()
        L, U = v.shape
        return pd.DataFrame(
            {
                "component": [self.label(l, u) for l in range(L) for u in range(U)],
                "layer": np.repeat(np.arange(L), U),
                "unit": [("MLP" if u == self.n_heads else f"H{u}") for _ in range(L) for u in range(U)],
                "direction": self.direction,
                "value": v.ravel(),
                "low": lo.ravel(),
                "high": hi.ravel(),
            }
        )

    def plot(self, **kwargs):
        """The heatmap: layers x heads, plus the MLP column."""
        return self._figure("heatmap", **kwargs)


@dataclass(repr=False, eq=False)  # Result gives both
class PathPatching(GapChecked, Result):
    """Path-patching effects: one row per (sender, receiver) path. ``values``/``low``/``high`` ``[n_paths]``."""

    senders: list[str]
    receivers: list[str]
    receiver: str  # the one receiver of all rows (or a title for mixed rows)
    direction: str
    metric: str
    task: str
    n_examples: int
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    clean_metric: float
    corrupt_metric: float
    n_layers: int
    n_heads: int
    notes: list[str] = field(default_factory=list)
    #: each path's change of the metric from the base run (metric units), ``[n_paths]``; empty when not kept
    change: np.ndarray = field(default_factory=lambda: np.zeros(0))
    change_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    change_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: the clean - corrupted gap (:func:`headscope.circuits.tasks.clean_corrupt_gap`)
    gap: dict = field(default_factory=dict)

    def top_change(self, k: int = 10) -> list[tuple[str, str, float, float, float]]:
        """The ``k`` paths whose patch moves the metric most: ``(sender, receiver, change, low, high)`` (metric units)."""
        order = np.argsort(-np.abs(self.change), kind="stable")[:k]
        return [
            (self.senders[i], self.receivers[i], float(self.change[i]), float(self.change_low[i]),
             float(self.change_high[i]))
            for i in order
        ]  # fmt: skip

    @property
    def effect(self) -> np.ndarray:
        """The share of the clean - corrupted gap each path carries (1 - value when noising, value when denoising)."""
        return 1 - self.values if self.direction == "noise" else self.values

    def effect_interval(self, i: int) -> tuple[float, float]:
        if self.direction == "noise":
            return 1 - float(self.high[i]), 1 - float(self.low[i])
        return float(self.low[i]), float(self.high[i])

    def top(self, k: int = 10) -> list[tuple[str, str, float, float, float]]:
        """The ``k`` paths with the largest |effect|: ``(sender, receiver, effect, low, high)``."""
        order = np.argsort(-np.abs(self.effect), kind="stable")[:k]
        return [
            (self.senders[i], self.receivers[i], float(self.effect[i]), *self.effect_interval(int(i))) for i in order
        ]

    def to_dict(self) -> dict:
        return {
            "kind": "path_patching",
            "definition": {
                "normalised": DEFINITIONS["normalised"],
                "path": DEFINITIONS["path"],
                "change": DEFINITIONS["change"],
                "gap": DEFINITIONS["gap"],
            },
            "receiver": self.receiver,
            "direction": self.direction,
            "metric": self.metric,
            "task": self.task,
            "n_examples": self.n_examples,
            "clean_metric": rounded(self.clean_metric, 4),
            "corrupt_metric": rounded(self.corrupt_metric, 4),
            "gap": {k: rounded(v, 4) if isinstance(v, float) else v for k, v in self.gap.items()},
            "normalised_meaningful": self.normalised_meaningful,
            "paths": [
                {
                    "sender": s,
                    "receiver": r,
                    "value": rounded(self.values[i], 4),
                    "interval": _interval(self.low[i], self.high[i]),
                    "effect": rounded(self.effect[i], 4),
                    "effect_interval": _interval(*self.effect_interval(i)),
                    **(
                        {
                            "change": rounded(self.change[i], 4),
                            "change_interval": _interval(self.change_low[i], self.change_high[i]),
                        }
                        if len(self.change)
                        else {}
                    ),
                }
                for i, (s, r) in enumerate(zip(self.senders, self.receivers))
            ],
            "notes": self.notes,
        }

    def to_frame(self):
        import pandas as pd

        iv = np.array([self.effect_interval(i) for i in range(len(self.senders))]).reshape(-1, 2)
        return pd.DataFrame(
            {
                "sender": self.senders,
                "receiver": self.receivers,
                "value": self.values,
                "low": self.low,
                "high": self.high,
                "effect": self.effect,
                "effect_low": iv[:, 0],
                "effect_high": iv[:, 1],
            }
        )

    def plot(self, **kwargs):
        """Bars of the strongest paths' effects with their intervals (or a layer x head map of senders)."""
        return self._figure("paths", **kwargs)


@dataclass(repr=False, eq=False)  # Result gives both
class CircuitAnalysis(Result):
    """What ``headscope circuit`` measured: the task, activation patching, path patching, and any later steps.

    ``extra`` holds results of steps added by other modules (edge attribution), each with its own view.
    """

    model: dict[str, Any]
    task: dict[str, Any]
    activation: list[ActivationPatching] = field(default_factory=list)
    paths: list[PathPatching] = field(default_factory=list)
    extra: list[Result] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "task": self.task,
            "settings": self.settings,
            "activation_patching": [a.to_dict() for a in self.activation],
            "path_patching": [p.to_dict() for p in self.paths],
            "extra": [e.to_dict() for e in self.extra],
            "timings": {k: rounded(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
        }

    def to_frame(self):
        import pandas as pd

        frames = [a.to_frame().assign(kind="activation") for a in self.activation]
        frames += [p.to_frame().assign(kind="path") for p in self.paths]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
