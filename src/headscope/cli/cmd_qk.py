"""`headscope qk`: what chosen heads' queries look for, on your text and in the weights."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Annotated, Optional

import typer

from ..pipeline.files import qk_files
from ..progress import Progress
from ..qk.analysis import DEFAULT_QK_MEMORY_GB, analyze_qk
from ..render.lookup import view_of
from ..render.page import Report
from ..scan.fused import FusedUnsupported
from . import app
from ._common import (
    DEFAULT,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    FileOpt,
    JsonOpt,
    MaxTokensOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    QKMemoryOpt,
    ReportOpt,
    TextOpt,
    at_least,
    check_heads,
    check_tokens,
    consoles,
    handle_errors,
    load,
    load_settings,
    progress_enabled,
    read_texts,
    result_dir,
    say_written,
    titled_sequences,
    written_summary,
)


@contextlib.contextmanager
def _qk_hints() -> Iterator[None]:
    """Hints that point at what ``qk`` has: it has no ``--attention`` option.

    Its quick scan takes the attention path itself ("auto": eager wherever the fused kernel
    cannot apply the model's mask, a sliding window shorter than the sequence included), so a
    fused-path failure here is one the route did not foresee.
    """
    try:
        yield
    except FusedUnsupported as exc:
        raise FusedUnsupported(
            exc.message,
            hint="headscope qk has no --attention option (its quick scan picks the path itself); "
            "headscope induction --attention eager runs the same scan without the fused kernel",
        ) from exc


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
    max_tokens: MaxTokensOpt = 64,
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
    texts = read_texts(text, file)
    check_heads(head)
    check_tokens(tokens)
    at_least("--top", top, 1)
    at_least("--max-tokens", max_tokens, 2, "the first token and one more")
    where = load_settings(model, device, device_map, dtype)

    t0 = time.perf_counter()
    with result_dir("qk", out, model, overwrite) as rd:
        m = load(err, where)
        step = Progress(progress_enabled(), console=err, lines=True, transient=True)
        with step.running(), _qk_hints():
            a = analyze_qk(
                m,
                titled_sequences(m, texts, max_tokens),
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
    say_written(err, rd.target, paths, written_summary(paths), a.timings["total_s"])
