"""`headscope train-toy`: train a small attention-only transformer here and watch an induction head form."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..progress import Progress
from . import app
from ._common import DebugOpt, JsonOpt, consoles, handle_errors, progress_enabled

TRAINING_OPTIONS = ("steps", "every", "seed", "lr", "batch", "layers", "heads", "d_model", "vocab", "n_ctx", "block")
"""The options that shape training: read from the run itself under --analyse-only."""


@app.command("train-toy")
@handle_errors
def train_toy_cmd(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Run directory: run.json, train_log.csv, checkpoints/stepNNNN/ "
            "(Hugging Face model directories), sweep/ and phase/ (figures).",
        ),
    ] = Path("headscope-results/toy"),
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 1500,
    every: Annotated[
        int,
        typer.Option("--every", help="Save a checkpoint every N steps (step 0 and the last step are always saved)."),
    ] = 50,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the weights and the data: the same seed gives the same curves.")
    ] = 0,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 3e-3,
    batch: Annotated[int, typer.Option("--batch", help="Sequences per step.")] = 64,
    layers: Annotated[int, typer.Option("--layers", help="Attention layers.")] = 2,
    heads: Annotated[int, typer.Option("--heads", help="Heads per layer.")] = 4,
    d_model: Annotated[int, typer.Option("--d-model", help="Residual stream width.")] = 64,
    vocab: Annotated[int, typer.Option("--vocab", help="Ordinary tokens t0..t{vocab-1} (plus <bos>, <unk>).")] = 64,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Tokens per training sequence, BOS included.")] = 64,
    block: Annotated[
        int, typer.Option("--block", help="Longest copied span (spans of 2..block tokens, copied 3 to n_ctx-3 back).")
    ] = 12,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", help="torch CPU threads (1 is fastest for a model this small, and on a shared machine by far)."
        ),
    ] = 1,
    analyse: Annotated[
        bool,
        typer.Option(
            "--analyse/--no-analyse",
            help="After training, sweep the checkpoints and draw the phase change (sweep/, phase/).",
        ),
    ] = True,
    analyse_only: Annotated[
        bool,
        typer.Option(
            "--analyse-only",
            help="Do not train: (re)run the sweep and the "
            "phase analysis of the run already in --out (resumes an interrupted sweep).",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier train-toy run in --out (a directory holding anything else is never touched).",
        ),
    ] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train a 2-layer attention-only transformer on the CPU and watch an induction head form.

    The data are random tokens in which spans of 2-12 tokens are copied from 3 to 61 tokens back
    (the distance uniform), so only content-based induction predicts the copies, at every distance
    (see docs/toy.md: on plain repeats r + r a positional shortcut wins instead). A live line shows the step, the training loss, the later-repeat
    loss and the best induction score on the scan's own sequences. Checkpoints are saved every
    --every steps as Hugging Face model directories (GPT-2 layout, word-level tokenizer) that
    every headscope command loads. Then the checkpoints are swept (--out/sweep) and the phase
    change drawn (--out/phase/phase.png, phase_heatmaps.png): losses, best induction score,
    previous-token score in layer 0 and K-composition between the two heads against step,
    with the window where the later-repeat loss drops detected and shaded.

    The run is trained beside --out and moved into place only when complete: Ctrl-C, SIGTERM or
    a full disk leave an earlier run as it was.

    Exit codes: 2 bad option, 4 --out holds another run or other files, or another run is writing
    there (nothing is written), 5 --out cannot be written (a file, read-only, full), 130 Ctrl-C,
    143 SIGTERM.

    Examples:

      headscope train-toy --out toy-run

      headscope train-toy --out toy-run --steps 3000 --every 100 --seed 1 --overwrite

      headscope induction --model toy-run/checkpoints/step1500 --seq-len 24
    """
    from ..render.lookup import view_of
    from ..toy.phase_analysis import analyse_run, save_phase
    from ..toy.train import ToyConfig, check_run_dir, read_run, train_toy

    con, err = consoles(json_out)
    from ..errors import BadInput
    from ..pipeline.outputs import hold_out

    given = [
        "--" + n.replace("_", "-")
        for n in TRAINING_OPTIONS
        if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"  # typer may carry its own click
    ]
    if analyse_only and given:
        raise BadInput(
            f"--analyse-only trains nothing, so {', '.join(given)} would be ignored",
            hint="drop them to analyse the run in --out as it was trained, or drop --analyse-only to train a new run",
        )
    if analyse_only and not analyse:
        raise BadInput(
            "--analyse-only and --no-analyse contradict each other: one runs only the analysis, the other skips it",
            hint="drop one: --analyse-only to analyse the run in --out, --no-analyse to train without analysing",
        )

    with hold_out(out):  # one run writes to --out at a time, from the checks through training and analysis
        run_doc = None
        if analyse_only:
            run_doc = read_run(out)
            if run_doc is None:
                raise BadInput(
                    f"--analyse-only: {out} holds no train-toy run",
                    hint="train one first (without --analyse-only), or point --out at the run directory",
                )
        else:
            config = ToyConfig(
                steps=steps,
                every=every,
                seed=seed,
                lr=lr,
                batch=batch,
                n_layers=layers,
                n_heads=heads,
                d_model=d_model,
                vocab=vocab,
                n_ctx=n_ctx,
                block=block,
            ).check()
            check_run_dir(out, overwrite)  # refused before it says it is training (train_toy checks again)
            err.print(
                f"Training a {layers}-layer attention-only transformer ({heads} heads, d_model {d_model}, vocab "
                f"{vocab}) for {steps} steps, seed {seed}, checkpoints every {every} into {out}/",
                highlight=False,
            )
            with _LiveLine(err, steps, every, enabled=progress_enabled()) as live:
                run = train_toy(out, config, overwrite=overwrite, threads=threads, on_log=live.update)
            run_doc = run.to_dict()
            err.print(
                f"Trained in {run.seconds['total']:.1f} s ({threads} thread{'s' if threads > 1 else ''}); "
                f"{len(run.checkpoints)} checkpoints in {out}/checkpoints/",
                highlight=False,
            )
        phase = None
        if analyse or analyse_only:
            err.print(f"Sweeping {len(run_doc['checkpoints'])} checkpoints into {out}/sweep ...", highlight=False)

            def on_event(kind, entry, info):
                if kind == "fail":
                    err.print(f"  {escape(entry.label)}: [red]failed:[/] {escape(info['error'])}", highlight=False)

            t0 = time.perf_counter()
            phase = analyse_run(out, on_event=on_event, progress=progress_enabled(), threads=threads)
            files = save_phase(phase, out / "phase")
            err.print(
                f"[green]Wrote[/] {', '.join(p.name for p in files)} to {out}/phase/ (sweep, composition and "
                f"figures in {time.perf_counter() - t0:.1f} s)",
                highlight=False,
            )
            view_of(phase).terminal(phase, con)
        if json_out:
            from ..jsonsafe import dumps

            typer.echo(dumps({"run": run_doc, "phase": None if phase is None else phase.to_dict()}, indent=2))


