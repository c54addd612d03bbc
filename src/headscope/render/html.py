"""HTML pieces shared by the report page and the notebook views: escaping, tables, tabs,
inline figures and interactive circuitsvis views.

Every outside string goes through :func:`esc` (HTML text and attributes) or
:func:`script_json` (JSON inside ``<script>``). Interactive views are a target ``<div>`` plus a
JSON island (``<script type="application/json">``); :func:`scripts_html` (circuitsvis's bundle
and ``page.js``, once per page, after every view) draws them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..head_labels import head_label
from ..jsonsafe import dumps
from ..results.attention import AttentionSample
from ..results.base import rounded
from ..tokens import visible_whitespace
from ._mpl import FIG_DPI, encode_png

#: Interactive views keep the first this-many tokens of a sequence (rows stay exact: attention is causal).
MAX_VIEW_TOKENS = 64
#: Decimals of the attention weights in the interactive views and of every number in tables.
DECIMALS = 3


# --- text, numbers, tables --------------------------------------------------------------------
def esc(text: Any) -> str:
    """``text`` as HTML text or attribute value: ``& < > " '`` escaped."""
    return html.escape(str(text), quote=True)


def script_json(value: Any) -> str:
    """JSON safe to put inside ``<script>``: no ``<``, ``>`` or ``&`` survive (written as ``\\u003c`` etc.)."""
    s = dumps(value, indent=None, ensure_ascii=False, separators=(",", ":"))  # NaN/Infinity -> null
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def fmt(v: float | None, decimals: int = DECIMALS, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"


def figure_alt(fig) -> str:
    """What a figure shows, in words, for its ``alt`` text: its title and its panels' titles.

    >>> import matplotlib.pyplot as plt
    >>> fig, (a, b) = plt.subplots(1, 2)
    >>> _ = fig.suptitle("Induction score"), a.set_title("layer 0"), b.set_title("layer 1")
    >>> figure_alt(fig)
    'Induction score: layer 0; layer 1'
    >>> plt.close(fig)
    """
    sup = fig.get_suptitle().strip()
    panels = []
    for ax in fig.axes:
        title = " ".join(t for t in (ax.get_title(loc) for loc in ("left", "center", "right")) if t).strip()
        if title and title not in panels:
            panels.append(title)
    shown = "; ".join(panels[:6]) + (f"; and {len(panels) - 6} more panels" if len(panels) > 6 else "")
    words = ": ".join(x for x in (sup, shown) if x)
    return " ".join(words.split()) or "figure"


def figure_html(fig, caption: str = "", dpi: int = FIG_DPI, alt: str = "") -> str:
    """A matplotlib figure as an inline PNG (closed afterwards), with an escaped caption.

    The ``alt`` text is ``alt``, else the caption, else the figure's own titles (:func:`figure_alt`),
    so a screen reader or a page whose images are off still says what each figure is.
    """
    import base64

    alt = alt or caption or figure_alt(fig)
    data = base64.b64encode(encode_png(fig, dpi)).decode()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


#: A column header: its text, or ``(short, full)``: the short name shown, the full name in its tooltip.
Column = str | tuple[str, str]


def header_html(column: Column) -> str:
    """A column header's content: the text escaped, or a short name whose ``<abbr>`` carries the full one.

    >>> header_html("head"), header_html(("prev", "previous-token"))
    ('head', '<abbr title="previous-token">prev</abbr>')
    """
    if isinstance(column, tuple):
        short, full = column
        return f'<abbr title="{esc(full)}">{esc(short)}</abbr>' if short != full else esc(short)
    return esc(column)


def table_html(columns: Sequence[Column], rows: Iterable[list], table_id: str = "", sortable: bool = False) -> str:
    """A table; a cell is text (escaped, left-aligned), a number (right-aligned) or ``(shown_html, sort_value)``.

    A column is its header text or ``(short, full)`` (:func:`header_html`: the short name shown, the
    full one in a tooltip), so a table of many scores stays narrow. The table sits in a
    ``div.table-scroll`` box: a table wider than the page scrolls sideways in its own box instead of
    widening the page.
    """

    def cell(c):
        if isinstance(c, tuple):  # (already-escaped html, value to sort by)
            shown, v = c
            return f'<td class="{"t" if isinstance(v, str) else ""}" data-v="{esc(v)}">{shown}</td>'
        if isinstance(c, (int, float, np.floating, np.integer)) and not isinstance(c, bool):
            return f'<td data-v="{float(c)!r}">{fmt(float(c)) if isinstance(c, (float, np.floating)) else c}</td>'
        return f'<td class="t">{esc(c)}</td>'

    rows = list(rows)

    def is_text(c) -> bool:
        return isinstance(c, str) or isinstance(c, tuple) and isinstance(c[1], str)

    text_cols = {i for i, c in enumerate(rows[0]) if is_text(c)} if rows else {0}
    head = "".join(f'<th class="{"t" if i in text_cols else ""}">{header_html(c)}</th>' for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    return f'<div class="table-scroll"><table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_html(pairs: dict[str, Any]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs.items()) + "</dl>"


def visible_token(t: str) -> str:
    """A token with its whitespace made visible, as the induction views show it (space ·, newline ↵, tab ⇥)."""
    return visible_whitespace(t)


def tokens_html(tokens: Iterable[str]) -> str:
    """Token strings as chips, so their edges and spaces show."""
    return "".join(f'<span class="tok">{esc(t)}</span>' for t in tokens)


def legend_html(definitions: dict[str, str]) -> str:
    """Every score's definition and source, as a definition list."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in definitions.items())
    return f'<dl class="legend">{items}</dl>'


def tabs_html(group: str, panels: list[tuple[str, str]]) -> str:
    """Buttons that switch between ``panels`` ``[(label, html)]``; the first is shown.

    Hidden panels are moved off-screen rather than given ``display: none``, so interactive views
    in them are laid out at full size and draw correctly when their tab is chosen.
    """
    bar, body = [], []
    for i, (label, content) in enumerate(panels):
        pid = f"{group}-{i}"
        bar.append(
            f'<button type="button" data-tab="{pid}" aria-selected="{"true" if i == 0 else "false"}">'
            f"{esc(label)}</button>"
        )
        body.append(f'<div class="tabpanel{"" if i == 0 else " off"}" id="{pid}">{content}</div>')
    return f'<div class="tabs">{"".join(bar)}</div><div class="tabbed">{"".join(body)}</div>'


# --- interactive attention (circuitsvis) -----------------------------------------------------
def circuitsvis_bundle() -> str:
    """circuitsvis's browser bundle (defines the global ``CircuitsVis``), safe inside ``<script>``."""
    import circuitsvis

    js = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_text(encoding="utf-8")
    # "</script" (any case) would end our script element; "<!--" could start an HTML comment state.
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def page_asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def scripts_html(nonce: str | None = None) -> str:
    """The circuitsvis bundle and the page script: once per page, after every view."""
    n = f' nonce="{esc(nonce)}"' if nonce else ""
    return f"<script{n}>{circuitsvis_bundle()}</script><script{n}>{page_asset('page.js')}</script>"


def heads_view_html(
    view_id: str,
    title: str,
    tokens: list[str],
    values: np.ndarray,
    names: list[str],
    *,
    text: str | None = None,
    notes: Iterable[str] = (),
    decimals: int = DECIMALS,
    max_tokens: int = MAX_VIEW_TOKENS,
    **props,
) -> str:
    """One interactive circuitsvis ``AttentionHeads`` view of ``values`` (``[heads, query, key]``).

    Keeps the first ``max_tokens`` tokens (rows stay exact: attention is causal) and says so;
    ``text`` is shown above the view as written. Emits the target ``<div>`` and its JSON
    island; :func:`scripts_html` must follow on the page.
    """
    n = len(tokens)
    keep = min(n, max_tokens)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64)[:, :keep, :keep])  # masked cells: hidden by maskUpperTri
    data = {
        "attention": rounded(v, decimals),
        "tokens": list(tokens[:keep]),
        "attentionHeadNames": names,
        "maskUpperTri": True,
        **props,
    }
    notes = [t for t in notes if t]
    if keep < n:
        notes.append(
            f"showing the first {keep} of {n} tokens (the page's limit; each row shown is exact, "
            "attention being causal)"
        )
    note = "".join(f'<p class="note">{esc(t)}</p>' for t in notes)
    shown = f'<div class="text-shown">{esc(text)}</div>' if text else ""
    return (
        f'<div class="cv-block"><h3>{esc(title)}</h3>{shown}{note}'
        f'<div class="cv-view" id="{esc(view_id)}"></div>'
        f'<script type="application/json" data-cv-target="{esc(view_id)}" data-cv-component="AttentionHeads">'
        f"{script_json(data)}</script></div>"
    )


def attention_view_html(
    sample: AttentionSample, view_id: str, text: str | None = None, max_tokens: int = MAX_VIEW_TOKENS
) -> str:
    """An interactive view of ``sample.patterns`` (``[heads, query, key]``), ``text`` shown above it."""
    return heads_view_html(
        view_id,
        sample.title,
        [visible_whitespace(t) for t in sample.tokens],
        sample.patterns,
        [head_label(l, h) for l, h in sample.heads],
        text=text,
        notes=[sample.note],
        max_tokens=max_tokens,
    )
