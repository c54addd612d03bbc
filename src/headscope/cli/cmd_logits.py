"""`headscope logits`: what heads write, how much of the prediction each one makes, and the induction story."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from ..errors import BadInput
from ..head_labels import head_label, is_head_spec
from ..models import resolve_dtype
from ..pipeline.files import logit_files
from ..pipeline.logit_analysis import analyze_logits
from ..pipeline.outputs import ResultDir
from ..render.page import Report
from ..scan import check_settings
from ..scan.ablation import ABLATIONS
from ..tokens import visible_whitespace
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
            progress=lambda s: err.print(f"[dim]... {s}[/]", highlight=False),
            scan_progress=None,
        )
        a.timings["total_s"] = time.perf_counter() - t0
        with err.status("Writing results..."):
            logit_files(rd, a, figures=not no_figures)
            if report:
                rd.write_text("report.html", Report(model=dict(a.model), logits=a).to_html())
        paths = rd.commit()
    if json_out:
        typer.echo(a.to_json())
    print_summary(con, a)
    err.print(
        f"[green]Wrote {len(paths)} files to {rd.target}/[/] (logits.json, CSVs"
        + ("" if no_figures else ", figures/*.png")
        + f") in {a.timings['total_s']:.0f} s",
        highlight=False,
    )


def _signed(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:+.{nd}f}"


def print_summary(con, a) -> None:
    """The three terminal tables: largest direct effects, OV summary, induction stories; findings and legend."""
    for note in a.notes:
        con.print(f"[yellow]note:[/] {note}", highlight=False)
    t = Table(title=f"Largest direct effects on the next token, {a.model['name']} (centred logit)")
    for col in ("text", "token → next", "head", "effect", "logit"):
        t.add_column(col, justify="left" if col in ("token → next", "head") else "right", overflow="fold")
    for r in a.top_effects(10).itertuples():
        t.add_row(str(r.text), r.where, r.head_label, f"{r.effect:+.3f}", f"{r.model_logit:+.2f}")
    con.print(t)
    con.print(
        "[dim]effect: the head's direct push on the centred logit of the actual next token; logit: the model's "
        "own centred logit of it (all components sum to it).[/]",
        highlight=False,
    )

    con.print(
        "Chosen heads: "
        + "; ".join(f"{head_label(l, h)} ({a.reasons.get(head_label(l, h), '--head')})" for l, h in a.heads),
        highlight=False,
    )
    V = a.model["d_vocab"]
    t = Table(title=f"OV circuits of the chosen heads (self-rank of {V:,}: 1 = copies the token it attends to)")
    for col in ("head", "copying", "self-rank", "source", "promotes", "suppresses"):
        t.add_column(col, justify="right" if col in ("copying", "self-rank") else "left", overflow="fold")
    copying = a.scan.scores.get("copying")

    def show(labels: list[str]) -> str:
        return " ".join(visible_whitespace(x) for x in labels[:3])

    for lh in a.heads:
        ov = a.ov[lh]
        idx = list(range(len(a.asked))) or [a.ov_example(lh)]  # the asked tokens, else the best-copied one
        for n, i in enumerate(idx):
            rank = f"{int(ov.self_rank[i]):,}" + ("" if a.asked else f" (median {float(np.median(ov.self_rank)):,.0f})")
            cop = _signed(None if copying is None else float(copying[lh]), 2)
            t.add_row(
                ov.label if n == 0 else "",
                cop if n == 0 else "",
                rank,
                visible_whitespace(ov.token_labels[i]),
                show(ov.top_labels[i]),
                show(ov.bottom_labels[i]),
            )
    con.print(t)
    con.print(
        "[dim]source: "
        + ("the --token asked for" if a.asked else "of the texts' tokens, the one the head ranks best in its own row")
        + "; promotes/suppresses: the top and bottom of that token's OV row (W_E W_V W_O "
        "W_U, direct token path). Every token's row is in ov.csv.[/]",
        highlight=False,
    )

    t = Table(
        title="The induction story of the top induction heads, one run (K source: strongest K-composition "
        f"source, excess, {a.k_where}; prev: its previous-token score; DLA: direct logit effect on later / "
        "first-repeat targets, a centred logit; Δloss: change in later-repeat cross-entropy when ablated, nats; "
        "a logit and a loss, not compared)"
    )
    for col in ("head", "induction", "K source", "prev", "copying", "DLA", "DLA 1st", "Δloss"):
        t.add_column(col, justify="left" if col in ("head", "K source") else "right", overflow="fold")
    for s in a.stories.stories:
        src = s.k_source
        source = f"{src['head']} ({src['k_composition']:+.3f})" if src else "- (layer 0)"
        prev = f"{src['previous_token']:.2f}" if src else "-"
        t.add_row(
            s.label,
            f"{s.induction:.3f}",
            source,
            prev,
            _signed(s.copying, 2),
            _signed(s.dla_later),
            _signed(s.dla_first),
            _signed(s.ablation_delta_loss),
        )
    con.print(t)
    for f in a.findings():
        con.print(f"- {f}", highlight=False, markup=False)
    st = a.scan.settings
    con.print(
        f"[dim]Scan: {st['batch']} sequences of {st['seq_len']} random tokens x {st['repeats']}, "
        f"seed {st['seed']}; loss {a.scan.loss_first_repeat:.2f} nats first repeat, "
        f"{a.scan.loss_later_repeats:.2f} later; K-composition shown as excess over the random baseline "
        f"{a.composition.baseline:.4f}. DLA later/first: mean direct effect on later-/first-repeat targets; "
        f"Δloss: rise in later-repeat loss when the head is {st['ablation'] or 'not'} ablated. Definitions "
        "in logits.json and docs/logits.md.[/]",
        highlight=False,
    )