class _LiveLine:
    """A rich progress bar whose description is the latest log row; plain lines at checkpoints when not a TTY."""

    def __init__(self, console, steps: int, every: int, enabled: bool):
        self.console, self.steps, self.every = console, steps, every
        self.progress = Progress(enabled, console=console)
        self._running = contextlib.ExitStack()

    def __enter__(self):
        self._running.enter_context(self.progress.running())
        self.progress.task("steps", self.steps)
        return self

    def __exit__(self, *exc):
        return self._running.__exit__(*exc)

    @staticmethod
    def text(row: dict) -> str:
        loss = "  -  " if row["loss"] != row["loss"] else f"{row['loss']:.3f}"  # NaN at step 0
        return (
            f"loss {loss}  later-repeat {row['loss_later_repeats']:.3f}  induction "
            f"{row['induction_best']:.2f} ({row['induction_head']})  prev-token "
            f"{row['previous_token_best']:.2f} ({row['previous_token_head']})"
        )

    def update(self, row: dict) -> None:
        if self.progress.enabled:
            self.progress.update("steps", row["step"], description=f"step {row['step']}  {self.text(row)}")
        elif row["step"] % self.every == 0 or row["step"] == self.steps:
            self.console.print(
                f"step {row['step']:>6}  {self.text(row)}  [{row['seconds']:.0f} s]", highlight=False, soft_wrap=True
            )
