"""What every result shares: strict JSON, the one rounding rule, and the way to its view.

A result is plain data: numbers and metadata, with ``to_dict`` (JSON-ready, every float through
:func:`rounded`), ``to_frame`` (a tidy :mod:`pandas` frame) and a strict ``to_json`` (NaN and
infinities become null). It never draws itself: its notebook view (``_repr_html_``) and its
pictures (``plot*``) ask :func:`headscope.render.lookup.view_of` for the view registered for its
type. That lookup, imported lazily inside :meth:`Result._repr_html_` and :meth:`Result._figure`,
is the one import from this layer upwards (docs/architecture.md).

A result that reads back (to replot or query a saved run in a notebook) has ``from_dict``, the
inverse of its ``to_dict``; :meth:`Result.from_json` takes a JSON text, a path to the file, or
the results folder holding :attr:`Result.json_file`, and every way in which it is not that
result's JSON is a :class:`~headscope.errors.BadInput` saying what it is instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from ..errors import BadInput
from ..jsonsafe import dumps, strict
from ..settings import whole_number

_V = TypeVar("_V")
R = TypeVar("R", bound="Result")


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
    """Base of every result: ``to_json`` from ``to_dict``; notebook view and figures through the view lookup;
    ``from_json`` back from a JSON text, file or results folder for a result with a ``from_dict``."""

    #: The file a command writes this result to in its results folder (``scores.json``), which
    #: :meth:`from_json` reads from the folder; None where the result has no file of its own.
    json_file: ClassVar[str | None] = None
    #: What the result is, for the read-back errors: "not the JSON of an induction scan".
    json_what: ClassVar[str] = "this result"
    #: Where its JSON comes from, the hint of the read-back errors.
    json_hint: ClassVar[str] = "pass the result's to_json() output"
    #: Keys every JSON of this result has: another result's JSON given to :meth:`from_dict` is named.
    json_keys: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_frame(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)  # strict JSON: NaN/Infinity -> null

    def __eq__(self, other: object) -> bool:
        """Same type and the same :meth:`to_dict` as strict JSON (floats to its 6 decimals; NaN equals NaN, as
        both are null in the file). A dataclass's own ``==`` compares the arrays elementwise and raises
        "truth value of an array is ambiguous"."""
        if type(other) is not type(self):
            return NotImplemented
        return strict(self.to_dict()) == strict(other.to_dict())  # type: ignore[attr-defined]

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

    # --- read back ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[R], d: dict) -> R:
        """The result back from its :meth:`to_dict`; a result whose JSON does not hold it all says so here."""
        raise BadInput(f"{cls.__name__} does not read back from JSON", hint="run the analysis again")

    @classmethod
    def from_json(cls: type[R], source) -> R:
        """:meth:`from_dict` of a JSON text, a path to the JSON file, or the results folder holding
        :attr:`json_file` (what the command wrote), to replot or query a saved run in a notebook.

        A file that cannot be read, text that is not JSON, and another result's JSON are each a
        :class:`~headscope.errors.BadInput` saying so (and which result's JSON it is), as are an empty
        string and JSON that is not an object (``"[1, 2]"``).
        """
        text = source
        if isinstance(source, str) and not source.strip():
            raise BadInput(f"{cls.__name__}.from_json got an empty string", hint=cls.json_hint)
        if not (isinstance(source, str) and (source.lstrip().startswith(("{", "[")) or _bare_json(source))):
            text = _read_source(cls, source)
        try:
            d = json.loads(text)
        except ValueError as e:
            raise BadInput(f"not JSON: {e}", hint=cls.json_hint) from None
        return cls.from_dict(d)

    @classmethod
    @contextmanager
    def _reading(cls, d) -> Iterator[None]:
        """Around the body of a ``from_dict``: ``d`` that is not this result's JSON (another result's JSON,
        not an object, missing or malformed keys) becomes a :class:`~headscope.errors.BadInput`."""
        if not isinstance(d, dict):
            raise BadInput(
                f"not the JSON of {cls.json_what} (not an object): it is JSON, but {_json_kind(d)}", hint=cls.json_hint
            )
        other = None if cls.json_keys <= d.keys() else _result_of(d)
        if other is not None and other is not cls:
            where = f" ({other.json_file})" if other.json_file else ""
            raise BadInput(
                f"this is the JSON of {other.json_what}{where}, not of {cls.json_what}", hint=_read_as(other, d)
            )
        try:
            yield
        except BadInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise BadInput(f"not the JSON of {cls.json_what} ({type(e).__name__}: {e})", hint=cls.json_hint) from None

    def _repr_html_(self) -> str:
        """The notebook view: whatever the view registered for this type shows (see render/lookup.py)."""
        from ..render.lookup import view_of

        return view_of(self).notebook_html(self)

    def _figure(self, name: str, *args, **kwargs):
        """The figure ``name`` of this result's view (a matplotlib figure), for the ``plot*`` methods."""
        from ..render.lookup import view_of

        return view_of(self).figure(self, name, *args, **kwargs)


