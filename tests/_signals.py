"""Children that take Ctrl-C as a terminal would give it, whoever started the tests.

A shell without job control starts background commands (``pytest ... &``, ``nohup``) with SIGINT
ignored, and an ignored signal stays ignored across ``exec``: Python then never installs its
KeyboardInterrupt handler, and a test that interrupts a child would see it run to the end.
"""

from __future__ import annotations

import signal


def sigint_as_default() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: SIGINT back to its default before the child starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
