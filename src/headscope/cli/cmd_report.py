"""`headscope report`: everything headscope finds about a model, on one self-contained HTML page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import BadInput
from ..jsonsafe import dumps
from ..pipeline.outputs import ResultFile
from ..pipeline.report_builder import build_report
from ..results import AttentionViews, InductionResult, LogitAnalysis, QKAnalysis
from . import app
from ._common import (
    DEFAULT,
    SCAN,
    AblationOpt,
    AttentionOpt,
    BatchOpt,
    ControlsOpt,
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
    consoles,
    default_out,
    handle_errors,
    load,
    load_settings,
    read_texts,
    say_notes,
    scan_settings,
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
    seq_len: SeqLenOpt = SCAN.seq_len,
    batch: BatchOpt = SCAN.batch,
    repeats: RepeatsOpt = SCAN.repeats,
    seed: SeedOpt = SCAN.seed,
    top: TopOpt = SCAN.top_k,
    ablation: AblationOpt = SCAN.ablation,
    no_ablate: NoAblateOpt = False,
    controls: ControlsOpt = SCAN.controls,
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
    max_memory: MaxMemoryOpt = SCAN.max_memory_gb,
    attention: AttentionOpt = SCAN.attention,
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
    settings = scan_settings(
        seq_len=seq_len,
        batch=batch,
        repeats=repeats,
        seed=seed,
        top=top,
        ablation=ablation,
        ablate=not no_ablate,
        controls=controls,
        threshold=threshold,
        max_memory=max_memory,
        attention=attention,
    )
    texts = read_texts(text, file)
    at_least("--qk-top", qk_top, 1, "or pass --no-qk to skip the QK analysis")
    where = load_settings(model, device, device_map, dtype)
    path = out or default_out("report", model).with_suffix(".html")
    plain = not os.path.lexists(path) or (path.is_file() and not path.is_symlink())  # else ResultFile refuses it
    if plain and path.suffix.lower() not in (".html", ".htm"):
        raise BadInput(
            f"--out {path}: the report is one HTML page, and a file named {path.name} would hold HTML all the same",
            hint=f"name it {path.with_suffix('.html').name} (a browser prints the page to PDF)",
        )
    with ResultFile.open(path, overwrite=overwrite) as write:
        m = load(err, where)
        rep = build_report(
            m,
            texts or None,
            settings,
            qk=not no_qk,
            qk_top=qk_top,
            logits=not no_logits,
            progress=True,
            log=lambda s: err.print(s, highlight=False),
        )
        with err.status("Writing the page..."):
            write(rep.to_html())
    views = rep.first(AttentionViews)
    text_samples = [x for i, x in enumerate(views.samples) if views.source(i) is not None] if views is not None else []
    qk, logits, scan = rep.first(QKAnalysis), rep.first(LogitAnalysis), rep.first(InductionResult)
    say_notes(err, [*rep.notes, *(x.note for x in text_samples if x.note)])
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