def _subclasses(cls: type[Result]) -> list[type[Result]]:
    """Every result type defined (loaded) below ``cls``."""
    out: list[type[Result]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _result_of(d: dict) -> type[Result] | None:
    """The result type whose JSON ``d`` is, by its :attr:`Result.json_keys` (None when none matches)."""
    return next((c for c in _subclasses(Result) if c.json_keys and c.json_keys <= d.keys()), None)


def _read_as(other: type[Result], d: dict) -> str:
    """The hint for ``d``, the JSON of ``other`` given to another result: read it with ``other.from_json`` where
    that reads it back; where it does not (an edge circuit, a QK or logit analysis keep too little to), why not and
    what to read instead, as ``other`` itself says it, so the hint never points to a reader that refuses."""
    try:
        other.from_dict(d)
    except BadInput as e:
        return f"{e.message}; {e.hint}" if e.hint else e.message
    return f"read it with {other.__name__}.from_json"


def _bare_json(source: str) -> bool:
    """``source`` is JSON text such as ``3`` or ``null`` (and names no file): read as JSON, not as a path."""
    try:
        json.loads(source)
    except ValueError:
        return False
    return not Path(source).exists()


def _json_kind(d) -> str:
    """What a parsed JSON value is, in words: ``a list``, ``a number``..."""
    kinds = ((list, "a list"), (str, "a string"), (bool, "a boolean"), ((int, float), "a number"))
    return "null" if d is None else next((w for t, w in kinds if isinstance(d, t)), type(d).__name__)


def _read_source(cls: type[Result], source) -> str:
    """The text of the JSON file ``source`` names (a file, or a results folder holding ``cls.json_file``)."""
    try:
        path = Path(source)
    except TypeError:
        raise BadInput(
            f"{cls.__name__}.from_json takes a JSON text, a file or a results folder, not {type(source).__name__}",
            hint=cls.json_hint,
        ) from None
    if path.is_dir():
        if cls.json_file is None:
            raise BadInput(f"{cls.__name__} has no file of its own in a results folder", hint=cls.json_hint)
        if not (path / cls.json_file).is_file():
            found = [c for c in _subclasses(Result) if c.json_file and (path / c.json_file).is_file()]
            said = f"; it holds {found[0].json_file}: read it with {found[0].__name__}.from_json" if found else ""
            raise BadInput(f"{path} holds no {cls.json_file}{said}", hint=cls.json_hint)
        path = path / cls.json_file
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}", hint=cls.json_hint) from None
    except UnicodeDecodeError as e:
        raise BadInput(f"not JSON: {path} is not UTF-8 text ({e.reason})", hint=cls.json_hint) from None


def how_many(k, name: str = "k") -> int:
    """A count a result's accessor takes (``top(k)``): a whole number >= 0, else :class:`BadInput`
    (pandas' ``head(-1)`` would quietly drop the last row instead)."""
    if whole_number(name, k) < 0:
        raise BadInput(f"{name}={k!r}: must be 0 or more", hint=f"e.g. {name}=5")
    return int(k)


def one_of(value: _V, options: tuple[_V, ...], name: str) -> _V:
    """``value`` if it is one of ``options``, else :class:`BadInput` listing them."""
    if value not in options:
        raise BadInput(f"unknown {name} {value!r}", hint=f"use one of: {', '.join(map(repr, options))}")
    return value


def in_range(index, n: int, what: str) -> int:
    """An index into ``n`` things (negative counts from the end), else :class:`BadInput` saying how many there are."""
    i = whole_number(what, index)
    if not -n <= i < n:
        raise BadInput(f"{what} {i} does not exist: this result has {n} (0..{n - 1})", hint=f"use 0 to {n - 1}")
    return i


def float_of(v) -> float:
    """A float read back from JSON: null (how a NaN is written) is NaN again."""
    return float("nan") if v is None else float(v)


def array_of(v) -> np.ndarray:
    """A float array read back from JSON (nested lists; null is NaN)."""
    return np.array(v, dtype=float)


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
