"""The views of ``headscope circuit``: activation patching (heatmap and top components), path patching
(chart and table), and the analysis that holds them (its task, then each part's sections in order).

Draws :class:`~headscope.results.patching_results.ActivationPatching`,
:class:`~headscope.results.patching_results.PathPatching` and
:class:`~headscope.results.patching_results.CircuitAnalysis`; a result added by a later step
(``CircuitAnalysis.extra``) is drawn by its own view.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ...results.base import GapChecked
from ...results.patching_results import DEFINITIONS, ActivationPatching, CircuitAnalysis, PathPatching
from ...stats import signed, with_interval
from ..circuit_figures import (
    is_direct,
    patching_by_position,
    patching_heatmap,
    path_chart,
    receiver_label,
    sender_map,
    shown_paths,
)
from ..html import esc, kv_html, table_html
from ..lookup import register, view_of
from ..view_base import Section, View, plotted

#: What a path patching of one example says in place of its intervals (the explorer's page and its saved page).
ONE_EXAMPLE = "one example: the interval is a single value"


def _iv(lo: float, hi: float) -> str:
    return f"[{signed(lo)}, {signed(hi)}]"


def has_intervals(result) -> bool:
    """Whether ``result``'s 95% intervals were measured: a bootstrap over the examples needs two or more
    (one example's "interval" is its own value at both ends, so none is shown)."""
    return result.n_examples > 1


def gap_text(gap: dict) -> str:
    """``+0.012 [-0.004, +0.030]``: the clean - corrupted gap and its 95% interval (empty when not measured)."""
    return with_interval(gap["mean"], gap["low"], gap["high"]) if gap else ""


def gap_warning_html(result) -> str:
    """A prominent paragraph when the normalised numbers are not meaningful (else nothing)."""
    if result.normalised_meaningful:
        return ""
    return f'<p class="note"><strong>Not meaningful as shares of the gap:</strong> {esc(result.gap["problem"])}.</p>'


def _paths_figure(res: PathPatching, **kw):
    """The sender map for one receiver with many senders (or one example: the map draws no interval), else the
    chart, whose whiskers and their label are taken off when no interval was measured."""
    one_receiver = len(set(res.receivers)) == 1
    if one_receiver and (len(res.senders) > 20 or not has_intervals(res)):
        return sender_map(res, **kw)
    fig = path_chart(res, **kw)
    if not has_intervals(res):
        from matplotlib.container import ErrorbarContainer

        for ax in fig.axes:
            for bars in [c for c in ax.containers if isinstance(c, ErrorbarContainer)]:
                bars.remove()
            ax.set_xlabel(ax.get_xlabel().replace(" (95% interval)", ""))
    return fig


def _whole(result: ActivationPatching) -> str:
    """What a per-position result's tables show, in its titles: the whole-sequence patch ("" without per position)."""
    return ", whole sequence patched" if result.per_position else ""


def _by_position_html(result: ActivationPatching) -> str:
    """With per position: the map of each component's best position, and where every position's number is."""
    if not result.per_position:
        return ""
    return (
        "<p>The map and the table above patch the whole sequence. Patched at one position at a time "
        f"({len(result.positions)} positions), each component at the position where its effect is largest:</p>"
        + plotted(patching_by_position, result)
        + '<p class="note">Every position of every component: <code>position_frame()</code>; '
        "<code>headscope circuit</code> writes it to <code>activation_patching_by_position.csv</code>.</p>"
    )


@register(ActivationPatching)
class ActivationPatchingView(View):
    figures = {"heatmap": patching_heatmap, "by_position": patching_by_position}

    def title(self, result) -> str:
        return f"Activation patching ({result.direction})"

    def sections(self, result) -> list[Section]:
        if result.normalised_meaningful or not len(result.change):
            table = table_html(
                ["component", "normalised (1 = clean)", "95% interval"],
                [[lab, round(v, 3), _iv(lo, hi)] for lab, v, lo, hi in result.top(10)],
            )
        else:
            table = table_html(
                ["component", f"change in {result.metric}", "95% interval"],
                [[lab, round(v, 4), _iv(lo, hi)] for lab, v, lo, hi in result.top_change(10)],
            )
        body = (
            gap_warning_html(result)
            + f"<p>{esc(DEFINITIONS[result.direction])}. Clean metric {result.clean_metric:.3f}, corrupted "
            f"{result.corrupt_metric:.3f} ({esc(result.metric)}, {result.n_examples} examples).</p>"
            + plotted(patching_heatmap, result)
            + table
            + _by_position_html(result)
        )
        return [Section(f"patching-{result.direction}", f"Activation patching ({result.direction})", body)]

    def legend(self, result) -> dict[str, str]:
        return {"normalised": DEFINITIONS["normalised"], result.direction: DEFINITIONS[result.direction]}

    def notebook_figure(self, result):
        return patching_heatmap(result)

    def terminal(self, result, console) -> None:
        if not result.normalised_meaningful and len(result.change):  # the gap is no gap: say what was measured
            t = Table(title=f"Activation patching ({result.direction}{_whole(result)}), top components: change in "
                      f"{result.metric} (not normalised: see the note)")  # fmt: skip
            for c in ("component", f"change in {result.metric}", "95% interval"):
                t.add_column(c, justify="left" if c == "component" else "right")
            for lab, v, lo, hi in result.top_change(10):
                t.add_row(lab, signed(v, 4), _iv(lo, hi))
            console.print(t)
            return
        noise = result.direction == "noise"
        t = Table(
            title=f"Activation patching ({result.direction}{_whole(result)}), top components by "
            + (
                "the share of the gap lost (normalised: 1 = clean, 0 = corrupted; lower = more lost)"
                if noise
                else "the share of the gap restored (normalised: 0 = corrupted, 1 = clean)"
            )
        )
        cols = ["component", "normalised", "95% interval"] + (["gap lost (1 - normalised)"] if noise else [])
        for c in cols:
            t.add_column(c, justify="left" if c == "component" else "right")
        for lab, v, lo, hi in result.top(10):
            t.add_row(lab, signed(v), _iv(lo, hi), *([signed(1 - v)] if noise else []))
        console.print(t)


def _direct_note(result: PathPatching, k: int) -> str:
    """What a table of a direct path and paths via later heads holds (empty for a table of one kind of path)."""
    direct = [s for s, r in zip(result.senders, result.receivers) if is_direct(result, r)]
    if not direct:
        return ""
    via = len(result.senders) - len(direct)
    return (
        f'<p class="note">First row: {esc(", ".join(direct))}\'s direct path to the logits (no head in between), '
        f"shown whatever its size; then the {min(k, via)} of the {via} paths via a later head with the largest "
        "effect.</p>"
    )


GERUND = {"noise": "noising", "denoise": "denoising"}


def _setup_html(result: PathPatching) -> str:
    """What was patched and what moved, so a path-patching section read on its own (the explorer's
    saved page) says it: the metric, the examples, and the metric on the clean and corrupted runs."""
    unit = "logits" if result.metric == "logit_diff" else "nats"
    runs = "example" if result.n_examples == 1 else "examples"
    return (
        f'<p class="note">{esc(GERUND.get(result.direction, result.direction))} {result.n_examples} {runs} of the {esc(result.task)} task; '
        f"{esc(result.metric)}: clean {result.clean_metric:+.3f}, corrupted {result.corrupt_metric:+.3f} ({unit})</p>"
    )


@register(PathPatching)
class PathPatchingView(View):
    figures = {"paths": _paths_figure, "chart": path_chart, "senders": sender_map}

    def title(self, result) -> str:
        return f"Path patching: {result.receiver}"

    def table_rows(self, result, k: int = 12):
        """The table's columns and its ``k`` top rows (after the direct path to the logits, where the result also has
        paths via later heads: :func:`shown_paths`): the interval column only where intervals were measured."""
        raw = not result.normalised_meaningful and len(result.change)
        what = f"change in {result.metric}" if raw else "share of the gap (effect)"
        top = [(s, receiver_label(result, r), e, lo, hi) for s, r, e, lo, hi in shown_paths(result, k)]
        if not has_intervals(result):
            return ["sender", "receiver", what], [[s, r, round(e, 4 if raw else 3)] for s, r, e, _, _ in top]
        return ["sender", "receiver", what, "95% interval"], [
            [s, r, round(e, 4 if raw else 3), _iv(lo, hi)] for s, r, e, lo, hi in top
        ]

    def sections(self, result) -> list[Section]:
        said = list(dict.fromkeys(result.notes + ([] if has_intervals(result) else [ONE_EXAMPLE])))
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in said)
        table = table_html(*self.table_rows(result))
        body = (
            gap_warning_html(result)
            + _setup_html(result)
            + notes
            + plotted(_paths_figure, result)
            + _direct_note(result, 12)
            + table
        )
        anchor = "paths-" + "".join(c if c.isalnum() else "-" for c in result.receiver.lower())[:40]
        return [
            Section(
                anchor, f"Paths {result.receiver}" if "->" in result.receiver else f"Paths into {result.receiver}", body
            )
        ]

    def legend(self, result) -> dict[str, str]:
        return {"path effect": DEFINITIONS["path"]}

    def notebook_figure(self, result):
        return _paths_figure(result)

    def terminal(self, result, console) -> None:
        raw = not result.normalised_meaningful and len(result.change)
        what = f"change in {result.metric}" if raw else "effect"
        t = Table(
            title=f"Path patching: {escape(result.receiver)} (top paths"
            + (f"; {what}, not normalised: see the note)" if raw else ")")
        )
        measured = has_intervals(result)
        for c in ("sender", "receiver", what, "95% interval")[: 4 if measured else 3]:
            t.add_column(c, justify="left" if c in ("sender", "receiver") else "right")
        for s, r, e, lo, hi in shown_paths(result, 8):
            t.add_row(
                s, escape(receiver_label(result, r)), signed(e, 4 if raw else 3), *([_iv(lo, hi)] if measured else [])
            )
        console.print(t)
        for n in [n for n in result.notes if "grouped-query" in n] + ([] if measured else [ONE_EXAMPLE]):
            console.print(f"[dim]{escape(n)}[/]", highlight=False)


