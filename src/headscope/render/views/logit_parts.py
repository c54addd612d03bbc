"""Views of the logit analysis's parts, each on its own in a notebook: a title, a table and the figure.

The figures are :mod:`headscope.render.logit_figures`; the results are :mod:`headscope.results.logit_results`.
"""

from __future__ import annotations

from ...results.logit_results import InductionStories, LogitAttribution, OVRows, RepeatLogitEffects
from ..logit_figures import repeat_effect_heatmap, token_head_heatmap
from ..lookup import register
from ..view_base import View, frame_html


@register(LogitAttribution)
class LogitAttributionView(View):
    figures = {"token_head_heatmap": token_head_heatmap, "main": token_head_heatmap}

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
    figures = {}

    def notebook_html(self, result) -> str:
        return frame_html(f"OV circuit of {result.label}, {result.model_name}", result.to_frame(), rows=30)


@register(InductionStories)
class InductionStoriesView(View):
    def notebook_html(self, result) -> str:
        return frame_html(f"Induction stories, {result.model_name}", result.to_frame())
