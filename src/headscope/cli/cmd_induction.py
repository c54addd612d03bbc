"""`headscope induction`: find a model's induction heads, show the evidence, check it causally."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import BadInput
from ..head_labels import head_label
from ..pipeline.files import induction_files
from ..pipeline.outputs import ResultDir
from ..pipeline.report_builder import texts_to_sequences
from ..render.page import Report
from ..scan import attention_sample, check_settings, scan_induction
from ..scan.ablation import ABLATIONS
from ..scores import definitions, roles_legend
from ..scores import score as declared
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
                rep = Report(
                    model=dict(res.model),
                    induction=res,
                    texts=samples,
                    sources=[s.text for s in seqs],
                    notes=list(res.notes),
                )
                rd.write_text("report.html", rep.to_html())
            paths = rd.commit()

    if json_out:
        typer.echo(res.to_json())
    for note in [n for s in seqs for n in s.notes] + res.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    print_summary(con, res)
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


def print_summary(con, res) -> None:
    """The terminal table of the top heads (one column per score of the registry), verdicts, legend."""
    s = res.settings
    bos = "first token: " + s.get("bos_source", "bos" if s["bos"] else "none")
    path = {"fused": "fused attention (no n x n pattern)", "eager": "eager attention (full patterns)"}
    con.print(
        f"[bold]{res.model['name']}[/]: {s['batch']} sequences of {s['seq_len']} random tokens x {s['repeats']} "
        f"repeats, {bos}; {s['chunk_size']} per forward pass"
        + (f", {path.get(s['attention'], s['attention'])}" if s.get("attention") else ""),
        highlight=False,
    )
    roles = res.roles()
    names = [n for n in res.score_order() if declared(n).in_table]
    role_names = {r for l, h, _ in res.top_heads("induction", s["top_k"]) for r in roles.get((l, h), [])}
    shown = list(dict.fromkeys([*names, *sorted(role_names)]))
    short = ", ".join(f"{declared(n).header} = {declared(n).label}" for n in shown if declared(n).header != n)
    t = Table(
        title=f"Top induction heads ({short}, Δloss = change in later-repeat loss when ablated, "
        "[95% bootstrap interval over sequences], Δfirst = change in first-repeat loss)"
    )
    cols = ["head", *(declared(n).header for n in names), "roles", "Δloss [95%]", "Δfirst"]
    for col in cols:
        t.add_column(
            col, justify="left" if col in ("head", "roles") else "right", overflow="fold", no_wrap=col != "roles"
        )
    for l, h, _ in res.top_heads("induction", s["top_k"]):
        cells = [
            f"{res.scores[n][l, h]:.3f}" if declared(n).vmin == 0 else f"{res.scores[n][l, h]:+.3f}" for n in names
        ]
        e = res.ablation_of(l, h)
        t.add_row(
            head_label(l, h),
            *cells,
            " ".join(declared(r).header for r in roles.get((l, h), [])) or "-",
            "-" if e is None else f"{e['loss_increase']:+.3f} [{e['interval'][0]:+.2f}, {e['interval'][1]:+.2f}]",
            "-" if e is None else f"{e['first_repeat_increase']:+.3f}",
        )
    con.print(t)
    for n in ("previous_token", "duplicate_token"):
        best = ", ".join(f"{head_label(l, h)} {v:.2f}" for l, h, v in res.top_heads(n, 3))
        con.print(f"{declared(n).label.capitalize()} heads: {best}", highlight=False)
    con.print(
        f"Loss: first repeat {res.loss_first_repeat:.2f} nats, later repeats {res.loss_later_repeats:.2f} nats",
        highlight=False,
    )
    if res.ablation:
        con.print(f"Causal check ({s['ablation']} ablation of hook_z):", highlight=False)
        for v in res.verdicts():
            con.print(f"  {v}", highlight=False, markup=False)
    con.print("[dim]Legend:[/]")
    for name, text in definitions().items():
        con.print(f"[dim]  {name}: {escape(text)}[/]", highlight=False)
    con.print(f"[dim]  roles: {roles_legend(res.thresholds)}[/]", highlight=False)
