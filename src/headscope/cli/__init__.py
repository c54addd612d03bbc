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


def reflow(doc: str) -> str:
    """A command's docstring as ``--help`` should print it: each prose paragraph on one line.

    typer's rich markup mode keeps a docstring's line breaks inside a paragraph, so the terminal
    broke sentences where the source wrapped them. Paragraphs are split on blank lines; one
    whose lines are all unindented prose is joined with spaces; an indented one (an example
    command) is kept as written.

    >>> reflow('''Short.
    ...
    ...     A long sentence
    ...     wrapped in the source.
    ...
    ...     Examples:
    ...
    ...       headscope induction --top 5''')
    'Short.\\n\\nA long sentence wrapped in the source.\\n\\nExamples:\\n\\n  headscope induction --top 5'
    """
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.split("\n")
        out.append(para if any(line.startswith(" ") for line in lines) else " ".join(x.strip() for x in lines))
    return "\n\n".join(out)


def _register(names: tuple[str, ...] = COMMANDS) -> None:
    """Import each command module (it registers its command on :data:`app`); one that fails to import is an error.

    Each command's help is its docstring, reflowed (:func:`reflow`)."""
    import importlib

    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow(command.callback.__doc__)


_register()


#: The width ``--help`` is laid out at when it is piped (to ``less``, ``grep``, a file). rich's
#: default there is 80 columns, at which typer's option table leaves ``heads --help`` about 20
#: columns of help and cuts its long defaults to "…". A terminal keeps its own width, and
#: ``TERMINAL_WIDTH`` or ``COLUMNS`` set by the user still win.
PIPED_HELP_WIDTH = 100


def piped_help_width(stdout=None, environ=None) -> int | None:
    """The help width to force for this process, or None to leave typer's choice.

    >>> import io
    >>> piped_help_width(stdout=io.StringIO(), environ={})
    100
    >>> piped_help_width(stdout=io.StringIO(), environ={"COLUMNS": "60"}) is None
    True
    """
    import os
    import sys

    stdout = sys.stdout if stdout is None else stdout
    environ = os.environ if environ is None else environ
    if environ.get("TERMINAL_WIDTH") or environ.get("COLUMNS"):
        return None
    isatty = getattr(stdout, "isatty", None)
    return None if isatty is not None and isatty() else PIPED_HELP_WIDTH


def main() -> None:
    from typer import rich_utils

    from ..errors import terminate_as_interrupt

    width = piped_help_width()
    if width is not None and rich_utils.MAX_WIDTH is None:
        rich_utils.MAX_WIDTH = width
    terminate_as_interrupt()
    app()
