"""`headscope qk`: what chosen heads' queries look for, on your text and in the weights."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..errors import BadInput
from ..head_labels import is_head_spec
from ..models import resolve_dtype
from ..pipeline.files import qk_files
from ..pipeline.outputs import ResultDir
from ..progress import Progress
from ..qk.analysis import DEFAULT_QK_MEMORY_GB, analyze_qk
from ..render.lookup import view_of
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
        step = Progress(progress_enabled(), console=err, lines=True, transient=True)
        with step.running():
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
            rd.write_text("report.html", Report(a.model, [a]).to_html())
        paths = rd.commit()
    if json_out:
        typer.echo(a.to_json())
    view_of(a).terminal(a, con)
    err.print(
        f"[green]Wrote {len(paths)} files to {rd.target}/[/] (qk.json, CSVs"
        + ("" if no_figures else ", figures/*.png")
        + f") in {a.timings['total_s']:.0f} s",
        highlight=False,
    )
