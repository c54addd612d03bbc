"""Causal circuits measured by patching (plain data): activation patching, path patching, and the set of them.

Computed by :mod:`headscope.circuits` (its modules' docstrings give the definitions); drawn by
``render/views/circuit_view.py``. Every value is normalised, 1 = the clean run's metric and
0 = the corrupted run's, with a 95% bootstrap interval over the task's examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import BadInput
from .base import GapChecked, Result, array_of, float_of, rounded
from .edge_results import NOT_READ_BACK

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
    "by_position": "the same patch at one position only (every other position keeps the base run's activation), "
    "each position in turn, besides the whole-sequence patch: [layer][head, then MLP][position], 'positions' "
    "naming each position (its token where every example has the same one there)",
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

    ``values``, ``low``, ``high``: ``[n_layers, n_heads + 1]`` (column ``n_heads`` is the layer's MLP), the
    whole sequence patched. With ``per_position``, one position patched at a time as well: ``position_values``,
    ``position_low``, ``position_high`` (and ``position_change*``) ``[n_layers, n_heads + 1, n_tokens]``, what sits
    at each position in ``positions`` (:meth:`position_frame`); ``values`` and everything read from them
    (:meth:`top`, :meth:`to_frame`) stay the whole-sequence patch.
    Reads back from its :meth:`to_dict` (an entry of ``circuit.json``'s ``activation_patching``).
    """

    json_what: ClassVar[str] = "activation patching"
    json_hint: ClassVar[str] = (
        "pass ActivationPatching.to_json()'s output, or read circuit.json with CircuitAnalysis.from_json"
    )
    json_keys: ClassVar[frozenset[str]] = frozenset({"direction", "columns", "values", "per_position"})

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
    #: with ``per_position``: one position patched at a time, ``[n_layers, n_heads + 1, n_tokens]`` (else empty)
    position_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_change: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_change_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_change_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: with ``per_position``: what sits at each position (:func:`headscope.circuits.activation_patching.position_tokens`)
    positions: list[str] = field(default_factory=list)

    def top_change(self, k: int = 10) -> list[tuple[str, float, float, float]]:
        """The ``k`` components whose whole-sequence patch moves the metric most: ``(label, change, low, high)``
        (metric units)."""
        v, lo, hi = self.change, self.change_low, self.change_high
        order = np.argsort(-np.abs(v).ravel(), kind="stable")[:k]
        out = []
        for i in order:
            l, u = divmod(int(i), self.n_heads + 1)
            out.append((self.label(l, u), float(v[l, u]), float(lo[l, u]), float(hi[l, u])))
        return out

    @property
    def effect(self) -> np.ndarray:
        """How much each component matters, as a positive share: the value (denoise) or 1 - value (noise)."""
        return self.as_effect(self.values)

    def as_effect(self, values: np.ndarray) -> np.ndarray:
        """Normalised ``values`` (the whole-sequence or the per-position ones) as effects: as they are when
        denoising, 1 - value when noising."""
        return values if self.direction == "denoise" else 1 - values

    def top(self, k: int = 10) -> list[tuple[str, float, float, float]]:
        """The ``k`` components whose whole-sequence patch has the largest effect: ``(label, value, low, high)``."""
        v, lo, hi = self.values, self.low, self.high
        order = np.argsort(-np.abs(self.effect).ravel(), kind="stable")[:k]
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
            **({"by_position": self._position_dict()} if self.per_position else {}),
            "notes": self.notes,
        }

    def _position_dict(self) -> dict:
        return {
            "definition": DEFINITIONS["by_position"],
            "positions": self.positions,
            "values": rounded(self.position_values, 4),
            "low": rounded(self.position_low, 4),
            "high": rounded(self.position_high, 4),
            "change": rounded(self.position_change, 4),
            "change_low": rounded(self.position_change_low, 4),
            "change_high": rounded(self.position_change_high, 4),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ActivationPatching:
        """The result back from :meth:`to_dict` (numbers as written: 4 decimals; null as NaN)."""
        with cls._reading(d):
            values = array_of(d["values"])
            if d["per_position"] and "by_position" not in d:
                raise BadInput(
                    "this activation patching was written before headscope measured the whole-sequence patch beside "
                    "the per-position one: its values are per position only, with no whole-sequence patch",
                    hint="run `headscope circuit --per-position` again to write a circuit.json that reads back",
                )
            pos = d.get("by_position", {})
            back = cls(
                direction=d["direction"],
                metric=d["metric"],
                task=d["task"],
                n_examples=int(d["n_examples"]),
                n_layers=len(values),
                n_heads=len(d["columns"]) - 1,  # the heads, then the MLP
                values=values,
                low=array_of(d["low"]),
                high=array_of(d["high"]),
                clean_metric=float_of(d["clean_metric"]),
                corrupt_metric=float_of(d["corrupt_metric"]),
                per_position=bool(d["per_position"]),
                corruption=d.get("corruption", ""),
                notes=list(d.get("notes", [])),
                change=array_of(d.get("change", [])),
                change_low=array_of(d.get("change_low", [])),
                change_high=array_of(d.get("change_high", [])),
                gap=dict(d.get("gap", {})),
                position_values=array_of(pos.get("values", [])),
                position_low=array_of(pos.get("low", [])),
                position_high=array_of(pos.get("high", [])),
                position_change=array_of(pos.get("change", [])),
                position_change_low=array_of(pos.get("change_low", [])),
                position_change_high=array_of(pos.get("change_high", [])),
                positions=list(pos.get("positions", [])),
            )
        return back

    def to_frame(self):
        """One row per component, the whole sequence patched (:meth:`position_frame` has the per-position patch)."""
        import pandas as pd

        v, lo, hi = self.values, self.low, self.high
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

    def position_frame(self):
        """With ``per_position``: one row per (component, position), that one position patched; ``token`` says what
        sits there (:attr:`positions`)."""
        import pandas as pd

        if not self.per_position:
            raise BadInput(
                "this activation patching patched the whole sequence only: no position was patched alone",
                hint="activation_patching(..., per_position=True), or headscope circuit --per-position",
            )
        L, U, P = self.position_values.shape
        return pd.DataFrame(
            {
                "component": [self.label(l, u) for l in range(L) for u in range(U) for _ in range(P)],
                "layer": np.repeat(np.arange(L), U * P),
                "unit": [
                    ("MLP" if u == self.n_heads else f"H{u}") for _ in range(L) for u in range(U) for _ in range(P)
                ],
                "position": np.tile(np.arange(P), L * U),
                "token": self.positions * (L * U),
                "direction": self.direction,
                "value": self.position_values.ravel(),
                "low": self.position_low.ravel(),
                "high": self.position_high.ravel(),
            }
        )

    def plot(self, **kwargs):
        """The heatmap: layers x heads, plus the MLP column, the whole sequence patched."""
        return self._figure("heatmap", **kwargs)

    def plot_by_position(self, **kwargs):
        """With ``per_position``: the same map, each cell the position whose patch has the largest effect."""
        return self._figure("by_position", **kwargs)


@dataclass(repr=False, eq=False)  # Result gives both
class PathPatching(GapChecked, Result):
    """Path-patching effects: one row per (sender, receiver) path. ``values``/``low``/``high`` ``[n_paths]``.

    Reads back from its :meth:`to_dict` (an entry of ``circuit.json``'s ``path_patching``).
    """

    json_what: ClassVar[str] = "path patching"
    json_hint: ClassVar[str] = (
        "pass PathPatching.to_json()'s output, or read circuit.json with CircuitAnalysis.from_json"
    )
    json_keys: ClassVar[frozenset[str]] = frozenset({"paths", "receiver", "direction"})

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
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
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

    @classmethod
    def from_dict(cls, d: dict) -> PathPatching:
        """The result back from :meth:`to_dict` (numbers as written: 4 decimals; null as NaN). A path's
        ``effect`` is ``value`` read the other way, so only ``value`` and its interval are read."""
        with cls._reading(d):
            if "n_layers" not in d:
                raise BadInput(
                    "this path patching was written before headscope wrote the model's shape (n_layers, n_heads) "
                    "that reading it back needs",
                    hint="run `headscope circuit` again to write a circuit.json that reads back",
                )
            paths = d["paths"]
            changed = bool(paths) and all("change" in p for p in paths)
            back = cls(
                senders=[p["sender"] for p in paths],
                receivers=[p["receiver"] for p in paths],
                receiver=d["receiver"],
                direction=d["direction"],
                metric=d["metric"],
                task=d["task"],
                n_examples=int(d["n_examples"]),
                values=array_of([p["value"] for p in paths]),
                low=array_of([p["interval"][0] for p in paths]),
                high=array_of([p["interval"][1] for p in paths]),
                clean_metric=float_of(d["clean_metric"]),
                corrupt_metric=float_of(d["corrupt_metric"]),
                n_layers=int(d["n_layers"]),
                n_heads=int(d["n_heads"]),
                notes=list(d.get("notes", [])),
                change=array_of([p["change"] for p in paths] if changed else []),
                change_low=array_of([p["change_interval"][0] for p in paths] if changed else []),
                change_high=array_of([p["change_interval"][1] for p in paths] if changed else []),
                gap=dict(d.get("gap", {})),
            )
        return back

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
    Reads back from ``circuit.json`` (:meth:`from_json`) when no step added one: the edges step's
    :class:`~headscope.results.edge_results.EdgeCircuit` does not read back (its docstring says why).
    """

    json_file: ClassVar[str | None] = "circuit.json"
    json_what: ClassVar[str] = "a circuit analysis"
    json_hint: ClassVar[str] = (
        "pass the circuit.json that `headscope circuit` wrote (or its folder), or CircuitAnalysis.to_json()'s output"
    )
    json_keys: ClassVar[frozenset[str]] = frozenset({"task", "activation_patching", "path_patching"})

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

    @classmethod
    def from_dict(cls, d: dict) -> CircuitAnalysis:
        """The analysis back from :meth:`to_dict` (what ``circuit.json`` holds), to replot or query it in a notebook.

        Numbers come back as written (4 decimals for the patching values; null as NaN). A result of an
        added step (``extra``) is a :class:`~headscope.errors.BadInput`: the edges step's circuit does
        not read back, and no other step's is known here; its activation and path patching still read back
        one by one (``ActivationPatching.from_dict(d["activation_patching"][0])``).
        """
        with cls._reading(d):
            if d.get("extra"):
                kinds = sorted({str(e.get("kind", "?")) for e in d["extra"]})
                why = NOT_READ_BACK if kinds == ["edge-circuit"] else "no step's added result is known here"
                raise BadInput(
                    f"this circuit.json holds the result of an added step ({', '.join(kinds)}), which does not "
                    f"read back: {why}",
                    hint="its activation and path patching read back one by one: "
                    'ActivationPatching.from_dict(d["activation_patching"][i]), '
                    'PathPatching.from_dict(d["path_patching"][i]) (d = the JSON loaded)',
                )
            back = cls(
                model=dict(d["model"]),
                task=dict(d["task"]),
                activation=[ActivationPatching.from_dict(a) for a in d["activation_patching"]],
                paths=[PathPatching.from_dict(p) for p in d["path_patching"]],
                settings=dict(d.get("settings", {})),
                timings=dict(d.get("timings", {})),
                notes=list(d.get("notes", [])),
            )
        return back

    def to_frame(self):
        import pandas as pd

        frames = [a.to_frame().assign(kind="activation") for a in self.activation]
        frames += [p.to_frame().assign(kind="path") for p in self.paths]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
