"""`headscope induction`: find a model's induction heads, show the evidence, check it causally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..models import load_model, resolve_device, resolve_dtype
from ..render.induction_figures import figure_names
from ..scan import attention_sample, encode_text, scan_induction
from ..scan.result import DEFAULT_THRESHOLDS, LOSS_DEFINITION, ABLATION_DEFINITION, head_label
from ..scan.scores import DEFINITIONS
from ..scan.sequences import check_settings
from . import app
from ._common import (DEFAULT, DebugOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, OverwriteOpt, check_out_dir,
                      consoles, handle_errors)
from ._inputs import parse_thresholds, read_texts, slug


@app.command("induction")
@handle_errors
def induction_cmd(
    model: ModelOpt = DEFAULT,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Length of the random block r that is repeated.")] = 50,
    batch: Annotated[int, typer.Option("--batch", help="Number of random sequences.")] = 10,
    repeats: Annotated[int, typer.Option("--repeats", help="How many times r appears (>= 2; Olsson et al. use 4).")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed for drawing r.")] = 0,
    top: Annotated[int, typer.Option("--top", help="How many top induction heads to show and ablate.")] = 5,
    text: Annotated[list[str] | None, typer.Option("--text", help="Your own text (repeatable): top heads' attention on it.")] = None,
    file: Annotated[list[Path] | None, typer.Option("--file", help="A UTF-8 text file (repeatable), like --text.")] = None,
    ablation: Annotated[str, typer.Option("--ablation", help="mean (head output -> its mean) or zero.")] = "mean",
    no_ablate: Annotated[bool, typer.Option("--no-ablate", help="Skip the causal check (faster).")] = False,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="Role threshold NAME=VALUE (repeatable); "
                         f"defaults {', '.join(f'{k}={v}' for k, v in DEFAULT_THRESHOLDS.items())}.")] = None,
    max_memory: Annotated[float, typer.Option("--max-memory", help="GiB budget for one chunk's attention + logits; "
                          "sets how many sequences go through at once.")] = 2.0,
    device: DeviceOpt = "auto",
    device_map: Annotated[str | None, typer.Option("--device-map", help="Spread the model over several GPUs with "
                          "accelerate (auto, balanced, sequential); replaces --device. See docs/scale.md.")] = None,
    dtype: DtypeOpt = "float32",
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: headscope-results/induction-MODEL).")] = None,
    overwrite: OverwriteOpt = False,
    report: Annotated[bool, typer.Option("--report", help="Also write report.html: the results on one self-contained, "
                      "interactive page that works offline (see `headscope report`).")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score every head as an induction head on repeated random tokens, and check the top ones causally.

    Runs BATCH sequences [BOS] + r x REPEATS (r: SEQ_LEN random ordinary tokens) through the
    model once, scoring each head's induction, prefix-matching, previous-token and
    duplicate-token attention in hooks; adds the copying score from the weights; ablates the top
    induction heads; writes scores.json, scores.csv and PNG figures to --out.

    Example: headscope induction --model smollm2-135m --seq-len 50 --batch 10 --top 5
    """
    con, err = consoles(json_out)
    thresholds = parse_thresholds(threshold, DEFAULT_THRESHOLDS)
    texts = read_texts(text, file)
    check_settings(seq_len, batch, repeats, True, None)  # cheap checks before loading anything
    resolve_device(device), resolve_dtype(dtype)
    out_dir = out or Path("headscope-results") / f"induction-{slug(model)}"
    names = ["scores.json", "scores.csv"] + figure_names(not no_ablate, 1, len(texts)) + (["report.html"] if report else [])
    check_out_dir(out_dir, names, overwrite)

    with err.status(f"Loading {model}..."):
        m = load_model(model, device=device, dtype=dtype, device_map=device_map, log=lambda s: err.print(s, highlight=False))
    err.print(f"Loaded {model}: {m.cfg.n_layers} layers x {m.cfg.n_heads} heads on {m.cfg.device}", highlight=False)
    res = scan_induction(m, seq_len=seq_len, batch=batch, repeats=repeats, seed=seed, top_k=top,
                         ablate=not no_ablate, ablation=ablation, thresholds=thresholds, max_memory_gb=max_memory,
                         progress=True)
    heads = [(l, h) for l, h, _ in res.top_heads("induction", min(top, 6))]
    text_samples = [attention_sample(m, encode_text(m, t), heads, f"Top induction heads on {title}")
                    for title, t in texts]
    paths = res.save(out_dir, text_samples)
    if report:
        from ..render.report import Report

        rep = Report(model=dict(res.model), induction=res, texts=text_samples, sources=[t for _, t in texts])
        paths.append(rep.save(out_dir / "report.html"))

    if json_out:
        typer.echo(res.to_json())
    _print_summary(con, res)
    err.print(f"[green]Wrote {len(paths)} files to {out_dir}/[/]: " + ", ".join(p.name for p in paths), highlight=False)


def _print_summary(con, res) -> None:
    s = res.settings
    bos = "first token: " + s.get("bos_source", "bos" if s["bos"] else "none")
    con.print(f"[bold]{res.model['name']}[/]: {s['batch']} sequences of {s['seq_len']} random tokens x {s['repeats']} "
              f"repeats, {bos}; {s['chunk_size']} per forward pass", highlight=False)
    rises = {(e["layer"], e["head"]): e["loss_increase"] for e in res.ablation if e["kind"] == "head"}
    roles = res.roles()
    t = Table(title="Top induction heads (prefix = prefix-matching, prev = previous-token, dup = duplicate-token, "
                    "Δloss = rise in later-repeat loss when ablated)")
    for col in ("head", "induction", "prefix", "prev", "dup", "copying", "roles", "Δloss"):
        t.add_column(col, justify="left" if col in ("head", "roles") else "right", overflow="fold",
                     no_wrap=col != "roles")
    for l, h, v in res.top_heads("induction", s["top_k"]):
        sc = res.scores
        t.add_row(head_label(l, h), f"{v:.3f}", f"{sc['prefix_matching'][l, h]:.3f}", f"{sc['previous_token'][l, h]:.3f}",
                  f"{sc['duplicate_token'][l, h]:.3f}", f"{sc['copying'][l, h]:+.3f}", "+".join(roles.get((l, h), [])) or "-",
                  f"{rises[(l, h)]:+.3f}" if (l, h) in rises else "-")
    con.print(t)
    prev = ", ".join(f"{head_label(l, h)} {v:.2f}" for l, h, v in res.top_heads("previous_token", 3))
    dup = ", ".join(f"{head_label(l, h)} {v:.2f}" for l, h, v in res.top_heads("duplicate_token", 3))
    con.print(f"Previous-token heads: {prev}\nDuplicate-token heads: {dup}", highlight=False)
    con.print(f"Loss: first repeat {res.loss_first_repeat:.2f} nats, later repeats {res.loss_later_repeats:.2f} nats",
              highlight=False)
    if res.ablation:
        con.print(f"Causal check ({s['ablation']} ablation of hook_z):", highlight=False)
        for v in res.verdicts():
            con.print(f"  {v}", highlight=False, markup=False)
    con.print("[dim]Legend:[/]")
    for name, text in {**DEFINITIONS, "loss": LOSS_DEFINITION, "ablation": ABLATION_DEFINITION}.items():
        con.print(f"[dim]  {name}: {text}[/]", highlight=False)
    con.print(f"[dim]  roles: a head takes a role when its score >= "
              f"{', '.join(f'{k} {v}' for k, v in res.thresholds.items())} (change with --threshold NAME=VALUE)[/]",
              highlight=False)
