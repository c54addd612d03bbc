"""Pieces every command shares: options, the error handler, consoles."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import HeadscopeError, OutputExists
from ..models import DEFAULT_MODEL

#: Global state set by the root callback (``headscope --debug ...``).
STATE = {"debug": os.environ.get("HEADSCOPE_DEBUG") == "1"}

ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Built-in alias (see `headscope models`), hub id, model directory or .gguf file."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N. auto = CUDA when available.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Weights' dtype: float32, bfloat16 or float16. Scores are always computed in float32.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the machine-readable result to stdout; everything else goes to stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace earlier results in --out instead of refusing.")]

DEFAULT = DEFAULT_MODEL


def consoles(json_mode: bool) -> tuple[Console, Console]:
    """(out, err): with --json, human output goes to stderr so stdout is pure JSON."""
    err = Console(stderr=True)
    return (err if json_mode else Console()), err


def handle_errors(fn: Callable) -> Callable:
    """Print HeadscopeError as a short message with its hint and exit non-zero; no traceback unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = STATE["debug"] or kwargs.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except HeadscopeError as exc:
            if debug:
                raise
            err = Console(stderr=True)
            # soft_wrap: never break a path or a command in the hint across lines.
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            if exc.hint:
                err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            Console(stderr=True).print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def check_out_dir(out: Path, names: list[str], overwrite: bool) -> Path:
    """Refuse to overwrite any of ``names`` in ``out`` unless ``overwrite``; create ``out``."""
    if out.exists() and not out.is_dir():
        raise OutputExists(f"--out {out} exists and is not a directory", hint="choose another --out")
    clashes = [n for n in names if (out / n).exists()]
    if clashes and not overwrite:
        shown = ", ".join(clashes[:4]) + (" ..." if len(clashes) > 4 else "")
        raise OutputExists(
            f"{out} already holds results ({shown}); nothing was written",
            hint="pass --overwrite to replace them, or choose another --out",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def progress_enabled() -> bool:
    return sys.stderr.isatty() or os.environ.get("HEADSCOPE_PROGRESS") == "1"
