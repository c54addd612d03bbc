"""`headscope report`: everything headscope finds about a model, on one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import BadInput
from ..jsonsafe import dumps
from ..models import resolve_dtype
from ..pipeline.outputs import ResultFile
from ..pipeline.report_builder import build_report
from ..results import AttentionViews, InductionResult, LogitAnalysis, QKAnalysis
from ..scan import check_settings
from ..scan.ablation import ABLATIONS
from . import app
from ._common import (
    DEFAULT,
    AblationOpt,
    AttentionOpt,
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
    OverwriteOpt,
    RepeatsOpt,
    SeedOpt,
    SeqLenOpt,
    TextOpt,
    ThresholdOpt,
    TopOpt,
    at_least,
    check_attention,
    check_device,
    consoles,
    default_out,
    handle_errors,
    load,
    parse_thresholds,
    read_texts,
)


@app.command("report")
@handle_errors
def report_cmd(
    model: ModelOpt = DEFAULT,
    text: TextOpt = None,
    file: FileOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="The HTML file to write (default: headscope-results/report-MODEL.html); written all at once.",
        ),
    ] = None,
    seq_len: SeqLenOpt = 50,
    batch: BatchOpt = 10,
    repeats: RepeatsOpt = 2,
    seed: SeedOpt = 0,
    top: TopOpt = 5,
    ablation: AblationOpt = "mean",
    no_ablate: NoAblateOpt = False,
    no_qk: Annotated[bool, typer.Option("--no-qk", help="Skip the QK analysis (faster).")] = False,
    no_logits: Annotated[
        bool,
        typer.Option(
            "--no-logits",
            help="Skip the logit effect: direct logit attribution, OV circuits and the induction story (faster).",
        ),
    ] = False,
    qk_top: Annotated[
        int,
        typer.Option(
            "--qk-top",
            help="The QK analysis takes this many top induction "
            "heads and as many top previous-token heads; the logit effect tells the story of as many top "
            "induction heads.",
        ),
    ] = 3,
    threshold: ThresholdOpt = None,
    max_memory: MaxMemoryOpt = 2.0,
    attention: AttentionOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "float32",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the induction scan, the QK analysis and the logit analysis; write one HTML page that works offline.

    The page holds the model and settings, the top heads with their roles, score heatmaps,
    loss by position, the causal check, interactive attention views of the top heads
    (circuitsvis, its JavaScript inlined once), QK scores, decompositions, positional and token
    QK circuits, composition scores, the logit effect (each top induction head's story from
    previous-token head to the copied token's logit, direct logit attribution on your texts, OV
    circuits), and a legend with every score's definition and source.
    It loads nothing from the network: send it to a colleague as it is.

    Example: headscope report --model smollm2-135m-instruct-q4 --text "The cat sat. The cat sat." --out report.html
    """
    con, err = consoles(json_out)
    thresholds = parse_thresholds(threshold)
    texts = read_texts(text, file)
    check_settings(seq_len, batch, repeats, True, None)  # cheap checks before loading anything
    if ablation not in ABLATIONS:
        raise BadInput(f"unknown ablation {ablation!r}", hint="use --ablation mean, zero or resample")
    at_least("--top", top, 1)
    at_least("--qk-top", qk_top, 1, "or pass --no-qk to skip the QK analysis")
    check_attention(attention)
    check_device(device, device_map)
    resolve_dtype(dtype)
    path = out or default_out("report", model).with_suffix(".html")
    with ResultFile.open(path, overwrite=overwrite) as write:
        m = load(err, model, device, dtype, device_map)
        rep = build_report(
            m,
            texts or None,
            seq_len=seq_len,
            batch=batch,
            repeats=repeats,
            seed=seed,
            top_k=top,
            ablate=not no_ablate,
            ablation=ablation,
            thresholds=thresholds,
            qk=not no_qk,
            qk_top=qk_top,
            logits=not no_logits,
            max_memory_gb=max_memory,
            progress=True,
            attention=attention,
            log=lambda s: err.print(s, highlight=False),
        )
        with err.status("Writing the page..."):
            write(rep.to_html())
    views = rep.first(AttentionViews)
    text_samples = [x for i, x in enumerate(views.samples) if views.source(i) is not None] if views is not None else []
    qk, logits, scan = rep.first(QKAnalysis), rep.first(LogitAnalysis), rep.first(InductionResult)
    for note in dict.fromkeys([*rep.notes, *(x.note for x in text_samples if x.note)]):
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    size = path.stat().st_size
    if json_out:
        typer.echo(
            dumps(
                {
                    "report": str(path),
                    "bytes": size,
                    "qk_heads": [f"L{l}H{h}" for l, h in qk.heads] if qk is not None else [],
                    "logit_heads": [f"L{l}H{h}" for l, h in logits.heads] if logits is not None else [],
                    "induction": scan.to_dict() if scan is not None else None,
                },
                indent=2,
            )
        )
    con.print(
        f"[green]Wrote {path}[/] ({size / 1e6:.1f} MB): open it in any browser, no network needed.", highlight=False
    )
