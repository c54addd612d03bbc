"""One computation at a time, a bounded queue, and newer requests superseding older ones.

The model runs on a CPU (or one GPU) that two computations would only share badly, and a
torch forward pass is not something to run twice at once on the same hooks. So every request
that computes passes through one :class:`Gate`:

- at most ``max_waiting`` requests may be queued or running; one more is refused at once with
  :class:`Busy` (the server answers 503 with a ``Retry-After``), never queued without bound;
- requests run one at a time in FIFO order (an ``asyncio.Lock`` is fair), each in a worker
  thread so the server keeps answering (static files, refusals) while the model runs;
- a request carries its page's id and a sequence number per *channel* (the text, head or
  position view): when a newer request of the same page and channel has arrived, an older
  one still waiting is dropped with :class:`Superseded` before it computes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class Busy(Exception):
    """The queue is full: the request is refused (503)."""


class Superseded(Exception):
    """A newer request from the same page and channel arrived while this one waited."""


class Gate:
    """Run blocking functions one at a time with at most ``max_waiting`` admitted (waiting or running).

    >>> import asyncio
    >>> gate = Gate(max_waiting=2)
    >>> asyncio.run(gate.run(lambda: 6 * 7))
    42
    """

    def __init__(self, max_waiting: int = 8, pages: int = 1024):
        if max_waiting < 1:
            raise ValueError("max_waiting must be at least 1")
        self.max_waiting = max_waiting
        self.admitted = 0
        self.served = 0
        self.refused = 0
        self.superseded = 0
        self._lock: asyncio.Lock | None = None
        self._latest: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._pages = pages

    def _note(self, key: tuple[str, str], seq: int) -> None:
        if seq > self._latest.get(key, -1):
            self._latest[key] = seq
        self._latest.move_to_end(key)
        while len(self._latest) > self._pages:  # bounded: old pages are forgotten
            self._latest.popitem(last=False)

    async def run(self, fn: Callable[[], T], page: str | None = None, channel: str = "", seq: int | None = None) -> T:
        """``fn()`` in a worker thread once every earlier admitted request is done.

        Raises :class:`Busy` at once when ``max_waiting`` requests are admitted, and
        :class:`Superseded` (without running ``fn``) when, by its turn, the same ``page`` and
        ``channel`` sent a higher ``seq``.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self.admitted >= self.max_waiting:
            self.refused += 1
            raise Busy(f"{self.admitted} requests are already queued or running")
        key = (page, channel) if page is not None and seq is not None else None
        if key is not None:
            self._note(key, seq)  # type: ignore[arg-type]
        self.admitted += 1
        try:
            async with self._lock:
                if key is not None and self._latest.get(key, -1) > seq:  # type: ignore[operator]
                    self.superseded += 1
                    raise Superseded(f"request {seq} of this page was superseded by a newer one")
                result = await anyio.to_thread.run_sync(fn)
                self.served += 1
                return result
        finally:
            self.admitted -= 1
