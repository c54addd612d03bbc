"""Attention patterns of chosen heads on a sequence, and the set of them a page shows as interactive views.

Plain data: the patterns are computed by :mod:`headscope.scan.attention_sample` and drawn by the
views registered for these types (:mod:`headscope.render.views`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..head_labels import Head
from .base import Result, rounded


@dataclass(repr=False, eq=False)  # Result gives both
class AttentionSample(Result):
    """Attention patterns of a few heads on one sequence.

    ``patterns`` is ``[len(heads), query, key]`` (queries down, keys across); ``tokens`` are the
    tokens' own texts (pictures make whitespace visible); ``text`` the text as written, if any.
    """

    title: str
    tokens: list[str]
    heads: list[Head]
    patterns: np.ndarray
    note: str = ""
    token_ids: list[int] = field(default_factory=list)
    text: str | None = None

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "tokens": self.tokens,
            "heads": [list(h) for h in self.heads],
            "note": self.note,
            "patterns": rounded(self.patterns, 4),
        }

    def to_frame(self):
        """One row per (head, query, key) below the diagonal: the attention weight."""
        import pandas as pd

        qi, kj = np.tril_indices(len(self.tokens))
        return pd.concat(
            [
                pd.DataFrame(
                    {"layer": l, "head": h, "query_pos": qi, "key_pos": kj, "attention": self.patterns[n][qi, kj]}
                )
                for n, (l, h) in enumerate(self.heads)
            ],
            ignore_index=True,
        )


@dataclass(repr=False, eq=False)  # Result gives both
class AttentionViews(Result):
    """The interactive attention views of a page: samples (the scan's own, then the user's texts).

    ``sources[i]`` is the text of ``samples[i]`` as written (None for the scan's repeated tokens);
    ``title`` heads the page section.
    """

    samples: list[AttentionSample]
    sources: list[str | None] = field(default_factory=list)
    title: str = "Attention of the top induction heads (interactive)"

    @classmethod
    def of(cls, scan, texts: Sequence[AttentionSample] = (), sources: Sequence[str] = ()) -> AttentionViews:
        """``scan``'s own samples (an :class:`~headscope.results.scan_result.InductionResult`), then ``texts`` with their ``sources`` (the texts as written)."""
        return cls([*scan.samples, *texts], [None] * len(scan.samples) + list(sources))

    def source(self, i: int) -> str | None:
        return self.sources[i] if i < len(self.sources) else None

    def to_dict(self) -> dict:
        return {"title": self.title, "samples": [s.to_dict() for s in self.samples], "sources": self.sources}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"title": s.title, "tokens": len(s.tokens), "heads": len(s.heads)} for s in self.samples])
