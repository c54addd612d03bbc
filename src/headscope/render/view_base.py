"""A view draws one type of result: its page sections, legend, subtitle, figures, terminal table, notebook view.

Results are plain data (:mod:`headscope.results`); everything a reader sees of one is written
in the one :class:`View` registered for its type (:func:`headscope.render.lookup.register`),
one module per view in :mod:`headscope.render.views`. The page
(:class:`headscope.render.page.Report`) is a list of results: it asks each result's view for its
sections, legend entries and subtitle, and has no code of its own for any type.

A new report section is therefore two new files: a result dataclass and a view module.
"""

from __future__ import annotations

import html as _html
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

from .html import esc, figure_html, legend_html, page_asset, scripts_html


class Section(NamedTuple):
    """One section of the page: ``anchor`` (the nav link's target), ``title``, ``html`` (the body)."""

    anchor: str
    title: str
    html: str


def frame_html(title: str, frame, fig=None, rows: int = 12) -> str:
    """A notebook view: a title, the first ``rows`` rows of a frame, and a figure if given."""
    body = frame.head(rows).to_html(index=False, float_format=lambda v: f"{v:.4g}")
    return f"<h4>{_html.escape(title)}</h4>{body}" + (figure_html(fig) if fig is not None else "")


def plotted(fn: Callable, *args) -> str:
    """``fn(*args)`` as an inline figure, or a note when the figure cannot be drawn here (no matplotlib)."""
    try:
        return figure_html(fn(*args))
    except ImportError as exc:
        return f'<p class="note">figure unavailable: {esc(exc)}</p>'


def sections_html(sections: list[Section]) -> str:
    return "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.html}</section>' for s in sections)


class View:
    """How one type of result is shown. Every method has a default, so a view writes only what it has.

    ``figures`` maps a name to a function ``(result, *args, **kwargs) -> matplotlib figure``; the
    result's ``plot*`` methods reach them through :meth:`figure`.
    """

    figures: ClassVar[dict[str, Callable[..., Any]]] = {}

    # --- the page -----------------------------------------------------------------------------
    def sections(self, result) -> list[Section]:
        """The result's sections on the page, in order (none by default)."""
        return []

    def legend(self, result) -> dict[str, str]:
        """Legend entries (name -> what it means and where it comes from) this result adds to the page."""
        return {}

    def subtitle(self, result) -> str:
        """A few words for the page's subtitle ("" for none)."""
        return ""

    # --- pictures -----------------------------------------------------------------------------
    def figure(self, result, name: str, *args, **kwargs):
        """The figure ``name`` of ``result`` (see :attr:`figures`)."""
        if name not in self.figures:
            known = ", ".join(self.figures) or "none"
            raise KeyError(f"{type(self).__name__} draws no figure {name!r} (it draws: {known})")
        return self.figures[name](result, *args, **kwargs)

    # --- the terminal ---------------------------------------------------------------------------
    def terminal(self, result, console) -> None:
        """Print the result's summary to a :class:`rich.console.Console` (default: its frame as a table)."""
        from rich.table import Table

        frame = result.to_frame()
        t = Table(title=self.title(result))
        for c in frame.columns:
            t.add_column(str(c))
        for row in frame.head(20).itertuples(index=False):
            t.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        console.print(t)

    # --- the notebook ---------------------------------------------------------------------------
    def title(self, result) -> str:
        return type(result).__name__

    def notebook_frame(self, result):
        """The table the default notebook view shows."""
        return result.to_frame()

    def notebook_figure(self, result):
        """The figure the default notebook view shows (None: no figure)."""
        return None

    def notebook_html(self, result) -> str:
        """The notebook view: the page's sections and legend when the view has sections, else title, table, figure."""
        sections = self.sections(result)
        if not sections:
            return frame_html(self.title(result), self.notebook_frame(result), self.notebook_figure(result))
        body = sections_html(sections)
        legend = self.legend(result)
        if legend:
            body += f"<details><summary>Definitions</summary>{legend_html(legend)}</details>"
        scripts = scripts_html() if 'data-cv-component="' in body else ""
        return f"<div class='hs'><style>{page_asset('page.css')}</style>{body}{scripts}</div>"
