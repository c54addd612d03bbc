"""Matplotlib set-up shared by every figure: a headless backend and safe token labels."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402


def tex_safe(label: str) -> str:
    """Escape characters matplotlib would treat as mathtext."""
    return label.replace("$", r"\$")


def save(fig, path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def to_png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def attention_heatmap(ax, pattern, labels: list[str], title: str, vmax: float | None = 1.0, cmap: str = "viridis",
                      cbar_label: str = "attention", masked=None):
    """Token x token heatmap: queries down, keys across. ``masked`` cells are drawn grey."""
    import numpy as np

    n = len(labels)
    data = np.ma.masked_array(pattern, mask=masked) if masked is not None else pattern
    cm = plt.get_cmap(cmap).with_extremes(bad="#d9d9d9")
    im = ax.imshow(data, cmap=cm, vmin=0 if vmax == 1.0 else None, vmax=vmax, aspect="equal", interpolation="nearest")
    fs = max(4.0, min(9.0, 420 / max(n, 1)))
    ticks = list(range(n))
    safe = [tex_safe(t) for t in labels]
    ax.set_xticks(ticks, safe, rotation=90, fontsize=fs)
    ax.set_yticks(ticks, safe, fontsize=fs)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(tex_safe(title), fontsize=10)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(cbar_label)
    return im
