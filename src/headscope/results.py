"""What every result class shares: strict JSON, JSON-safe rounding, and the notebook table view.

Result classes (QK, logits) are numbers and metadata; ``to_json`` is strict (NaN and infinities
become null), and ``_repr_html_`` is a title, a table and a figure drawn by :mod:`headscope.render`
(imported lazily inside :func:`_html`, the notebook-view exception of docs/architecture.md).
"""

from __future__ import annotations

import html

import numpy as np

from .jsonsafe import dumps


def rounded(x, nd: int = 6):
    """Floats, arrays, lists and tuples rounded to ``nd`` decimals for JSON; NaN becomes None.

    >>> rounded([0.1234567, float("nan"), np.float32(2.5)], 3)
    [0.123, None, 2.5]
    """
    if isinstance(x, np.ndarray):
        return [rounded(v, nd) for v in x.tolist()] if x.ndim else rounded(x.item(), nd)
    if isinstance(x, (list, tuple)):
        return [rounded(v, nd) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else round(float(x), nd)
    return x


def _html(title: str, frame, fig=None, rows: int = 12) -> str:
    """A notebook view: a title, the first rows of a frame, a figure (encoded by headscope.render)."""
    from .render.html import figure_html

    body = frame.head(rows).to_html(index=False, float_format=lambda v: f"{v:.4g}")
    return f"<h4>{html.escape(title)}</h4>{body}" + (figure_html(fig) if fig is not None else "")


class Result:
    """Base of the result classes: ``to_json`` from ``to_dict``."""

    def to_dict(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)  # strict JSON: NaN/Infinity -> null
