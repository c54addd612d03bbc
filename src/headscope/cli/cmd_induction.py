"""`headscope induction`: find a model's induction heads, show the evidence, check it causally."""

from __future__ import annotations

import typer

from ..errors import BadInput
from ..pipeline.files import induction_files
from ..pipeline.outputs import ResultDir
from ..pipeline.report_builder import texts_to_sequences
from ..render.lookup import view_of
from ..render.page import Report
from ..results import AttentionViews
from ..scan import attention_sample, check_settings, scan_induction
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
    OutOpt,
    OverwriteOpt,
    RepeatsOpt,
    ReportOpt,
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

#: Tokens of a --text/--file that the attention figures and views show.
TEXT_WINDOW = 96


@app.command("induction")
@handle_errors
def induction_cmd(
    model: ModelOpt = DEFAULT,
    seq_len: SeqLenOpt = 50,
    batch: BatchOpt = 10,
    repeats: RepeatsOpt = 2,
    seed: SeedOpt = 0,
    top: TopOpt = 5,
    text: TextOpt = None,
    file: FileOpt = None,
    ablation: AblationOpt = "mean",
    no_ablate: NoAblateOpt = False,
    threshold: ThresholdOpt = None,
    max_memory: MaxMemoryOpt = 2.0,
    attention: AttentionOpt = "auto",
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
    thresholds = parse_thresholds(threshold)
    texts = read_texts(text, file)
    check_settings(seq_len, batch, repeats, True, None)  # cheap checks before loading anything
    if ablation not in ABLATIONS:
        raise BadInput(f"unknown ablation {ablation!r}", hint="use --ablation mean, zero or resample")
    at_least("--top", top, 1)
    check_attention(attention)
    check_device(device, device_map)
    from ..models import resolve_dtype

    resolve_dtype(dtype)
    with ResultDir.open(out or default_out("induction", model), command="induction", overwrite=overwrite) as rd:
        m = load(err, model, device, dtype, device_map)
        seqs = texts_to_sequences(m, texts, max_tokens=TEXT_WINDOW) if texts else []
        res = scan_induction(
            m,
            seq_len=seq_len,
            batch=batch,
            repeats=repeats,
            seed=seed,
            top_k=top,
            ablate=not no_ablate,
            ablation=ablation,
            thresholds=thresholds,
            max_memory_gb=max_memory,
            progress=True,
            attention=attention,
        )
        heads = [(l, h) for l, h, _ in res.top_heads("induction", min(top, 6))]
        samples = [
            attention_sample(m, s, heads, f"Top induction heads on {s.title}", max_tokens=TEXT_WINDOW) for s in seqs
        ]
        with err.status("Writing results..."):
            induction_files(rd, res, samples)
            if report:
                views = AttentionViews.of(res, samples, [s.text for s in seqs])
                rep = Report(dict(res.model), [res, views], list(res.notes))
                rd.write_text("report.html", rep.to_html())
            paths = rd.commit()

    if json_out:
        typer.echo(res.to_json())
    for note in [n for s in seqs for n in s.notes] + res.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    view_of(res).terminal(res, con)
    if attention == "auto" and res.settings["attention"] == "eager":
        from ..scan.fused import fused_unsupported_reason

        err.print(
            f"[yellow]note:[/] eager attention (full patterns): the fused path is not available for this model "
            f"({fused_unsupported_reason(m)})",
            highlight=False,
        )
    err.print(
        f"[green]Wrote {len(paths)} files to {rd.target}/[/]: " + ", ".join(p.name for p in paths), highlight=False
    )
