"""What every command shares, declared once: option types with one help text each, the error
handler, consoles, progress.

A command lists the options it takes by these names; an option's spelling, default handling and
help live here only.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BadInput, HeadscopeError
from ..head_labels import is_head_spec
from ..kinds.documents import FILE_IS_A_DIRECTORY_HINT
from ..models import DEFAULT_MODEL, encode_texts
from ..models.inputs import read_text_file
from ..scan import check_settings
from ..scores import default_thresholds
from ..settings import LoadSettings, ScanSettings, check_thresholds

#: Global state set by the root callback (``headscope --debug ...``).
STATE = {"debug": os.environ.get("HEADSCOPE_DEBUG") == "1"}

DEFAULT = DEFAULT_MODEL
#: The scan options' defaults are ScanSettings's own: a command declares ``seq_len: SeqLenOpt = SCAN.seq_len``.
SCAN = ScanSettings()


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _positive(value: float | None) -> float | None:
    _finite(value)
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be more than 0 (got {value})")
    return value


_THRESHOLDS = ", ".join(f"{k}={v}" for k, v in default_thresholds().items())

# --- the model and where it runs --------------------------------------------------------------
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Built-in alias (see `headscope models`), hub id, model directory or .gguf file."
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N. auto = CUDA when available.")]
DeviceMapOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device-map",
        help="Spread the model over several GPUs with accelerate: auto, balanced, balanced_low_0 or "
        "sequential; replaces --device. See docs/scale.md.",
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype", help="Weights' dtype: float32, bfloat16 or float16. Scores are always computed in float32."
    ),
]

# --- inputs -----------------------------------------------------------------------------------
TextOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--text",
        "-t",
        help="Your own text (repeatable). Cut to the analysis window, first tokens kept (said in the output).",
    ),
]
FileOpt = Annotated[
    Optional[list[Path]], typer.Option("--file", "-f", help="A UTF-8 text file (repeatable), like --text.")
]

MaxTokensOpt = Annotated[
    int,
    typer.Option(
        "--max-tokens",
        help="The analysis window: each text is cut to this many tokens (first token included; never past the "
        "model's context), and the cut is reported.",
    ),
]

# --- the repeated-token scan ------------------------------------------------------------------
SeqLenOpt = Annotated[int, typer.Option("--seq-len", help="Length of the random block r that is repeated.")]
BatchOpt = Annotated[int, typer.Option("--batch", help="Number of random sequences.")]
RepeatsOpt = Annotated[int, typer.Option("--repeats", help="How many times r appears (>= 2; Olsson et al. use 4).")]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed for drawing r (the same sequences for every model that shares a tokenizer).")
]
TopOpt = Annotated[int, typer.Option("--top", help="How many top induction heads to show and ablate.")]
AblationOpt = Annotated[
    str,
    typer.Option(
        "--ablation",
        help="mean (head output -> its mean), zero, or resample (-> its output on another sequence of the batch).",
    ),
]
NoAblateOpt = Annotated[bool, typer.Option("--no-ablate", help="Skip the causal check (faster).")]
ControlsOpt = Annotated[
    int,
    typer.Option(
        "--controls",
        help="Random-control draws of the causal check: each ablates as many random other heads as --top; "
        "the median and the range (lowest to highest) of the draws are reported.",
    ),
]
ThresholdOpt = Annotated[
    Optional[list[str]],
    typer.Option("--threshold", help=f"Role threshold NAME=VALUE (repeatable); defaults {_THRESHOLDS}."),
]
MaxMemoryOpt = Annotated[
    float,
    typer.Option(
        "--max-memory",
        callback=_positive,
        help="GiB budget for one chunk's attention + logits; sets how many sequences go through at once.",
    ),
]
QKMemoryOpt = Annotated[
    float,
    typer.Option(
        "--max-memory",
        callback=_positive,
        help="GiB the QK analysis may hold, estimated from the texts' lengths "
        "before it starts; a larger need is refused with the estimate and the --max-tokens that fits.",
    ),
]
AttentionOpt = Annotated[
    str,
    typer.Option(
        "--attention",
        help="How the scan reads attention: fused (a fused kernel plus the few entries each score "
        "reads, computed from queries, keys and the kernel's row logsumexp; no n x n pattern, memory linear in the "
        "sequence), eager (full patterns from hook_pattern), or auto = fused wherever the model can be routed so. "
        "Same scores within 1e-5.",
    ),
]


# --- outputs ----------------------------------------------------------------------------------
OutOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--out",
        "-o",
        help="Output directory (default: headscope-results/COMMAND-MODEL). Written all at once: an "
        "interrupted run leaves the earlier results as they were.",
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace earlier results in --out instead of refusing.")
]
ReportOpt = Annotated[
    bool,
    typer.Option(
        "--report",
        help="Also write report.html: the results on one self-contained, interactive page that works "
        "offline (see `headscope report`).",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the machine-readable result to stdout; everything else goes to stderr.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


#: Columns of a table written to a pipe or a file (rich's default there is 80, which cut numbers to "+…").
PIPE_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal; :data:`PIPE_WIDTH` where the output is not one and COLUMNS is unset."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def consoles(json_mode: bool) -> tuple[Console, Console]:
    """(out, err): with --json, human output goes to stderr so stdout is pure JSON."""
    err = _console(stderr=True)
    return (err if json_mode else _console()), err


def handle_errors(fn: Callable) -> Callable:
    """Print HeadscopeError as a short message with its hint and exit non-zero; no traceback unless --debug.

    With --debug the traceback comes first and the exit code stays the error's, so a script that
    checks codes behaves the same while debugging. Ctrl-C always exits 130 (what a shell reports
    for SIGINT).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = STATE["debug"] or kwargs.get("debug", False)
        try:
            from ._numbers import check_numbers, command_name

            # every numeric option within its declared range, before anything loads
            check_numbers(command_name(fn), kwargs)
            return fn(*args, **kwargs)
        except HeadscopeError as exc:
            if debug:
                import traceback

                traceback.print_exc()
            err = Console(stderr=True)
            # soft_wrap: never break a path or a command in the hint across lines.
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            if exc.hint:
                err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            from ..errors import Terminated

            Console(stderr=True).print(
                "[red]interrupted[/]: nothing half-written was left; earlier results are as they were"
            )
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None

    return wrapper


