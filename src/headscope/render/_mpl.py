"""Matplotlib set up once for every figure: a headless backend, one PNG encoder, safe token labels.

Every figure headscope makes, whether written as a file or inlined in a page or notebook, is
encoded by :func:`encode_png` at :data:`FIG_DPI` with a 256-colour palette (a third of the size;
heatmaps look the same). A token its font lacks is drawn as a box; :func:`encode_png` says so
once per process instead of one warning per glyph.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402

from ..tokens import visible_whitespace  # noqa: E402

#: Resolution of every PNG figure.
FIG_DPI = 100

_told_missing_glyph = False


def tex_safe(label: str) -> str:
    """Escape characters matplotlib would treat as mathtext."""
    return label.replace("$", r"\$")


def show_token(label: str, width: int = 14) -> str:
    """A token as a readable, mathtext-safe tick label, cut to ``width`` characters."""
    s = tex_safe(visible_whitespace(label))
    return s if len(s) <= width else s[: width - 1] + "…"


def encode_png(fig, dpi: int = FIG_DPI) -> bytes:
    """``fig`` as a palette PNG; the figure is closed afterwards."""
    global _told_missing_glyph
    from PIL import Image

    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    title = _title_of(fig)
    plt.close(fig)
    missing: list[str] = []
    for w in caught:
        if "missing from font" in str(w.message):
            glyph = re.match(r"Glyph (\d+)", str(w.message))
            if glyph and chr(int(glyph.group(1))) not in missing:
                missing.append(chr(int(glyph.group(1))))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing and not _told_missing_glyph:
        _told_missing_glyph = True  # once a run: a report draws dozens of figures
        print(missing_glyph_note(missing, title), file=sys.stderr)
    buf.seek(0)
    out = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def _title_of(fig) -> str:
    """The figure's title, or its first panel's, for a note about it."""
    titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
    return next((" ".join(t.split()) for t in titles if t and t.strip()), "")


def missing_glyph_note(chars: list[str], title: str) -> str:
    """What :func:`encode_png` says once a run when the figure font lacks characters a figure draws.

    >>> missing_glyph_note(["字", "ಅ"], "OV circuit of L18H6")
    "note: the figure font has no 字 (U+5B57), ಅ (U+0C85), drawn as boxes (first in 'OV circuit of L18H6'; install a font that has them, e.g. Noto, for matplotlib to use)"
    """
    shown = ", ".join(f"{c} (U+{ord(c):04X})" for c in chars[:5]) + (
        f" and {len(chars) - 5} more" if len(chars) > 5 else ""
    )
    where = f"first in '{title}'; " if title else ""
    return (
        f"note: the figure font has no {shown}, drawn as boxes ({where}install a font that has them, e.g. Noto, "
        "for matplotlib to use)"
    )


def tight_layout(fig, **kwargs) -> None:
    """``fig.tight_layout(**kwargs)`` without matplotlib's warning per missing glyph: laying out
    draws the text once, and a token the font lacks would warn there, before :func:`encode_png`
    (which draws it again) says so once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*missing from font", category=UserWarning)
        fig.tight_layout(**kwargs)


def decimals_for(values, significant: int = 2, least: int = 2, most: int = 6) -> int:
    """Decimals that show the largest finite ``|value|`` with ``significant`` digits (at least ``least``).

    A fixed ``.2f`` printed every value of a small-valued score (1e-4 logits, a 0.001-nat change
    in loss) as "0.00" or "-0.00": numbers that say nothing, or say zero where there is an effect.
    """
    a = np.abs(np.asarray(values, dtype=float))
    a = a[np.isfinite(a) & (a > 0)]
    if a.size == 0:
        return least
    lead = int(np.floor(np.log10(a.max())))  # 0.0012 -> -3
    return int(min(most, max(least, significant - 1 - lead)))


def signed_limit(values, bulk: float = 98.0, outlier: float = 2.0) -> tuple[float, bool]:
    """Symmetric colour limit for signed values, and whether values beyond it are clipped.

    The largest ``|value|``, unless it is more than ``outlier`` times the ``bulk`` percentile of
    ``|value|`` (the largest value always left out of the bulk): then one head (SmolLM2's L29H1 at 1.1 logits) would leave every other cell
    (the induction heads' 0.1) the colour of zero, so the limit is that percentile and the few
    values past it saturate (the colorbar gets arrows: ``extend="both"``).
    """
    a = np.abs(np.asarray(values, dtype=float))
    a = a[np.isfinite(a)]
    top = float(a.max()) if a.size else 0.0
    if top == 0.0:
        return 1.0, False
    # the bulk's edge: the value below the top (100 - bulk) % of values, and below the largest one at least
    beyond = max(1, int(a.size * (100.0 - bulk) / 100.0))
    if a.size <= beyond:
        return top, False
    mid = float(np.sort(a)[::-1][beyond])
    if mid > 0.0 and top > outlier * mid:
        return mid, True
    return top, False


def cell_fontsize(ax, rows: int, cols: int, chars: int, least: float = 6.0, most: float = 10.0) -> float:
    """A font size (points) for text of ``chars`` characters inside one cell of a ``rows`` x ``cols`` grid on ``ax``:
    as large as the cell allows (a fixed 6 pt left a 1 x 1 or 2 x 32 grid's numbers unreadably small in
    cells an inch wide), between ``least`` and ``most``."""
    fig = ax.figure
    box = ax.get_position()
    w_pt = box.width * fig.get_figwidth() * 72 / max(cols, 1)
    h_pt = box.height * fig.get_figheight() * 72 / max(rows, 1)
    # a digit is about 0.6 em wide; leave a margin either side and above and below
    return float(np.clip(min(0.8 * w_pt / (0.6 * max(chars, 1)), 0.6 * h_pt), least, most))


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` with :func:`encode_png` (closing it)."""
    path = Path(path)
    path.write_bytes(encode_png(fig))
    return path


def attention_heatmap(
    ax,
    pattern,
    labels: list[str],
    title: str,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    cbar_label: str = "attention",
    masked=None,
):
    """Token x token heatmap: queries down, keys across. ``masked`` cells are drawn grey; whitespace made visible."""
    from ..tokens import visible_whitespace

    n = len(labels)
    data = np.ma.masked_array(pattern, mask=masked) if masked is not None else pattern
    cm = plt.get_cmap(cmap).with_extremes(bad="#d9d9d9")
    im = ax.imshow(data, cmap=cm, vmin=0 if vmax == 1.0 else None, vmax=vmax, aspect="equal", interpolation="nearest")
    fs = max(4.0, min(9.0, 420 / max(n, 1)))
    ticks = list(range(n))
    safe = [tex_safe(visible_whitespace(t)) for t in labels]
    ax.set_xticks(ticks, safe, rotation=90, fontsize=fs)
    ax.set_yticks(ticks, safe, fontsize=fs)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(tex_safe(title), fontsize=10)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(cbar_label)
    return im
