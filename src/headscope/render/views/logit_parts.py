"""Views of the logit analysis's parts, each on its own in a notebook: a title, a table and the figure.

The figures are :mod:`headscope.render.logit_figures`; the results are :mod:`headscope.results.logit_results`.
"""

from __future__ import annotations

import numpy as np

from ...head_labels import head_label
from ...results.logit_results import InductionStories, LogitAttribution, OVRows, RepeatLogitEffects
from ...tokens import visible_whitespace
from ..html import DECIMALS, esc, table_html, tokens_html, visible_token
from ..logit_figures import ov_row_bars, repeat_effect_heatmap, token_head_heatmap
from ..lookup import register
from ..view_base import Section, View, frame_html, plotted


@register(LogitAttribution)
class LogitAttributionView(View):
    figures = {"token_head_heatmap": token_head_heatmap, "main": token_head_heatmap}

    def sections(self, result) -> list[Section]:
        """On a page of its own: the largest pushes at the last position, then the tokens x heads heatmap."""
        p = len(result.logit) - 1
        at = result.heads[p]
        order = np.argsort(-np.abs(at), axis=None)[:12]
        rows = [
            [head_label(int(l), int(h)), round(float(at[l, h]), DECIMALS)]
            for l, h in zip(*np.unravel_index(order, at.shape))
        ]
        where = f"{visible_whitespace(result.token_labels[p])} → {visible_whitespace(result.target_labels[p])}"
        body = (
            f"<p class='muted'>Position {p} ({esc(where)}): every head's direct effect on the centred logit of the "
            f"next token; all components {result.logit[p]:.3f}, the model's own {result.model_logit[p]:.3f}.</p>"
            + table_html(["head", "direct effect (centred logit)"], rows)
            + plotted(token_head_heatmap, result)
        )
        return [Section("dla", "Direct logit attribution: which heads write the next token", body)]

    def legend(self, result) -> dict[str, str]:
        return {"direct logit effect": result.definition}

    def notebook_html(self, result) -> str:
        f = result.top(10)
        return frame_html(
            f"Direct logit attribution, {result.model_name} (largest pushes on the next token)",
            f,
            self.figure(result, "main"),
        )


@register(RepeatLogitEffects)
class RepeatLogitEffectsView(View):
    figures = {"repeat_effect_heatmap": repeat_effect_heatmap, "main": repeat_effect_heatmap}

    def notebook_html(self, result) -> str:
        f = result.to_frame().sort_values("later_repeat", ascending=False)
        return frame_html(
            f"Direct logit effect on repeated tokens, {result.model_name}", f, self.figure(result, "main")
        )


@register(OVRows)
class OVRowsView(View):
    figures = {"ov_row_bars": ov_row_bars, "main": ov_row_bars}

    def sections(self, result) -> list[Section]:
        """On a page of its own: each source token's self-rank, promoted and suppressed tokens, and its bars."""
        rows = [
            [
                (tokens_html([visible_token(result.token_labels[i])]), result.token_labels[i]),
                int(result.self_rank[i]),
                (tokens_html(visible_token(t) for t in result.top_labels[i][:5]), ""),
                (tokens_html(visible_token(t) for t in result.bottom_labels[i][:5]), ""),
            ]
            for i in range(len(result.token_ids))
        ]
        body = table_html(["source token", "self-rank", "promotes", "suppresses"], rows) + "".join(
            plotted(ov_row_bars, result, i) for i in range(min(3, len(result.token_ids)))
        )
        return [Section("ov-rows", f"OV circuit: what {result.label} writes when it attends to a token", body)]

    def legend(self, result) -> dict[str, str]:
        return {"OV row": result.convention}

    def notebook_html(self, result) -> str:
        title = f"OV circuit of {result.label}, {result.model_name}"
        return frame_html(title, result.to_frame(), self.figure(result, "main") if result.token_ids else None, rows=30)


@register(InductionStories)
class InductionStoriesView(View):
    def notebook_html(self, result) -> str:
        return frame_html(f"Induction stories, {result.model_name}", result.to_frame())
