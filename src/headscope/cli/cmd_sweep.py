"""`headscope sweep`: the induction scan over many models or training checkpoints, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import BadInput
from ..models import resolve_device
from ..pipeline.sweep import plan_sweep, run_sweep
from ..render.lookup import view_of
from . import app
from ._common import (
    SCAN,
    AttentionOpt,
    BatchOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MaxMemoryOpt,
    RepeatsOpt,
    SeedOpt,
    SeqLenOpt,
    TopOpt,
    check_load,
    consoles,
    handle_errors,
    progress_enabled,
    scan_settings,
)


def _split(items: list[str] | None) -> list[str]:
    """Repeated options that may also hold comma-separated lists: ``-r step1,step2 -r step3``."""
    return [part.strip() for item in items or [] for part in item.split(",") if part.strip()]


@app.command("sweep")
@handle_errors
def sweep_cmd(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="A model to scan (repeatable): built-in alias, "
            "hub id, model directory or .gguf file. Local checkpoints: one --model per checkpoint "
            "directory (a name like step1000 or checkpoint-500 gives the step).",
        ),
    ],
    revision: Annotated[
        list[str] | None,
        typer.Option(
            "--revision",
            "-r",
            help="Hub revision (repeatable or "
            "comma-separated), e.g. Pythia's step1000,step2000: every --model is scanned at each.",
        ),
    ] = None,
    seq_len: SeqLenOpt = SCAN.seq_len,
    batch: BatchOpt = SCAN.batch,
    repeats: RepeatsOpt = SCAN.repeats,
    seed: SeedOpt = SCAN.seed,
    top: TopOpt = SCAN.top_k,
    ablate: Annotated[
        bool,
        typer.Option(
            "--ablate/--no-ablate",
            help="Also run the causal check per entry (top + 1 + 10 control draws: restarted passes each).",
        ),
    ] = False,
    max_memory: MaxMemoryOpt = SCAN.max_memory_gb,
    attention: AttentionOpt = SCAN.attention,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    device_map: DeviceMapOpt = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Who runs the entries: local (one after another "
            "in this process) or ray (one Ray task per entry, spread over a Ray cluster's GPUs or CPUs; "
            'pip install "headscope\\[ray]"). Files are written here either way.',
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="With --executor ray: the cluster to use. auto "
            "(the one `ray start` made on this machine, or RAY_ADDRESS), HOST:PORT of its head, or "
            "ray://HOST:PORT (Ray Client). Default: start a local cluster for this sweep.",
        ),
    ] = None,
    cpus_per_task: Annotated[
        float,
        typer.Option(
            "--cpus-per-task", help="With --executor ray: CPUs each entry's task asks for (and torch threads, on CPU)."
        ),
    ] = 1.0,
    gpus_per_task: Annotated[
        float,
        typer.Option(
            "--gpus-per-task",
            help="With --executor ray on CUDA: GPUs each "
            "task asks for (0.5 packs two small models on a GPU; >1 with --device-map).",
        ),
    ] = 1.0,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output directory: entries/*.json (one per finished entry), sweep.csv, sweep.json, sweep.png. "
            "A new or empty directory, or an earlier sweep's (resumed); never one holding other files.",
        ),
    ] = Path("headscope-results/sweep"),
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Recompute entries already finished in --out "
            "(default: skip them, so a rerun resumes an interrupted sweep).",
        ),
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the induction scan on each model / checkpoint and chart induction against model or training step.

    Every entry is loaded, scanned with the same random sequences and written to
    --out/entries/ the moment it finishes; the table (sweep.csv, sweep.json) is rewritten after
    each entry and the figure (sweep.png: top-head induction score, its sum over heads and the
    later-repeat loss) at the end. Run the same command again to resume: finished entries are
    skipped and failed ones retried. Exit code 1 if any entry failed. Entries whose weights
    are bit-identical (a checkpoint branch serving another's weights) are flagged
    (same_weights_as in the table).

    With --executor ray each entry is a Ray task (one GPU each on CUDA, --cpus-per-task CPUs
    otherwise) on a local cluster or the one at --address; this process still writes every
    file as the entries arrive.

    Examples:

      headscope sweep -m EleutherAI/pythia-70m -r step0,step1000,step2000,step4000,step8000

      headscope sweep -m run/checkpoint-500 -m run/checkpoint-1000 -m run/checkpoint-1500

      headscope sweep -m gpt2 -m gpt2-medium -m smollm2-135m-instruct-q4 --out family

      headscope sweep -m EleutherAI/pythia-1b -r step1000,step2000 --executor ray --address auto
    """
    con, err = consoles(json_out)
    settings = scan_settings(
        seq_len=seq_len,
        batch=batch,
        repeats=repeats,
        seed=seed,
        top=top,
        ablate=ablate,
        max_memory=max_memory,
        attention=attention,
    )
    runner = _executor(executor, address, cpus_per_task, gpus_per_task, device, err)
    # Ray's workers have their own devices: RayExecutor checks the device against the cluster
    check_load(device, device_map, dtype, device_here=runner is None)
    entries = plan_sweep(model, _split(revision))
    err.print(
        f"Sweep of {_entries(len(entries))} into {out}/ ({seq_len} tokens x {repeats} repeats, batch {batch}, "
        f"{dtype}{', with ablation' if ablate else ''})",
        highlight=False,
    )
    try:
        res = run_sweep(
            entries,
            out,
            settings=settings,
            device=device,
            dtype=dtype,
            device_map=device_map,
            rerun=overwrite,
            on_event=_on_event(err, debug),
            log=lambda s: err.print(s, highlight=False),
            progress=progress_enabled(),
            executor=runner,
        )
    except KeyboardInterrupt:
        err.print(
            f"Finished entries are kept in {out}/entries (table: {out}/sweep.csv); run the same command "
            "again to resume.",
            highlight=False,
        )
        raise
    if json_out:
        typer.echo(res.to_json())
    view_of(res).terminal(res, con)
    for r in res.rows:
        if r.get("same_weights_as"):
            err.print(
                f"[yellow]same weights:[/] {escape(r['label'])} holds exactly the weights of "
                f"{escape(r['same_weights_as'])} (sha256 {r['weights_sha256'][:12]}...)",
                highlight=False,
            )
    err.print(f"[green]Wrote[/] {', '.join(p.name for p in res.files)} and entries/ to {out}/", highlight=False)
    if not res.ok:
        err.print(
            f"[bold red]{len(res.failures)} of {_entries(len(entries))} failed[/] "
            f"({', '.join(escape(f['label']) for f in res.failures)}); finished entries are kept. "
            "Fix the cause and run the same command again: only the missing entries run.",
            highlight=False,
        )
        raise typer.Exit(1)


