"""`headscope logits`: what heads write, how much of the prediction each one makes, and the induction story."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..pipeline.files import logit_files
from ..pipeline.logit_analysis import analyze_logits
from ..progress import Progress
from ..render.lookup import view_of
from ..render.page import Report
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
    MaxTokensOpt,
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
    check_heads,
    check_tokens,
    consoles,
    handle_errors,
    load,
    load_settings,
    read_texts,
    result_dir,
    say_written,
    scan_settings,
    titled_sequences,
    written_summary,
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
    max_tokens: MaxTokensOpt = 64,
    seq_len: SeqLenOpt = SCAN.seq_len,
    batch: BatchOpt = SCAN.batch,
    repeats: RepeatsOpt = SCAN.repeats,
    seed: SeedOpt = SCAN.seed,
    ablation: AblationOpt = SCAN.ablation,
    no_ablate: NoAblateOpt = False,
    controls: ControlsOpt = SCAN.controls,
    max_memory: MaxMemoryOpt = SCAN.max_memory_gb,
    attention: AttentionOpt = SCAN.attention,
    paths: Annotated[
        bool,
        typer.Option(
            "--paths",
            help="Also measure each top induction head's paths by path patching (the senders into its keys, "
            "its path to the logits directly and via later heads), with intervals (slower; see headscope circuit).",
        ),
    ] = False,
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
    """Show what heads write: their direct effect on the next token's logit, their OV circuits, and the induction story.

    The induction story is told for the top induction heads.

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
    texts = read_texts(text, file)
    check_heads(head)
    check_tokens(tokens)
    at_least("--max-tokens", max_tokens, 2, "the first token and one more")
    settings = scan_settings(
        seq_len=seq_len,
        batch=batch,
        repeats=repeats,
        seed=seed,
        top=top,
        ablation=ablation,
        ablate=not no_ablate,
        controls=controls,
        max_memory=max_memory,
        attention=attention,
    )
    where = load_settings(model, device, device_map, dtype)

    t0 = time.perf_counter()
    with result_dir("logits", out, model, overwrite) as rd:
        m = load(err, where)
        a = analyze_logits(
            m,
            titled_sequences(m, texts, max_tokens),
            head,
            settings,
            top=top,
            tokens=tokens,
            max_tokens=max_tokens,
            progress=Progress(False, console=err, lines=True),
            scan_progress=None,
            paths=paths,
        )
        a.timings["total_s"] = time.perf_counter() - t0
        with err.status("Writing results..."):
            logit_files(rd, a, figures=not no_figures)
            if report:
                rd.write_text("report.html", Report(dict(a.model), [a]).to_html())
        written = rd.commit()
    if json_out:
        typer.echo(a.to_json())
    view_of(a).terminal(a, con)
    say_written(err, rd.target, written, written_summary(written), a.timings["total_s"])
