"""`headscope circuit`: which heads feed which, measured by activation and path patching."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..circuits.eap import DEFAULT_IG_STEPS
from ..circuits.tasks import METRIC_DEFINITIONS, METRICS, PAIRS_FORMAT, induction_task, load_pairs, read_pairs
from ..errors import BadInput
from ..pipeline.circuit_analysis import CircuitSettings, analyze_circuit, check_examples
from ..pipeline.files import circuit_files
from ..progress import Progress
from ..render.lookup import view_of
from ..render.page import Report
from ..settings import DEFAULT_MEMORY_GB
from . import app
from ._common import (
    DEFAULT,
    SCAN,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MaxMemoryOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    ReportOpt,
    SeedOpt,
    SeqLenOpt,
    consoles,
    handle_errors,
    load,
    load_settings,
    progress_enabled,
    result_dir,
    say_notes,
    say_written,
    written_summary,
)

_METRICS = "; ".join(f"{k}: {v}" for k, v in METRIC_DEFINITIONS.items())


def _split(items: list[str] | None) -> list[str] | None:
    out = [x.strip() for item in items or [] for x in item.split(",") if x.strip()]
    return out or None


@app.command("circuit")
@handle_errors
def circuit_cmd(
    model: ModelOpt = DEFAULT,
    pairs: Annotated[
        Optional[Path],
        typer.Option("--pairs", help=f"Your own task instead of the induction task: {PAIRS_FORMAT}."),
    ] = None,
    metric: Annotated[
        str, typer.Option("--metric", help=f"What is measured on the logits. {_METRICS}.")
    ] = "logit_diff",
    examples: Annotated[int, typer.Option("--examples", help="Induction task: how many random sequences.")] = 10,
    seq_len: SeqLenOpt = 50,
    seed: SeedOpt = SCAN.seed,
    per_position: Annotated[
        bool,
        typer.Option(
            "--per-position",
            help="Also patch one position at a time, besides the whole sequence (one patch per component and "
            "position: n_tokens times the patches): activation_patching_by_position.csv and "
            "figures/patching_<direction>_by_position.png.",
        ),
    ] = False,
    direction: Annotated[
        str,
        typer.Option(
            "--direction",
            help="Activation patching: denoise (clean activation into the corrupted run), noise (corrupted "
            "into the clean run) or both.",
        ),
    ] = "both",
    senders: Annotated[
        Optional[list[str]],
        typer.Option("--senders", help="Path patching senders, e.g. L0H1,L5H3 (default: every earlier head)."),
    ] = None,
    receivers: Annotated[
        Optional[list[str]],
        typer.Option(
            "--receivers",
            help="Path patching receivers: HEAD.q, HEAD.k, HEAD.v, HEAD.qkv or logits, e.g. L18H6.k,logits. "
            "Default: the top induction heads' k and q, and each top induction head -> logits directly and "
            "through each later head (a pairs task: every head -> logits).",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="How many top induction heads are the default receivers.")] = 2,
    steps: Annotated[
        Optional[list[str]],
        typer.Option(
            "--steps",
            help="Which steps to run, in order: activation, paths, edges (default: activation,paths). "
            "edges = edge attribution over every edge, its circuit's faithfulness by patching, rank agreement "
            "and two-seed overlap (SmolLM2, 10 x 101 tokens: a few minutes on a CPU). A model edges cannot measure "
            "(OPT, GPT-J, Gemma 2: docs/circuits.md) is refused before any step runs.",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="Edge attribution: eap (Syed et al. 2023) or eap-ig (Hanna et al. 2024).")
    ] = "eap-ig",
    ig_steps: Annotated[
        int, typer.Option("--ig-steps", help="EAP-IG: integration steps from the corrupted to the clean input.")
    ] = DEFAULT_IG_STEPS,
    top_edges: Annotated[
        int, typer.Option("--top-edges", help="The circuit: this many edges with the largest |attribution|.")
    ] = 20,
    edge_sample: Annotated[
        int,
        typer.Option("--edge-sample", help="Edges patched one at a time to check the attribution's ranking (0: skip)."),
    ] = 50,
    max_memory: MaxMemoryOpt = DEFAULT_MEMORY_GB,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Write JSON and CSVs only.")] = False,
    report: ReportOpt = False,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "float32",
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Measure how heads work together by patching: each head and MLP alone, and sender -> receiver paths.

    Every head and MLP patched alone (activation patching, both directions), and chosen sender ->
    receiver paths (path patching), each number normalised (1 = clean, 0 = corrupted) with a 95%
    bootstrap interval over the examples.

    The induction task (default): clean [BOS] r r, corrupted [BOS] r' r (the first repeat replaced
    by fresh random tokens). Writes circuit.json, CSVs and PNGs to --out.

    Example: headscope circuit --examples 10 --seq-len 50 --receivers L18H6.k --direction denoise
    """
    con, err = consoles(json_out)
    if metric not in METRICS:
        raise BadInput(f"unknown --metric {metric!r}", hint=f"use one of {', '.join(METRICS)}")
    settings = CircuitSettings(
        direction=direction,
        per_position=per_position,
        senders=_split(senders),
        receivers=_split(receivers),
        top=top,
        max_memory_gb=max_memory,
        method=method,
        ig_steps=ig_steps,
        top_edges=top_edges,
        edge_sample=edge_sample,
    )
    if steps:
        settings.steps = tuple(_split(steps) or ())
    settings.check()
    if pairs is None:
        check_examples(examples)
    else:  # read, decoded and parsed now, before the model loads (tokenized once it has)
        read_pairs(pairs)
    where = load_settings(model, device, device_map, dtype)
    t0 = time.perf_counter()
    with result_dir("circuit", out, model, overwrite) as rd:
        m = load(err, where)
        settings.check_model_heads(m.n_layers, m.n_heads, m.name)
        task = load_pairs(m, pairs, metric) if pairs else induction_task(m, examples, seq_len, seed, metric)
        prog = Progress(progress_enabled(), console=err, lines=True)
        with prog.running():
            a = analyze_circuit(m, task, settings, progress=prog)
        a.timings["total_s"] = time.perf_counter() - t0
        with err.status("Writing results..."):
            circuit_files(rd, a, figures=not no_figures)
            if report:
                rd.write_text("report.html", Report(dict(a.model), [a]).to_html())
        paths = rd.commit()
    if json_out:
        typer.echo(a.to_json())
    say_notes(err, a.notes)
    view_of(a).terminal(a, con)
    say_written(err, rd.target, paths, written_summary(paths), a.timings["total_s"])
