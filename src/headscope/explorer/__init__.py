"""`headscope serve`: a local page where a user types a text, clicks a head and sees what its attention score is made of and what it writes.

:mod:`.state` runs a text once (fused pass, everything the views read kept); :mod:`.engine`
answers every view from that cache with the project's own analyses and result types;
:mod:`.gate` runs one computation at a time behind a bounded queue; :mod:`.app` is the
Starlette application (API, static page, safety headers) and :func:`serve` starts it.
"""

from .engine import Explorer

__all__ = ["Explorer"]
