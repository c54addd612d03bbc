"""The one progress reporter of headscope: a rich bar on stderr, plain lines, or nothing.

Every long step reports through a :class:`Progress`: the scan advances named tasks
(``task``/``advance``), the analyses call it as ``progress(stage, done, total)``, and the
command line makes one and hands it down. With the bar off it prints one line per new stage
when ``lines`` is set (a log, or a pipe), else nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


class Progress:
    """Report progress of named stages: a bar on a terminal, one line per stage, or nothing.

    >>> said = []
    >>> p = Progress(False, lines=True, log=said.append)
    >>> with p.running():
    ...     p("loading", 0, 1); p("loading", 1, 1); p("scoring", 0, 3)
    >>> said
    ['loading', 'scoring']
    """

    def __init__(
        self,
        enabled: bool | None,
        *,
        console: Any = None,
        lines: bool = False,
        transient: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        """``enabled``: the bar (None: when stderr is a terminal); ``lines``: else one line per new stage,
        through ``log(stage)`` when given, else ``... stage`` on ``console`` (stderr by default)."""
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.console, self.lines, self.transient, self.log = console, lines, transient, log
        self._bar: Any = None
        self._tasks: dict[str, int] = {}
        self._shown: dict[str, str] = {}  # the description each bar shows
        self._seen: set[str] = set()

    @contextlib.contextmanager
    def running(self) -> Iterator[Progress]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        with RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console or Console(stderr=True),
            transient=self.transient,
        ) as bar:
            self._bar = bar
            try:
                yield self
            finally:
                self._bar = None

    def task(self, name: str, total: int) -> None:
        """Start (or restart) a bar named ``name`` of ``total`` steps."""
        if self._bar is not None:
            self._tasks[name] = self._bar.add_task(name, total=total)

    def advance(self, name: str, n: int = 1) -> None:
        if self._bar is not None and name in self._tasks:
            self._bar.advance(self._tasks[name], n)

    def update(self, name: str, done: int, total: int | None = None, description: str | None = None) -> None:
        """Set task ``name`` to ``done`` of ``total`` steps (created when new), showing ``description``."""
        if self._bar is None:
            return
        if name not in self._tasks:
            self.task(name, max(total or 1, 1))
        description = name if description is None else description
        kw: dict[str, Any] = {"completed": done, "description": description}
        if total is not None:
            kw["total"] = max(total, 1)
        if self._shown.get(name, description) != description:  # a new stage on this bar: its own clock
            self._bar.reset(self._tasks[name], **kw)
        else:
            self._bar.update(self._tasks[name], **kw)
        self._shown[name] = description

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        """``progress(stage, done, total)``: one bar for the running stage, or a line when a stage starts."""
        if self._bar is not None:
            self.update("stage", done, total, description=stage)
        elif self.lines and stage not in self._seen:
            self._seen.add(stage)
            self.log(stage) if self.log is not None else self.say(f"... {stage}")

    def say(self, text: str) -> None:
        """One plain line on the console (stderr by default)."""
        if self.console is not None:
            self.console.print(f"[dim]{text}[/]", highlight=False)
        else:
            print(text, file=sys.stderr)
