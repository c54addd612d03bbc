"""Heads: how one is named, parsed and ranked, the same way everywhere.

A head is ``(layer, head)``, both counted from 0. It is shown as ``L18H6`` in every table,
figure, JSON key and page; ``--head`` accepts that spelling and the ``18.6`` one used in papers
(ARENA, Wang et al.). Ranking heads by a score always goes through :func:`top_k`, whose
tie-break is stable and documented, so the heads a table shows are the heads that get ablated.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import BadInput
from .settings import whole_number

Head = tuple[int, int]

_HEAD_RE = re.compile(r"^\s*L?(\d+)\s*(?:[.:]\s*H?|H)(\d+)\s*$", re.IGNORECASE)


def head_label(layer: int, head: int) -> str:
    """The one display name of a head.

    >>> head_label(18, 6)
    'L18H6'
    """
    return f"L{layer}H{head}"


def is_head_spec(spec: str) -> bool:
    """Whether ``spec`` is spelled like a head (``L18H6``, ``18.6``, ``18:6``), range not checked.

    >>> is_head_spec("L18H6"), is_head_spec("18.6"), is_head_spec("18")
    (True, True, False)
    """
    return _HEAD_RE.match(str(spec)) is not None


def as_head(spec: str | Head) -> Head:
    """``"L5H1"``, ``"5.1"`` or ``(5, 1)`` -> ``(5, 1)``, without checking a model's ranges.

    >>> as_head("L18H6"), as_head((18, 6))
    ((18, 6), (18, 6))
    """
    if isinstance(spec, tuple):
        return int(spec[0]), int(spec[1])
    m = _HEAD_RE.match(str(spec))
    if not m:
        raise BadInput(f"malformed head {spec!r}: expected L<layer>H<head> or <layer>.<head>, e.g. L5H1 or 5.1")
    return int(m.group(1)), int(m.group(2))


def parse_head(spec: str | Head, n_layers: int, n_heads: int) -> Head:
    """``"L5H1"``, ``"5.1"``, ``"5:1"`` or ``(5, 1)`` -> ``(5, 1)``, range-checked against the model.

    >>> parse_head("L5H1", 12, 12), parse_head("5.1", 12, 12)
    ((5, 1), (5, 1))
    """
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2 or not all(isinstance(x, numbers.Integral) for x in spec):
            raise BadInput(
                f"malformed head {spec!r}: expected a (layer, head) pair of integers, e.g. (5, 1)",
                hint=f"layers are 0..{n_layers - 1}, heads 0..{n_heads - 1}",
            )
        layer, head = (int(x) for x in spec)
        text = head_label(layer, head)
    elif not isinstance(spec, str):
        # 5.10 as a float is 5.1: which head was meant cannot be told, so it is refused.
        raise BadInput(
            f"malformed head {spec!r} ({type(spec).__name__}): expected a string such as 'L5H10' or '5.10', "
            "or a (layer, head) pair",
            hint="quote the head: '5.10' is layer 5, head 10; the number 5.10 is 5.1",
        )
    else:
        m = _HEAD_RE.match(spec)
        if not m:
            raise BadInput(
                f"malformed head {spec!r}: expected L<layer>H<head> or <layer>.<head>, e.g. L5H1 or 5.1",
                hint=f"layers are 0..{n_layers - 1}, heads 0..{n_heads - 1}",
            )
        layer, head, text = int(m.group(1)), int(m.group(2)), str(spec).strip()
    if not 0 <= layer < n_layers:
        raise BadInput(
            f"head {text}: layer {layer} does not exist; this model has {n_layers} layers (0..{n_layers - 1})",
            hint=f"use a layer from 0 to {n_layers - 1}",
        )
    if not 0 <= head < n_heads:
        raise BadInput(
            f"head {text}: head {head} does not exist; each layer has {n_heads} heads (0..{n_heads - 1})",
            hint=f"use a head from 0 to {n_heads - 1}",
        )
    return layer, head


def parse_heads(specs: Iterable[str | Head], n_layers: int, n_heads: int) -> list[Head]:
    """Parse and de-duplicate head specs, keeping their order; comma-separated lists work too.

    >>> parse_heads(["L5H1,5.1", "6.9"], 12, 12)
    [(5, 1), (6, 9)]
    """
    heads: list[Head] = []
    for spec in specs:
        parts = spec.split(",") if isinstance(spec, str) else [spec]
        for part in parts:
            if not isinstance(part, str) or part.strip():
                lh = parse_head(part, n_layers, n_heads)
                if lh not in heads:
                    heads.append(lh)
    if not heads:
        raise BadInput("no head given", hint="use L<layer>H<head> or <layer>.<head>, e.g. --head L5H1")
    return heads


def _as_scores(scores) -> np.ndarray:
    """``scores`` as a float64 ``[n_layers, n_heads]`` numpy array (a torch tensor detached and moved to the
    CPU first, bfloat16 included), or a ``BadInput`` saying what it is."""
    hint = "pass one score's 2-D array, e.g. result.scores['induction']"
    if hasattr(scores, "detach"):  # a torch tensor: numpy takes neither grad, bfloat16 nor a GPU
        scores = scores.detach().to("cpu").double().numpy()
    try:
        a = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput(
            f"top_k ranks an array of numbers; got {scores!r:.60} ({type(scores).__name__})", hint=hint
        ) from None
    if a.ndim != 2:
        raise BadInput(f"top_k ranks a [n_layers, n_heads] array of scores; got one of shape {a.shape}", hint=hint)
    return a


def top_k(scores: np.ndarray, k: int, exclude: Sequence[Head] = ()) -> list[tuple[int, int, float]]:
    """The ``k`` heads with the highest score in ``scores [n_layers, n_heads]``: ``[(layer, head, value)]``.

    Tie-break: equal scores keep layer-then-head order (a stable sort of the flattened array),
    so the same scores always give the same heads. NaN ranks last; heads in ``exclude`` are skipped.
    ``scores`` may be a numpy array, nested lists or a torch tensor (any dtype, on any device, with
    or without grad: read as float64); anything but a 2-D array of numbers is a ``BadInput``.

    >>> top_k(np.array([[0.5, 0.9], [0.9, 0.1]]), 2)
    [(0, 1, 0.9), (1, 0, 0.9)]
    >>> top_k(np.array([[0.5, 0.9]]), 0)
    []
    >>> top_k(np.array([0.5, 0.9]), 1)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: top_k ranks a [n_layers, n_heads] array of scores; got one of shape (2,)
      hint: pass one score's 2-D array, e.g. result.scores['induction']
    """
    if whole_number("k", k) < 0:
        raise BadInput(f"k={k!r}: the number of heads must be a whole number >= 0", hint="e.g. k=5")
    a = _as_scores(scores)
    if k == 0:
        return []
    n_heads = a.shape[1]
    order = np.argsort(-np.nan_to_num(a, nan=-np.inf), axis=None, kind="stable")
    skip = set(exclude)
    out: list[tuple[int, int, float]] = []
    for i in order:
        lh = (int(i // n_heads), int(i % n_heads))
        if lh in skip:
            continue
        out.append((*lh, float(a.flat[i])))
        if len(out) == k:
            break
    return out
