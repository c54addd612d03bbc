"""`headscope induction`: find a model's induction heads, show the evidence, check it causally."""

from __future__ import annotations

import typer

from ..pipeline.files import induction_files
from ..pipeline.report_builder import build_report
from ..render.lookup import view_of
from ..results import AttentionViews, InductionResult
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
    OutOpt,
    OverwriteOpt,
    RepeatsOpt,
    ReportOpt,
    SeedOpt,
    SeqLenOpt,
    TextOpt,
    ThresholdOpt,
    TopOpt,
    consoles,
    handle_errors,
    load,
    load_settings,
    read_texts,
    result_dir,
    say_notes,
    say_written,
    scan_settings,
)


@app.command("induction")
@handle_errors
def induction_cmd(
    model: ModelOpt = DEFAULT,
    seq_len: SeqLenOpt = SCAN.seq_len,
    batch: BatchOpt = SCAN.batch,
    repeats: RepeatsOpt = SCAN.repeats,
    seed: SeedOpt = SCAN.seed,
    top: TopOpt = SCAN.top_k,
    text: TextOpt = None,
    file: FileOpt = None,
    ablation: AblationOpt = SCAN.ablation,
    no_ablate: NoAblateOpt = False,
    controls: ControlsOpt = SCAN.controls,
    threshold: ThresholdOpt = None,
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
    """Score every head as an induction head on repeated random tokens, and check the top ones causally.

    Runs BATCH sequences [BOS] + r x REPEATS (r: SEQ_LEN random ordinary tokens) through the
    model once, scoring each head's induction, prefix-matching, previous-token and
    duplicate-token attention in hooks; adds the copying score from the weights; ablates the top
    induction heads; writes scores.json, scores.csv and PNG figures to --out.

    Example: headscope induction --model smollm2-135m-instruct-q4 --seq-len 50 --batch 10 --top 5
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
    where = load_settings(model, device, device_map, dtype)
    with result_dir("induction", out, model, overwrite) as rd:
        m = load(err, where)
        rep = build_report(m, texts, settings, qk=False, logits=False, builtin_texts=False, sinks=False, progress=True)
        res, views = rep.first(InductionResult), rep.first(AttentionViews)
        assert res is not None and views is not None  # build_report always scans
        samples = [x for i, x in enumerate(views.samples) if views.source(i) is not None]  # the texts' views
        with err.status("Writing results..."):
            induction_files(rd, res, samples)
            if report:
                rd.write_text("report.html", rep.to_html())
            paths = rd.commit()

    if json_out:
        typer.echo(res.to_json())
    say_notes(err, [s.note for s in samples if s.note] + res.notes)
    view_of(res).terminal(res, con)
    if attention == "auto" and res.settings["attention"] == "eager":
        from ..scan.fused import fused_unsupported_reason

        err.print(
            f"[yellow]note:[/] eager attention (full patterns): the fused path is not available for this model "
            f"({fused_unsupported_reason(m, res.settings.get('n_tokens'))})",
            highlight=False,
        )
    say_written(err, rd.target, paths)