def _on_event(err, debug: bool):
    """What the sweep says as each entry is skipped, starts, finishes or fails."""

    def on_event(kind: str, entry, info: dict) -> None:
        n = f"[{info['index'] + 1}/{info['total']}]"
        label = escape(entry.label)
        if kind == "skip":
            err.print(f"{n} {label}: finished earlier, skipped ({_brief(info['summary'])})", highlight=False)
        elif kind == "start":
            err.print(f"{n} {label}: loading and scanning...", highlight=False)
        elif kind == "done":
            sec = info["seconds"]
            err.print(
                f"{n} {label}: {_brief(info['summary'])} [dim](load {sec['load']:.1f} s, scan {sec['scan']:.1f} s)[/]",
                highlight=False,
            )
        elif kind == "fail":
            err.print(f"{n} {label}: [bold red]failed:[/] {escape(info['error'])}", highlight=False, soft_wrap=True)
            if info.get("hint"):
                err.print(f"    [yellow]hint:[/] {escape(info['hint'])}", highlight=False, soft_wrap=True)
            if debug:
                err.print(info["traceback"], markup=False, highlight=False)

    return on_event


def _executor(name: str, address: str | None, cpus: float, gpus: float, device: str, err):
    """None for the local executor (run_sweep's default), else a RayExecutor; checks the options."""
    name = name.strip().lower()
    if name not in ("local", "ray"):
        raise BadInput(f"unknown --executor {name!r}", hint="use local or ray")
    if name == "local":
        if address:
            raise BadInput(
                "--address names a Ray cluster, but the sweep runs with --executor local", hint="add --executor ray"
            )
        return None
    if str(device).lower().split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
        resolve_device(device)  # raises its usual message for a device name it does not know
    from ..pipeline.sweep_ray import RayExecutor

    runner = RayExecutor(
        address, cpus_per_task=cpus, gpus_per_task=gpus, log=lambda s: err.print(escape(s), highlight=False)
    )
    runner.check()  # no Ray, or nothing at --address: say so before anything else happens
    return runner


def _brief(s: dict) -> str:
    return (
        f"top {s['top_head']} {s['induction_top']:.3f}, sum {s['induction_sum']:.2f}, later-repeat loss "
        f"{s['loss_later_repeats']:.2f} nats"
    )


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"