def at_least(option: str, value: int, minimum: int, hint: str | None = None) -> None:
    """Refuse ``option`` below ``minimum`` before anything loads."""
    if value < minimum:
        raise BadInput(f"{option} must be at least {minimum} (got {value})", hint=hint)


def default_out(command: str, model: str) -> Path:
    """``headscope-results/<command>-<model>``."""
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name or model)
    return Path("headscope-results") / f"{command}-{keep.strip('-.') or 'model'}"


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    """``["induction=0.5", ...]`` -> dict; names, values and ranges checked by :func:`headscope.settings.check_thresholds`."""
    known = default_thresholds()
    out: dict[str, float | str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise BadInput(f"bad --threshold {item!r}", hint=f"use NAME=VALUE with NAME one of: {', '.join(known)}")
        if name in out:  # the last would win without a word
            raise BadInput(
                f"--threshold {name} is given twice ({out[name]} and {value.strip()})",
                hint=f"give each role's threshold once, e.g. --threshold {name}={value.strip()}",
            )
        out[name] = value.strip()
    try:
        return check_thresholds(out)
    except BadInput as e:
        raise BadInput(f"bad --threshold: {e.message}", hint=e.hint) from None


def read_texts(texts: list[str] | None, files: list[Path] | None) -> list[tuple[str, str]]:
    """``[(title, text)]`` from repeated --text and --file options, each checked non-empty and UTF-8."""
    out: list[tuple[str, str]] = []
    for i, t in enumerate(texts or [], 1):
        if not t.strip():
            what = "is empty" if not t else "holds only whitespace"
            raise BadInput(f"--text number {i} {what}", hint="give some text, ideally one that repeats itself")
        out.append((f"--text {i}", t))
    for f in files or []:
        path = Path(f)
        text = read_text_file(path, "--file", directory_hint=FILE_IS_A_DIRECTORY_HINT)
        if not text.strip():
            what = "is empty" if not text else "holds only whitespace"
            raise BadInput(f"--file {path} {what}", hint="give a file with some text in it")
        out.append((path.name, text))
    return out


def titled_sequences(model, texts: list[tuple[str, str]], max_tokens: int | None) -> list | None:
    """:func:`read_texts`' ``[(title, text)]`` encoded for ``model``, each named by its option
    (``--text 1``) or its file, as ``induction`` and ``report`` name them; None for the samples."""
    if not texts:
        return None
    return encode_texts(
        model,
        [t for _, t in texts],
        max_tokens=max_tokens,
        titles=[n for n, _ in texts],
        limit_name=f"--max-tokens {max_tokens}",
    )


def scan_settings(
    *,
    seq_len: int,
    batch: int,
    repeats: int,
    seed: int,
    top: int = SCAN.top_k,
    ablation: str = SCAN.ablation,
    ablate: bool = SCAN.ablate,
    threshold: list[str] | None = None,
    max_memory: float = SCAN.max_memory_gb,
    attention: str = SCAN.attention,
    controls: int = SCAN.controls,
) -> ScanSettings:
    """The scan's settings from a command's options, checked before anything loads (the one place they are made)."""
    settings = ScanSettings(
        seq_len=seq_len,
        batch=batch,
        repeats=repeats,
        seed=seed,
        top_k=top,
        ablate=ablate,
        ablation=ablation,
        thresholds=parse_thresholds(threshold),
        attention=attention,
        max_memory_gb=max_memory,
        controls=controls,
    )
    check_settings(seq_len, batch, repeats, True, None)  # the model's context is checked once it is loaded
    return settings.check()


def check_load(device: str, device_map: str | None, dtype: str, *, device_here: bool = True) -> None:
    """Check --dtype, and --device / --device-map (unless the model loads on another machine), before anything loads."""
    from ..models import resolve_device, resolve_dtype

    resolve_dtype(dtype)
    if not device_here:
        return
    if device_map is None:
        resolve_device(device)
        return
    valid = ("auto", "balanced", "balanced_low_0", "sequential")
    if device_map not in valid:
        raise BadInput(f"unknown --device-map {device_map!r}", hint=f"use one of: {', '.join(valid)}")


def load_settings(
    model: str, device: str, device_map: str | None, dtype: str, revision: str | None = None
) -> LoadSettings:
    """Where and how the model loads, checked before anything loads (:func:`check_load`)."""
    check_load(device, device_map, dtype)
    return LoadSettings(model=model, device=device, device_map=device_map, dtype=dtype, revision=revision)


def check_heads(specs: list[str] | None) -> None:
    """Refuse a malformed --head (``L5H1`` or ``5.1``, repeatable or comma-separated) before anything loads."""
    for spec in specs or []:
        for part in spec.split(","):
            if part.strip() and not is_head_spec(part):
                raise BadInput(
                    f"malformed head {part!r}: expected L<layer>H<head> or <layer>.<head>, e.g. L5H1 or 5.1",
                    hint="e.g. --head L5H1 --head 6.9",
                )


def check_tokens(tokens: list[str] | None) -> None:
    """Refuse an empty --token before anything loads (whether each is one token is checked on the tokenizer)."""
    for t in tokens or []:
        if t == "":
            raise BadInput("--token '' is empty", hint="give a single token, e.g. --token ' cat'")


def load(err: Console, where: LoadSettings):
    """Load the model ``where`` names, with a status line; say what was loaded."""
    from ..models import load_model

    with err.status(f"Loading {where.model}..."):
        m = load_model(
            where.model,
            device=where.device,
            dtype=where.dtype,
            device_map=where.device_map,
            revision=where.revision,
            log=lambda s: err.print(s, highlight=False),
        )
    kv = getattr(m.cfg, "n_key_value_heads", None) or m.cfg.n_heads
    err.print(
        f"Loaded {where.model}: {m.n_layers} layers x {m.n_heads} heads"
        + (f" ({kv} key/value heads)" if kv != m.n_heads else "")
        + f" on {m.cfg.device}",
        highlight=False,
    )
    if where.device_map is not None and str(m.cfg.device) == "cpu":
        say_notes(err, [f"--device-map {where.device_map} found no GPU: the model runs on the CPU, as without it"])
    return m


def result_dir(command: str, out: Path | None, model: str, overwrite: bool):
    """``command``'s result directory (--out, default ``headscope-results/COMMAND-MODEL``), written all at once."""
    from ..pipeline.outputs import ResultDir

    return ResultDir.open(out or default_out(command, model), command=command, overwrite=overwrite)


def say_stage(err: Console) -> Callable[[str], None]:
    """``say(stage)``: a dim ``... stage`` line as each step of a long analysis starts."""
    return lambda stage: err.print(f"[dim]... {stage}[/]", highlight=False)


def say_notes(err: Console, notes) -> None:
    """Each note once, in order, as a yellow ``note:`` line."""
    for note in dict.fromkeys(notes):
        err.print(f"[yellow]note:[/] {escape(str(note))}", highlight=False)


def say_written(err: Console, target: Path, paths: list[Path], what: str | None = None, seconds: float | None = None):
    """The closing line: how many files went where (``what``: a summary instead of every name), and how long."""
    err.print(
        f"[green]Wrote {len(paths)} file{'s' if len(paths) != 1 else ''} to {target}/[/]"
        + (f" ({what})" if what else ": " + ", ".join(p.name for p in paths))
        + (f" in {seconds:.0f} s" if seconds is not None else ""),
        highlight=False,
    )


def written_summary(paths: list[Path]) -> str:
    """What was written, by name, figures counted: ``circuit.json, path_patching.csv, 3 figures (figures/*.png)``.

    >>> written_summary([Path("o/qk.json"), Path("o/report.html"), Path("o/figures/a.png"), Path("o/figures/b.png")])
    'qk.json, report.html, 2 figures (figures/*.png)'
    """
    names = [p.name for p in paths if p.parent.name != "figures"]
    figures = len(paths) - len(names)
    return ", ".join(names + ([f"{figures} figure{'s' if figures != 1 else ''} (figures/*.png)"] if figures else []))


def progress_enabled() -> bool:
    return sys.stderr.isatty() or os.environ.get("HEADSCOPE_PROGRESS") == "1"
