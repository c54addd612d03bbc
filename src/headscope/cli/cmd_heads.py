"""`headscope heads`: the roles of every head across every score, with the in-context learning check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import BadInput
from ..kinds.documents import check_text_file
from ..kinds.icl import ICL_ABLATIONS
from ..pipeline.files import heads_files
from ..pipeline.roles import ICL_TOP, ICL_WINDOWS, SINK_WINDOWS, analyze_heads
from ..render.lookup import view_of
from ..render.page import Report
from ..settings import check_ablation
from . import app
from ._common import (
    DEFAULT,
    SCAN,
    AblationOpt,
    AttentionOpt,
    BatchOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MaxMemoryOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    RepeatsOpt,
    ReportOpt,
    SeedOpt,
    SeqLenOpt,
    ThresholdOpt,
    at_least,
    consoles,
    handle_errors,
    load,
    load_settings,
    result_dir,
    say_notes,
    say_stage,
    say_written,
    scan_settings,
)

NaturalFileOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--file",
        "-f",
        help="A UTF-8 text file (repeatable) of natural text for the ICL score (windows of 512 tokens) and the "
        "attention-sink role (windows of 64) (default: CPython's pydoc_data.topics, no download).",
    ),
]
IclOpt = Annotated[
    bool,
    typer.Option(
        "--icl/--no-icl",
        help="Measure Olsson et al.'s in-context learning score on natural text and how much ablating "
        "each top induction head changes it, each with its standard error and 95% interval.",
    ),
]
IclWindowsOpt = Annotated[
    int,
    typer.Option(
        "--icl-windows",
        help="Windows of 512 tokens of natural text for the ICL score, spread over the corpus. The default "
        "(200) puts its standard error near 0.3 nats on SmolLM2; fewer windows are faster and noisier.",
    ),
]
IclTopOpt = Annotated[
    int,
    typer.Option(
        "--top",
        help="How many top induction heads to ablate in the ICL check (one forward pass over the windows each).",
    ),
]
NaturalSinksOpt = Annotated[
    bool,
    typer.Option(
        "--natural-sinks/--no-natural-sinks",
        help="Measure the attention-sink role as Gu et al. 2024 do: alpha_1 on 100 windows of 64 tokens of "
        "natural text (cached on disk per model); --no-natural-sinks skips it, and then no head takes that role.",
    ),
]


@app.command("heads")
@handle_errors
def heads_cmd(
    model: ModelOpt = DEFAULT,
    threshold: ThresholdOpt = None,
    file: NaturalFileOpt = None,
    icl: IclOpt = True,
    icl_windows: IclWindowsOpt = ICL_WINDOWS,
    top: IclTopOpt = ICL_TOP,
    ablation: AblationOpt = SCAN.ablation,
    natural_sinks: NaturalSinksOpt = True,
    seq_len: SeqLenOpt = SCAN.seq_len,
    batch: BatchOpt = SCAN.batch,
    repeats: RepeatsOpt = SCAN.repeats,
    seed: SeedOpt = SCAN.seed,
    max_memory: MaxMemoryOpt = SCAN.max_memory_gb,
    attention: AttentionOpt = SCAN.attention,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "float32",
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    report: ReportOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Which heads are induction, previous-token, duplicate-token, copying, sink, successor and copy-suppression heads.

    One scan of repeated random tokens scores every head on every score of the registry (the
    weight scores once per model, cached); a head takes a role when its score reaches the role's
    threshold. Prints the role table of every head with a role, the count per role, the
    successor sets the tokenizer has, the in-context learning score on natural text with each
    top induction head's ablation delta, and the legend; writes heads.json and heads.csv.

    Example: headscope heads --model smollm2-135m-instruct-q4 --no-icl
    """
    con, err = consoles(json_out)
    settings = scan_settings(
        seq_len=seq_len,
        batch=batch,
        repeats=repeats,
        seed=seed,
        top=top,
        ablation=ablation,
        threshold=threshold,
        max_memory=max_memory,
        attention=attention,
    )
    check_ablation(ablation, ICL_ABLATIONS, " for the in-context learning check")
    for f in file or []:  # each --file checked now (exists, UTF-8, not empty), in blocks, before the model loads
        check_text_file(Path(f))
    at_least("--icl-windows", icl_windows, 1)
    if file and not (icl or natural_sinks):
        raise BadInput(
            "--file is only read by the ICL score and the natural-text sinks, and both are off",
            hint="drop --no-icl or --no-natural-sinks",
        )
    where = load_settings(model, device, device_map, dtype)
    with result_dir("heads", out, model, overwrite) as rd:
        m = load(err, where)
        a = analyze_heads(
            m,
            settings,
            icl=icl,
            icl_top=top,
            icl_windows=icl_windows,
            natural_sinks=natural_sinks,
            sink_windows=SINK_WINDOWS,
            files=list(file or []) or None,
            progress=True,
            log=say_stage(err),
        )
        with err.status("Writing results..."):
            heads_files(rd, a)
            if report:
                rd.write_text(
                    "report.html",
                    Report(dict(a.model), [a.induction, a], list(a.notes)).to_html(),
                )
            paths = rd.commit()

    if json_out:
        typer.echo(a.to_json())
    say_notes(err, a.notes)
    view_of(a).terminal(a, con)
    say_written(err, rd.target, paths)
