"""Views of the QK analysis's parts, each on its own in a notebook: a title, a table and the main figure.

The figures are :mod:`headscope.render.qk_figures`; the results are :mod:`headscope.results.qk_results`.
"""

from __future__ import annotations

import numpy as np

from ...head_labels import head_label
from ...results.qk_results import (
    COMPOSITION_CAVEAT,
    CompositionScores,
    OffsetComposition,
    PositionalQK,
    QKDecomposition,
    QKScores,
    TokenQK,
)
from ..lookup import register
from ..qk_figures import plot_composition, plot_decomposition, plot_live, plot_live_grid, plot_positional, plot_token_qk
from ..view_base import Section, View, frame_html


@register(QKScores)
class QKScoresView(View):
    figures = {"plot_live": plot_live, "plot_live_grid": plot_live_grid}

    def notebook_html(self, result) -> str:
        import pandas as pd

        rows = [
            {
                "text": s + 1,
                "head": head_label(l, h),
                "tokens": len(seq),
                "max score": float(np.nanmax(result.scores[s][n])),
                "mean attention to BOS": float(result.patterns[s][n][1:, 0].mean()) if len(seq) > 1 else np.nan,
            }
            for s, seq in enumerate(result.sequences)
            for n, (l, h) in enumerate(result.heads)
        ]
        return frame_html(f"QK scores, {result.model_name}", pd.DataFrame(rows), plot_live_grid(result, 0))


@register(QKDecomposition)
class QKDecompositionView(View):
    figures = {"plot_decomposition": plot_decomposition, "main": plot_decomposition}

    def sections(self, result) -> list[Section]:
        """On a page of its own (the explorer's saved view): the decomposition as the QK analysis shows it."""
        from .qk_view import decomposition_html

        title = (
            f"QK decomposition of {result.label}: its score split over residual components "
            f"({result.how}; mean attention there {result.attention:.2f})"
        )
        return [Section("qk-decomposition", title, decomposition_html(result))]

    def legend(self, result) -> dict[str, str]:
        return {"QK decomposition": result.note}

    def notebook_html(self, result) -> str:
        return frame_html(
            f"QK decomposition of head {result.label}: {result.how}; score {result.score:.3f}",
            result.to_frame(),
            self.figure(result, "main"),
        )


@register(PositionalQK)
class PositionalQKView(View):
    figures = {"plot_positional": plot_positional, "main": plot_positional}

    def notebook_html(self, result) -> str:
        f = result.to_frame()
        peak = f.loc[f.groupby(["layer", "head"]).score.idxmax()]
        return frame_html(f"Positional QK circuit: {result.method}", peak, self.figure(result, "main"))


@register(TokenQK)
class TokenQKView(View):
    figures = {"plot_token_qk": plot_token_qk, "main": plot_token_qk}

    def notebook_html(self, result) -> str:
        import pandas as pd

        f = pd.DataFrame(result.top_pairs(), columns=["query token", "key token", "score"])
        return frame_html(f"Token QK circuit of head {result.label} ({result.where})", f, self.figure(result, "main"))


@register(CompositionScores)
class CompositionScoresView(View):
    figures = {"plot_composition": plot_composition, "main": plot_composition}

    def notebook_html(self, result) -> str:
        f = result.to_frame().sort_values("excess", ascending=False)
        return frame_html(
            f"Composition scores, {result.where} (baseline {result.baseline:.4f} subtracted in 'excess'). "
            + COMPOSITION_CAVEAT,
            f,
            self.figure(result, "main"),
        )


@register(OffsetComposition)
class OffsetCompositionView(View):
    def notebook_html(self, result) -> str:
        f = result.to_frame().sort_values("excess", ascending=False)
        return frame_html(
            f"Q/K-composition by rotary offset ({result.span}; baseline {result.baseline:.4f} subtracted in 'excess'). "
            + COMPOSITION_CAVEAT,
            f,
        )
