"""Which view draws a result: views register for a result type; :func:`view_of` walks the type's MRO.

The views of headscope's own results are the modules of :mod:`headscope.render.views`, loaded
(all of them, once) on the first lookup; a view elsewhere registers when its module is
imported (or pass its package to :func:`load_views`). A result type without a view of its own
gets its nearest base class's view, in the end the plain :class:`~headscope.render.view_base.View`
(a table of ``to_frame()``).

>>> from headscope.results import InductionResult
>>> type(view_of_type(InductionResult)).__name__
'InductionView'
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from .view_base import View

_VIEWS: dict[type, View] = {}
_LOADED: set[str] = set()


def register(result_type: type) -> Callable[[type[View]], type[View]]:
    """Class decorator: the decorated :class:`View` draws ``result_type`` (and its subclasses without a view)."""

    def deco(view_cls: type[View]) -> type[View]:
        _VIEWS[result_type] = view_cls()
        return view_cls

    return deco


def load_views(package: str = "headscope.render.views") -> None:
    """Import every module of ``package`` (once), so that their views register."""
    if package in _LOADED:
        return
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
        importlib.import_module(info.name)
    _LOADED.add(package)


def view_of_type(result_type: type) -> View:
    """The view registered for ``result_type`` or its nearest base class; the plain :class:`View` if none."""
    load_views()
    for cls in result_type.__mro__:
        if cls in _VIEWS:
            return _VIEWS[cls]
    return View()


def view_of(result) -> View:
    """The view that draws ``result`` (see :func:`view_of_type`)."""
    return view_of_type(type(result))
