"""The ``headscope`` command line: a thin shell over the Python API.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from ._common import STATE

app = typer.Typer(
    name="headscope",
    help="Find and explain the attention heads of transformer language models: "
    "which heads are induction heads, and what their QK circuits attend to.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headscope {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors (any command).")] = False,
) -> None:
    """headscope: induction heads and QK circuits, one command each."""
    import os

    STATE["debug"] = debug or os.environ.get("HEADSCOPE_DEBUG") == "1"  # per invocation, not sticky


#: The command modules, in the order ``headscope --help`` lists their commands: every
#: ``cli/cmd_*.py`` is here (a test checks), and each must import.
COMMANDS = (
    "cmd_models",
    "cmd_induction",
    "cmd_heads",
    "cmd_qk",
    "cmd_logits",
    "cmd_circuit",
    "cmd_report",
    "cmd_serve",
    "cmd_sweep",
    "cmd_train_toy",
)


def _register(names: tuple[str, ...] = COMMANDS) -> None:
    """Import each command module (it registers its command on :data:`app`); one that fails to import is an error."""
    import importlib

    for name in names:
        importlib.import_module(f"{__name__}.{name}")


_register()


def main() -> None:
    from ..errors import terminate_as_interrupt

    terminate_as_interrupt()
    app()
