"""One self-contained HTML page of everything headscope found about a model.

The page is a single file with no outside reference: its CSS inline, figures as PNG data
URIs, and circuitsvis's JavaScript bundle inlined **once**, followed by one small JSON
island per interactive view and one script (``page.js``) that renders them all. Opening it
makes no network request.

Safety. Every outside string that reaches the page (token strings, the user's texts, file
and model names) goes through :func:`~headscope.render.html.esc` or, inside JSON islands,
:func:`~headscope.render.html.script_json` (``<``, ``>``, ``&`` written as ``\\u003c`` etc.,
so no ``</script>`` can end an island early; circuitsvis then shows tokens as text). A
Content-Security-Policy with a fresh nonce per page lets only the page's own scripts run and
forbids every fetch: a second line of defence, not the first.

Size. Numbers are rounded (3 decimals on the page, full precision in ``--json``), figures are
palette PNGs at 90 dpi, and interactive views keep at most 64 tokens of a sequence (the page
says where it cut). The default SmolLM2 page is measured in docs/report.md.

The page is a list of results and knows no result type: each result's view
(:func:`headscope.render.lookup.view_of`, one module per view in :mod:`headscope.render.views`)
gives its sections, legend entries and subtitle. The same pieces make the notebook views, and a
:class:`Report` renders inline in Jupyter.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..errors import BadInput
from ..models.model import as_model
from ..results.base import Result
from ..results.qk_results import QKAnalysis
from .html import DECIMALS, MAX_VIEW_TOKENS, esc, legend_html, page_asset, scripts_html
from .lookup import view_of
from .view_base import Section, sections_html


@dataclass
class Report:
    """One page: ``model`` (its info dict), ``results`` (any results, shown in this order), ``notes``.

    ``model`` may also be a loaded model (its ``info()`` is taken); ``results`` must be headscope
    results (one alone is a list of one). Anything else is a :class:`~headscope.errors.BadInput`.

    >>> from headscope.results import AttentionViews
    >>> res = headscope.scan_induction(model, seq_len=8, batch=2, ablate=False)
    >>> page = Report(res.model, [res, AttentionViews.of(res)])
    >>> [anchor for anchor, _, _ in page.sections()]
    ['top', 'roles', 'heatmaps', 'loss', 'attention', 'legend']
    >>> Report(model, [res]).model == res.model
    True
    """

    model: dict
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.model, Mapping):
            if not hasattr(self.model, "run_with_hooks"):
                raise BadInput(
                    f"Report's model must be a model's info dict or a loaded model, got {type(self.model).__name__}",
                    hint="e.g. Report(result.model, [result]) or Report(model, [result])",
                )
            self.model = as_model(self.model).info()
        if isinstance(self.results, Result):
            self.results = [self.results]
        self.results = list(self.results)
        for i, r in enumerate(self.results):
            if not isinstance(r, Result):
                raise BadInput(
                    f"Report's results must be headscope results; item {i} is {r!r:.60} ({type(r).__name__})",
                    hint="e.g. Report(model, [headscope.scan_induction(model), ...])",
                )

    def first(self, result_type: type):
        """The first result of ``result_type`` on the page (None if there is none)."""
        return next((r for r in self.results if isinstance(r, result_type)), None)

    def sections(self) -> list[Section]:
        """``[(anchor, title, html)]`` in page order: each result's sections, then the legend of them all.

        A section whose anchor is already on the page is left out (the first result to claim an
        anchor keeps it: the scan's attention views before a QK analysis's patterns).
        """
        out: list[Section] = []
        defs: dict[str, str] = {}
        for result in self.results:
            view = view_of(result)
            taken = {s.anchor for s in out}
            out += [s for s in map(Section._make, view.sections(result)) if s.anchor not in taken]
            defs.update(view.legend(result))
        out.append(Section("legend", "Legend: what each score means and where it comes from", legend_html(defs)))
        return out

    def to_html(self) -> str:
        """The whole page: one self-contained HTML document."""
        nonce = secrets.token_urlsafe(16)
        sections = self.sections()
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src data:; "
            "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
        )
        nav = "".join(
            f'<a href="#{a}">{esc(t.split(":")[0].removesuffix(" (interactive)"))}</a>' for a, t, _ in sections
        )
        body = sections_html(sections)
        has_views = 'data-cv-component="' in body  # escaped text can never spell the quote
        name = self.model.get("name", "model")
        when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'>"
            f"<title>headscope report: {esc(name)}</title><style>{page_asset('page.css')}</style></head>"
            f"<body class='hs'><header class='hs-head'><h1>headscope report: {esc(name)}</h1>"
            f"<p>{esc(self.subtitle())}</p></header><nav>{nav}</nav><main>{body}</main>"
            f"<footer>{self.notes_html()}<p>Made by headscope {esc(__version__)} on {esc(when)}. This page is one "
            "self-contained file: it loads nothing from the network and can be sent as it is.</p></footer>"
            + (scripts_html(nonce) if has_views else f"<script nonce='{nonce}'>{page_asset('page.js')}</script>")
            + "</body></html>\n"
        )

    def subtitle(self) -> str:
        m = self.model
        bits = [f"{m.get('n_layers')} layers × {m.get('n_heads')} heads"] if m.get("n_layers") else []
        bits += [b for b in (view_of(r).subtitle(r) for r in self.results) if b]
        return "; ".join(bits)

    def notes_html(self) -> str:
        qk = any(isinstance(r, QKAnalysis) for r in self.results)
        files = list(dict.fromkeys(r.json_file for r in self.results if r.json_file))  # only this page's results
        notes = list(self.notes) + [
            f"Numbers on this page are rounded to {DECIMALS} decimals"
            + (" (QK scores in the interactive views to 2)" if qk else "")
            + f" and interactive views keep at most {MAX_VIEW_TOKENS} tokens of a sequence"
            + (f"; the JSON files of these results ({', '.join(files)}) have full precision." if files else ".")
        ]
        return "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (a file; an existing folder gets ``report.html`` inside it); returns the file.

        A file named by ``path`` itself is replaced, as a save does; a ``report.html`` already in the
        folder is not (its name was not given), and is refused with :class:`~headscope.errors.BadInput`.
        """
        path = Path(path)
        if path.is_dir():
            if (path / "report.html").exists():
                raise BadInput(
                    f"{path} already holds a report.html, which saving into the folder would replace",
                    hint=f"name the file to replace it ({path / 'report.html'}), or give another name",
                )
            path = path / "report.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        """Inline in Jupyter: the page's sections and scripts (no CSP: a notebook has its own)."""
        body = sections_html(self.sections())
        return f"<div class='hs'><style>{page_asset('page.css')}</style>{body}{scripts_html()}</div>"
