"""Strict JSON for every file headscope writes: NaN and Infinity become ``null``.

Python's :func:`json.dumps` writes ``NaN`` and ``Infinity`` by default, which is not JSON (a
browser's ``JSON.parse``, ``jq`` and most other readers refuse the file). A score can
legitimately be NaN (a masked cell, a model whose weights overflow in float16), so results go
through :func:`strict` first: every non-finite float becomes ``None``; numpy scalars and arrays
become plain Python values. :func:`dumps` then writes with ``allow_nan=False``, so anything that
slipped through fails loudly here instead of writing a broken file.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict(value: Any) -> Any:
    """``value`` with NaN/Infinity replaced by ``None`` (recursively through dicts, lists, tuples, arrays)."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def dumps(value: Any, indent: int | None = 2, **kwargs: Any) -> str:
    """:func:`json.dumps` of :func:`strict` ``(value)``, refusing any NaN left (``allow_nan=False``)."""
    return json.dumps(strict(value), indent=indent, allow_nan=False, **kwargs)
