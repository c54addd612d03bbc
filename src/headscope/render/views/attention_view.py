"""The interactive attention views of a page (circuitsvis): the scan's repeated tokens and the user's texts.

Draws :class:`~headscope.results.attention.AttentionViews`: one tab per sample.
"""

from __future__ import annotations

from ...results.attention import AttentionSample, AttentionViews
from ..html import attention_view_html, page_asset, scripts_html, tabs_html
from ..lookup import register
from ..view_base import Section, View

VIEW_HELP = (
    "<p class='muted'>Hover over a head to see its pattern, click to lock it; hover over a cell to read its "
    "value. Queries down, keys across; one tab per sequence.</p>"
)


#: What the attention section says when it has nothing to draw.
NO_SAMPLES = (
    "<p class='muted'>No attention views: the scan drew no attention sample (<code>sample=False</code>), or it was "
    "read back from JSON, which keeps scores, not attention patterns. Run <code>scan_induction</code> again "
    "(it draws a sample by default), or pass texts to <code>build_report</code>.</p>"
)


def attention_section(views: AttentionViews) -> Section:
    """One tab per sample, titled by the sample (without the common prefix)."""
    tabs = [
        (s.title.removeprefix("Top induction heads on "), attention_view_html(s, f"cv-{i}", views.source(i)))
        for i, s in enumerate(views.samples)
    ]
    return Section("attention", views.title, VIEW_HELP + tabs_html("views", tabs))


@register(AttentionViews)
class AttentionViewsView(View):
    def sections(self, result) -> list[Section]:
        if result.samples:
            return [attention_section(result)]
        return [Section("attention", result.title, NO_SAMPLES)]  # said, not a section left out without a word

    def title(self, result) -> str:
        return result.title


@register(AttentionSample)
class AttentionSampleView(View):
    def title(self, result) -> str:
        return result.title

    def notebook_html(self, result) -> str:
        """The sample as the page's interactive view (circuitsvis), inline."""
        view = attention_view_html(result, "cv-sample", result.text)
        return f"<div class='hs'><style>{page_asset('page.css')}</style>{view}{scripts_html()}</div>"
