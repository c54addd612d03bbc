"""The view of a sweep: the table of entries with their legend, and induction against size or step.

Draws a :class:`~headscope.results.sweep_result.SweepResult`.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ...results.sweep_result import SUMMARY_DEFINITIONS, SweepResult
from ..lookup import register
from ..sweep_figures import sweep_figure
from ..view_base import View


def _print_table(con, res) -> None:
    t = Table(title="Sweep")
    for col in ("entry", "step", "top head", "induction (top)", "induction (sum)", "loss 1st", "loss later", "status"):
        t.add_column(col, justify="left" if col in ("entry", "top head", "status") else "right")
    for r in res.rows:
        step = "-" if r.get("step") is None else str(r["step"])
        if r["status"] == "done":
            t.add_row(
                escape(r["label"]),
                step,
                r["top_head"],
                f"{r['induction_top']:.3f}",
                f"{r['induction_sum']:.2f}",
                f"{r['loss_first_repeat']:.2f}",
                f"{r['loss_later_repeats']:.2f}",
                "done",
            )
        else:
            t.add_row(escape(r["label"]), step, "-", "-", "-", "-", "-", f"[red]{r['status']}[/]")
    con.print(t)
    con.print("[dim]Legend:[/]")
    for name, text in SUMMARY_DEFINITIONS.items():
        con.print(f"[dim]  {name}: {escape(text)}[/]", highlight=False)


@register(SweepResult)
class SweepView(View):
    figures = {"sweep_figure": lambda result: sweep_figure(result.to_frame())}

    def title(self, result) -> str:
        return "Sweep"

    def notebook_figure(self, result):
        return sweep_figure(result.to_frame()) if any(r.get("status") == "done" for r in result.rows) else None

    def legend(self, result) -> dict[str, str]:
        return dict(SUMMARY_DEFINITIONS)

    def terminal(self, result, console) -> None:
        _print_table(console, result)
