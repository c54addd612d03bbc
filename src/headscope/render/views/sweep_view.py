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

#: The terminal table's columns: (header, the row's key it shows, how a finished entry's value is written); the
#: legend explains exactly the columns printed here, with the definitions sweep.json holds.
TABLE = (
    ("top head", "top_head", "{}"),
    ("induction (top)", "induction_top", "{:.3f}"),
    ("induction (sum)", "induction_sum", "{:.2f}"),
    ("loss 1st", "loss_first_repeat", "{:.2f}"),
    ("loss later", "loss_later_repeats", "{:.2f}"),
)


def table_legend() -> dict[str, str]:
    """What the terminal table's columns mean (one entry per printed column that needs one), then the score."""
    return {
        **{header: SUMMARY_DEFINITIONS[key] for header, key, _ in TABLE},
        "induction": SUMMARY_DEFINITIONS["induction"],
    }


def _print_table(con, res) -> None:
    t = Table(title="Sweep")
    t.add_column("entry")
    t.add_column("step", justify="right")
    for header, _, form in TABLE:
        t.add_column(header, justify="left" if form == "{}" else "right")
    t.add_column("status")
    for r in res.rows:
        step = "-" if r.get("step") is None else str(r["step"])
        if r["status"] == "done":
            cells = [escape(form.format(r[key])) for _, key, form in TABLE]
            t.add_row(escape(r["label"]), step, *cells, "done")
        else:
            t.add_row(escape(r["label"]), step, *["-"] * len(TABLE), f"[red]{escape(r['status'])}[/]")
    con.print(t)
    con.print("[dim]Legend:[/]")
    for name, text in table_legend().items():
        con.print(f"[dim]  {escape(name)}: {escape(text)}[/]", highlight=False)


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
