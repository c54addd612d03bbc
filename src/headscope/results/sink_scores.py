"""Attention-sink scores on natural text, Gu et al. 2024's convention (plain data).

Measured by :func:`headscope.kinds.sink_scores_on_text` (its module docstring has the
definitions); the sink score's own definition is the registry's ``attention_sink``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..jsonsafe import dumps
from ..scores import score as declared
from .base import Result, array_of, float_of

DEFINITIONS = {
    "sink_rate": (
        "Fraction of windows on which the head's alpha_1 (mean attention to the first token over all T queries, "
        "its own included) exceeds 0.3; its mean over heads is Gu et al. 2024's Sink_1^0.3."
    ),
    "sink": "Mean attention to the first token over the queries after it (query 0 left out), on the same windows.",
}


@dataclass(repr=False, eq=False)  # Result gives both
class SinkScores(Result):
    """Sink scores on natural text: ``sink``, ``alpha``, ``sink_rate`` are ``[n_layers, n_heads]``.

    ``alpha`` is the attention-sink role's score (the registry's ``attention_sink``);
    ``first_token`` says what the windows start with. Reads back from its :meth:`to_dict`
    (``heads.json``'s ``natural_sinks``; :meth:`from_dict`).
    """

    json_what: ClassVar[str] = "natural-text sink scores"
    json_hint: ClassVar[str] = "pass SinkScores.to_json()'s output, or the natural_sinks entry of heads.json"
    json_keys: ClassVar[frozenset[str]] = frozenset({"sink", "alpha", "sink_rate"})

    sink: np.ndarray
    alpha: np.ndarray
    sink_rate: np.ndarray
    threshold: float
    n_sequences: int
    n_tokens: int
    source: str
    timings: dict[str, float] = field(default_factory=dict)
    first_token: str = ""

    @property
    def model_sink_rate(self) -> float:
        """Gu et al.'s Sink_1^epsilon: fraction of (sequence, head) pairs above the threshold."""
        return float(self.sink_rate.mean())

    @property
    def sink_head_fraction(self) -> float:
        """Fraction of heads whose mean alpha_1 exceeds the threshold (the heads that take the role, above it)."""
        return float((self.alpha > self.threshold).mean())

    def sink_heads(self) -> list[tuple[int, int, float]]:
        """Heads whose mean alpha_1 exceeds the threshold, strongest first: ``[(layer, head, alpha), ...]``."""
        ls, hs = np.nonzero(self.alpha > self.threshold)
        return sorted(((int(l), int(h), float(self.alpha[l, h])) for l, h in zip(ls, hs)), key=lambda t: -t[2])

    def definition(self) -> str:
        """The attention-sink score's definition (the registry's), stating this run's own windows.

        >>> import numpy as np
        >>> z = np.zeros((1, 1))
        >>> s = SinkScores(z, z, z, 0.3, n_sequences=5, n_tokens=64, source="")
        >>> "averaged over 5 windows of" in s.definition(), "100 windows" in s.definition()
        (True, False)
        """
        text = declared("attention_sink").definition
        n, T = self.n_sequences, self.n_tokens
        return text.replace("a 64-token window", f"a {T}-token window").replace(
            "averaged over 100 windows", f"averaged over {n} window{'s' if n != 1 else ''}"
        )

    def to_dict(self) -> dict:
        return {
            "definition": {"alpha": self.definition(), **DEFINITIONS},
            "threshold": self.threshold,
            "n_sequences": self.n_sequences,
            "n_tokens": self.n_tokens,
            "source": self.source,
            "first_token": self.first_token,
            "model_sink_rate": self.model_sink_rate,
            "sink_head_fraction": self.sink_head_fraction,
            "sink": self.sink.tolist(),
            "alpha": self.alpha.tolist(),
            "sink_rate": self.sink_rate.tolist(),
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SinkScores:
        """The scores back from :meth:`to_dict` (null as NaN)."""
        with cls._reading(d):
            back = cls(
                sink=array_of(d["sink"]),
                alpha=array_of(d["alpha"]),
                sink_rate=array_of(d["sink_rate"]),
                threshold=float_of(d["threshold"]),
                n_sequences=int(d["n_sequences"]),
                n_tokens=int(d["n_tokens"]),
                source=str(d["source"]),
                timings=dict(d.get("timings", {})),
                first_token=str(d.get("first_token", "")),
            )
        return back

    def to_json(self, indent: int | None = None, **kw) -> str:
        return dumps(self.to_dict(), indent=indent, **kw)  # strict JSON: NaN/Infinity -> null

    def to_frame(self):
        import pandas as pd

        L, H = self.sink.shape
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(L), H),
                "head": np.tile(np.arange(H), L),
                "sink": self.sink.ravel(),
                "alpha": self.alpha.ravel(),
                "sink_rate": self.sink_rate.ravel(),
            }
        )