class _Gap(GapChecked):
    """The analysis's gap dict, read like a result's (for :func:`gap_warning_html`)."""

    def __init__(self, gap: dict):
        self.gap = gap


@register(CircuitAnalysis)
class CircuitAnalysisView(View):
    def _parts(self, result):
        return [*result.activation, *result.paths, *result.extra]

    def title(self, result) -> str:
        return "Circuit (patching)"

    def subtitle(self, result) -> str:
        return f"circuit on the {result.task.get('name')} task"

    def sections(self, result) -> list[Section]:
        t = result.task
        intro = Section(
            "circuit",
            "Circuit: the task",
            kv_html(
                {
                    "task": t.get("name"),
                    "examples": t.get("n_examples"),
                    "tokens": t.get("n_tokens"),
                    "corruption": t.get("corruption"),
                    "metric": t.get("metric"),
                    "clean metric": round(t.get("clean_metric", float("nan")), 3),
                    "corrupted metric": round(t.get("corrupt_metric", float("nan")), 3),
                    "clean - corrupted gap (95% interval)": gap_text(t.get("gap") or {}),
                }
            )
            + gap_warning_html(_Gap(t.get("gap") or {})),
        )
        return [intro] + [s for part in self._parts(result) for s in view_of(part).sections(part)]

    def legend(self, result) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self._parts(result):
            out.update(view_of(part).legend(part))
        return out

    def terminal(self, result, console) -> None:
        t = result.task
        gap = t.get("gap") or {}
        console.print(
            f"{escape(str(t.get('name')))} task, {t.get('n_examples')} examples x {t.get('n_tokens')} tokens; "
            f"{t.get('metric')} clean {t.get('clean_metric', 0):.3f}, corrupted {t.get('corrupt_metric', 0):.3f}"
            + (f"; gap {gap_text(gap)}" if gap else "")
            + (
                "" if gap.get("meaningful", True) else " [bold yellow](not a gap: normalised numbers not meaningful)[/]"
            ),
            highlight=False,
        )
        for part in self._parts(result):
            view_of(part).terminal(part, console)
