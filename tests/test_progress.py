"""The one progress reporter: a new stage on the shared bar gets its own count and clock."""

from __future__ import annotations

import io

from rich.console import Console

from headscope.progress import Progress


def test_a_new_stage_restarts_the_bar_and_its_clock():
    p = Progress(True, console=Console(file=io.StringIO(), force_terminal=True))
    with p.running():
        p("clean pass", 0, 2)
        p("clean pass", 2, 2)
        (task,) = p._bar.tasks
        assert task.finished and task.description == "clean pass"
        p("L1H2 ablated", 0, 3)
        (task,) = p._bar.tasks  # the same bar, reset: not finished, counting from 0, a fresh clock
        assert (task.description, task.completed, task.total) == ("L1H2 ablated", 0, 3)
        assert not task.finished and task.finished_time is None
        p("L1H2 ablated", 1, 3)
        assert p._bar.tasks[0].completed == 1
