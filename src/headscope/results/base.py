"""What every result shares: strict JSON, the one rounding rule, and the way to its view.

A result is plain data: numbers and metadata, with ``to_dict`` (JSON-ready, every float through
:func:`rounded`), ``to_frame`` (a tidy :mod:`pandas` frame) and a strict ``to_json`` (NaN and
infinities become null). It never draws itself: its notebook view (``_repr_html_``) and its
pictures (``plot*``) ask :func:`headscope.render.lookup.view_of` for the view registered for its
type. That lookup, imported lazily inside :meth:`Result._repr_html_` and :meth:`Result._figure`,
is the one import from this layer upwards (docs/architecture.md).
"""

from __future__ import annotations

import numpy as np

from ..jsonsafe import dumps


def rounded(x, nd: int = 6):
    """The one rounding rule: floats, arrays, lists and tuples to ``nd`` decimals for JSON; NaN becomes None.

    Every value is rounded as the float64 it converts to (``round(float(x), nd)``: correctly
    rounded), so a float32 array gives the same digits as its float64 copy.

    >>> rounded([0.1234567, float("nan"), np.float32(2.5)], 3)
    [0.123, None, 2.5]
    >>> rounded(np.array([[1.23456789, 2.0]], dtype=np.float32), 4)
    [[1.2346, 2.0]]
    """
    if isinstance(x, np.ndarray):
        return [rounded(v, nd) for v in x.tolist()] if x.ndim else rounded(x.item(), nd)
    if isinstance(x, (list, tuple)):
        return [rounded(v, nd) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else round(float(x), nd)
    return x


class Result:
    """Base of every result: ``to_json`` from ``to_dict``; notebook view and figures through the view lookup."""

    def to_dict(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_frame(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)  # strict JSON: NaN/Infinity -> null

    def __eq__(self, other: object) -> bool:
        """Same type and the same :meth:`to_dict` (floats to its 6 decimals). A dataclass's own ``==``
        compares the arrays elementwise and raises "truth value of an array is ambiguous"."""
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable data, like a dataclass with eq

    def __repr__(self) -> str:
        """One short line: scalars as they are, arrays by shape, lists and dicts by length, so
        ``print(result)`` does not pour out every array (``to_frame()`` and ``to_dict()`` have the numbers).

        >>> from dataclasses import dataclass
        >>> @dataclass(repr=False, eq=False)
        ... class Demo(Result):
        ...     model: str
        ...     scores: dict
        ...     loss: np.ndarray
        >>> Demo("tiny", {"induction": np.zeros((2, 4))}, np.zeros(9))
        Demo(model='tiny', scores={induction: array 2x4}, loss=array 9)
        """
        import dataclasses

        names: list[str] = [f.name for f in dataclasses.fields(self)] if dataclasses.is_dataclass(self) else []  # type: ignore[arg-type]
        return f"{type(self).__name__}({', '.join(f'{n}={_brief(getattr(self, n))}' for n in names)})"

    def _repr_html_(self) -> str:
        """The notebook view: whatever the view registered for this type shows (see render/lookup.py)."""
        from ..render.lookup import view_of

        return view_of(self).notebook_html(self)

    def _figure(self, name: str, *args, **kwargs):
        """The figure ``name`` of this result's view (a matplotlib figure), for the ``plot*`` methods."""
        from ..render.lookup import view_of

        return view_of(self).figure(self, name, *args, **kwargs)


def _brief(v, depth: int = 0) -> str:
    """A field's value in a few characters, for :meth:`Result.__repr__`."""
    if isinstance(v, np.ndarray):
        return f"array {'x'.join(map(str, v.shape))}" if v.ndim else repr(v.item())
    if isinstance(v, dict):
        if depth or len(v) > 6:
            return f"{{{len(v)} keys}}"
        return "{" + ", ".join(f"{k}: {_brief(x, 1)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return f"[{len(v)} items]" if len(v) != 1 else "[1 item]"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class GapChecked:
    """Mixin of the patching results: ``gap`` is the clean - corrupted gap their shares divide by
    (:func:`headscope.circuits.tasks.clean_corrupt_gap`; empty when not measured)."""

    gap: dict

    @property
    def normalised_meaningful(self) -> bool:
        """False when the clean - corrupted gap is not told apart from 0 or has the wrong sign."""
        return bool(self.gap.get("meaningful", True))
