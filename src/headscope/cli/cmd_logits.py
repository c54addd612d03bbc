"""`headscope logits`: what heads write, how much of the prediction each one makes, and the induction story."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..errors import BadInput
from ..head_labels import is_head_spec
from ..models import resolve_dtype
from ..pipeline.files import logit_files
from ..pipeline.logit_analysis import analyze_logits
from ..pipeline.outputs import ResultDir
from ..progress import Progress
from ..render.lookup import view_of
from ..render.page import Report
from ..scan import check_settings
from ..scan.ablation import ABLATIONS
from . import app
from ._common import (
    DEFAULT,
    AblationOpt,
    BatchOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    FileOpt,
    JsonOpt,
    MaxMemoryOpt,
    ModelOpt,
    NoAblateOpt,
    OutOpt,
    OverwriteOpt,
    RepeatsOpt,
    ReportOpt,
    SeedOpt,
    SeqLenOpt,
    TextOpt,
    at_least,
    check_device,
    consoles,
    default_out,
    handle_errors,
    load,
    read_texts,
)


@app.command("logits")
@handle_errors
def logits_cmd(
    model: ModelOpt = DEFAULT,
    text: TextOpt = None,
    file: FileOpt = None,
    head: Annotated[
        Optional[list[str]],
        typer.Option(
            "--head",
            help="Head to show, L5H1 or 5.1 (repeatable, or "
            "comma-separated). Default: the heads that push the actual next token most on the texts, and "
            "the top induction heads of the scan.",
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top",
            help="How many top induction heads get an induction story (and are "
            "ablated); without --head, also how many strongest pushers are shown.",
        ),
    ] = 3,
    tokens: Annotated[
        Optional[list[str]],
        typer.Option(
            "--token",
            help="A token whose OV row to show for every "
            "head (repeatable; each must be one token, e.g. ' cat'). The texts' tokens are always "
            "shown.",
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
    seq_len: SeqLenOpt = 50,
    batch: BatchOpt = 10,
    repeats: RepeatsOpt = 2,
    seed: SeedOpt = 0,
    ablation: AblationOpt = "mean",
    no_ablate: NoAblateOpt = False,
    max_memory: MaxMemoryOpt = 2.0,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Write logits.json and CSVs only (faster).")] = False,
    report: ReportOpt = False,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "float32",
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show what heads write: their direct effect on the next token's logit, their OV circuits, and the
    induction story of the top induction heads.

    Direct logit attribution: each head's output through the final norm (scale frozen) and the
    unembedding, on the centred logit of the token that actually comes next, at every position
    of each text. OV circuit: which tokens attending to a token makes the head promote and
    suppress, and whether it copies (the token's own rank in its row). Induction story: for each
    top induction head of a scan on repeated random tokens, its strongest K-composition source
    and that source's previous-token score, its induction score, whether its OV copies, its direct
    effect on the copied token and its ablation Δloss, all from this one run. Writes
    logits.json, CSVs and PNGs to --out.

    Example: headscope logits --text "The quick brown fox jumps over the lazy dog." --head L18H6 --token " dog"
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
    for t in tokens or []:
        if t == "":
            raise BadInput("--token '' is empty", hint="give a single token, e.g. --token ' cat'")
    at_least("--top", top, 1)
    at_least("--max-tokens", max_tokens, 2, "the first token and one more")
    check_settings(seq_len, batch, repeats, True, None)
    if ablation not in ABLATIONS:
        raise BadInput(f"unknown ablation {ablation!r}", hint="use --ablation mean, zero or resample")
    check_device(device, device_map)
    resolve_dtype(dtype)

    t0 = time.perf_counter()
    with ResultDir.open(out or default_out("logits", model), command="logits", overwrite=overwrite) as rd:
        m = load(err, model, device, dtype, device_map)
        a = analyze_logits(
            m,
            texts,
            head,
            top=top,
            tokens=tokens,
            max_tokens=max_tokens,
            seq_len=seq_len,
            batch=batch,
            repeats=repeats,
            seed=seed,
            ablate=not no_ablate,
            ablation=ablation,
            max_memory_gb=max_memory,
            progress=Progress(False, console=err, lines=True),
            scan_progress=None,
        )
        a.timings["total_s"] = time.perf_counter() - t0
        with err.status("Writing results..."):
            logit_files(rd, a, figures=not no_figures)
            if report:
                rd.write_text("report.html", Report(dict(a.model), [a]).to_html())
        paths = rd.commit()
    if json_out:
        typer.echo(a.to_json())
    view_of(a).terminal(a, con)
    err.print(
        f"[green]Wrote {len(paths)} files to {rd.target}/[/] (logits.json, CSVs"
        + ("" if no_figures else ", figures/*.png")
        + f") in {a.timings['total_s']:.0f} s",
        highlight=False,
    )
