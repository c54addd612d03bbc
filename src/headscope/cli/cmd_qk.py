"""`headscope qk`: what chosen heads' queries look for, on your text and in the weights."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import BadInput
from ..head_labels import head_label, is_head_spec
from ..models import resolve_dtype
from ..pipeline.files import qk_files
from ..pipeline.outputs import ResultDir
from ..qk.analysis import DEFAULT_QK_MEMORY_GB, analyze_qk
from ..render.page import Report
from . import app
from ._common import (
    DEFAULT,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    FileOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    QKMemoryOpt,
    ReportOpt,
    TextOpt,
    at_least,
    check_device,
    consoles,
    default_out,
    handle_errors,
    load,
    progress_enabled,
    read_texts,
)


@app.command("qk")
@handle_errors
def qk_cmd(
    model: ModelOpt = DEFAULT,
    text: TextOpt = None,
    file: FileOpt = None,
    head: Annotated[
        Optional[list[str]],
        typer.Option(
            "--head",
            help="Head to analyse, L5H1 or 5.1 (repeatable, or "
            "comma-separated). Default: the top induction and previous-token heads of a quick scan.",
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top", help="Without --head: how many induction heads and how many previous-token heads to pick."
        ),
    ] = 3,
    tokens: Annotated[
        Optional[list[str]],
        typer.Option(
            "--token",
            help="A token for the token QK circuit "
            "(repeatable; each must be one token, e.g. ' cat'). Default: the distinct tokens of the first "
            "text.",
        ),
    ] = None,
    query: Annotated[
        Optional[int],
        typer.Option(
            "--query",
            help="Explain this query position (0 = the first token, "
            "negative counts from the end) and its most-attended key. Default: average over the induction "
            "stripe.",
        ),
    ] = None,
    max_tokens: Annotated[
        int,
        typer.Option(
            "--max-tokens",
            help="The analysis window: each text is cut to "
            "this many tokens (first token included; never past the model's context), and the cut "
            "is reported.",
        ),
    ] = 64,
    max_memory: QKMemoryOpt = DEFAULT_QK_MEMORY_GB,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Write qk.json and CSVs only (faster).")] = False,
    report: ReportOpt = False,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "float32",
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show how heads' queries and keys interact, on real text and from the weights, and why.

    For each head: its pre-softmax scores and attention pattern on each text (token x token,
    masked cells grey); the score split over the residual stream's components (embeddings,
    each earlier head, each MLP; norm scale frozen) on the key and the query side; the
    positional QK circuit (W_pos for learned positions, by relative offset for rotary); the
    token QK circuit on a token set with the top of its full-vocabulary SVD; and Q/K/V
    composition scores between all heads, minus a random baseline, with each induction head's
    strongest K-composition sources. Writes qk.json, CSVs and PNGs to --out.

    Example: headscope qk --text "The cat sat. The cat sat." --head L18H6 --head 16.0
    """
    con, err = consoles(json_out)
    texts = [t for _, t in read_texts(text, file)] or None
    for spec in head or []:
        for part in spec.split(","):
            if part.strip() and not is_head_spec(part):
                raise BadInput(
                    f"malformed head {part!r}: expected L<layer>H<head> or <layer>.<head>, e.g. L5H1 or 5.1",
                    hint="e.g. --head L5H1 --head 6.9",
                )
    at_least("--top", top, 1)
    at_least("--max-tokens", max_tokens, 2, "the first token and one more")
    check_device(device, device_map)
    resolve_dtype(dtype)

    t0 = time.perf_counter()
    with ResultDir.open(out or default_out("qk", model), command="qk", overwrite=overwrite) as rd:
        m = load(err, model, device, dtype, device_map)
        with _progress(err) as step:
            a = analyze_qk(
                m,
                texts,
                head,
                top=top,
                tokens=tokens,
                query=query,
                max_tokens=max_tokens,
                progress=step,
                max_memory_gb=max_memory,
            )
            a.timings["total_s"] = time.perf_counter() - t0
            qk_files(rd, a, figures=not no_figures, progress=step)
        if report:
            rd.write_text("report.html", Report(model=a.model, qk=a).to_html())
        paths = rd.commit()
    if json_out:
        typer.echo(a.to_json())
    _print_summary(con, a)
    err.print(
        f"[green]Wrote {len(paths)} files to {rd.target}/[/] (qk.json, CSVs"
        + ("" if no_figures else ", figures/*.png")
        + f") in {a.timings['total_s']:.0f} s",
        highlight=False,
    )


@contextlib.contextmanager
def _progress(err):
    """``step(stage, done, total)``: a bar on a terminal, one line per stage otherwise."""
    if progress_enabled():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("qk", total=1)
            yield lambda stage, done, total: bar.update(task, description=stage, completed=done, total=max(total, 1))
        return
    seen = set()

    def step(stage, done, total):
        if stage not in seen:
            seen.add(stage)
            err.print(f"[dim]... {stage}[/]", highlight=False)

    yield step


def _print_summary(con, a) -> None:
    t = Table(title=f"QK analysis of {a.model['name']}: chosen heads")
    for col in (
        "head",
        "picked as",
        "induction",
        "prev-token",
        "key side: top (seq 0)",
        "token QK at",
        f"top K-comp sources ({a.k_where})",
    ):
        t.add_column(col, justify="right" if col in ("induction", "prev-token") else "left")
    sources = a.k_sources(3)
    for n, (l, h) in enumerate(a.heads):
        dec = a.decompositions[n]  # sequence 0
        ((name, v),) = dec.top("key", 1, by="vs_mean_key")
        ind, prev = a.head_score("induction", l, h), a.head_score("previous_token", l, h)
        src = " ".join(f"{s['head']}:{s['excess']:+.3f}" for s in sources[head_label(l, h)]) or "- (layer 0)"
        why = re.sub(r"#(\d+) (\S+) score [-\d.]+", r"\2 #\1", a.reasons.get(head_label(l, h), "--head"))
        t.add_row(
            head_label(l, h),
            why,
            f"{ind:.2f}" if ind is not None else "-",
            f"{prev:.2f}" if prev is not None else "-",
            f"{name} {v:+.3g}",
            a.token_circuits[n].where,
            src,
        )
    con.print(t)
    con.print(
        "[dim]key side: the component that most raises the score on the induction stripe (or the chosen "
        "query) above the query's other keys; token QK at: the offset (key that many tokens before the query) "
        "the token circuit is taken at, the one the head attends most on these texts (rotary models); "
        f"K-comp sources: score minus the random baseline, {a.k_where}.[/]",
        highlight=False,
    )
    for note in a.notes:
        con.print(f"[yellow]note:[/] {note}", highlight=False)
    for f in a.findings():
        con.print(f"- {f}", highlight=False, markup=False)
    con.print(
        f"[dim]Composition baseline (random matrices, same shapes): {a.composition.baseline:.4f}; "
        "K-comp sources are shown as score minus baseline.[/]",
        highlight=False,
    )
    con.print(
        "[dim]Legend: score = q.k/sqrt(d_head) before softmax (rotary applied), masked cells = causal mask; "
        "decomposition: contributions of residual components with the norm scale frozen, summing to the score; "
        "'vs mean key' subtracts the component's mean over the keys the query sees. Definitions in qk.json "
        "and docs/qk.md.[/]",
        highlight=False,
    )
