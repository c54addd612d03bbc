"""Token strings as people read them in figures and pages: whitespace made visible.

One convention everywhere (heatmap ticks, report pages, notebook views): a space shows as
``·``, a newline as ``↵``, a tab as ``⇥``, a carriage return as ``␍``.
"""

from __future__ import annotations

_VISIBLE = str.maketrans({" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible_whitespace(text: str) -> str:
    """``"·the↵"`` for ``" the\\n"``.

    >>> visible_whitespace(" a\\tb\\n")
    '·a⇥b↵'
    """
    return text.translate(_VISIBLE)
