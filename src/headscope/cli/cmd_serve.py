"""`headscope serve`: the live explorer, one local page over a model loaded once."""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer

from . import app
from ._common import (
    DEFAULT,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    consoles,
    handle_errors,
    load,
    load_settings,
)


@app.command("serve")
@handle_errors
def serve_cmd(
    model: ModelOpt = DEFAULT,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind. Anything but 127.0.0.1/localhost needs --expose.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    expose: Annotated[
        bool,
        typer.Option(
            "--expose",
            help="Allow binding a non-loopback --host; the server then prints a token every request must carry.",
        ),
    ] = False,
    max_tokens: Annotated[
        int,
        typer.Option(
            "--max-tokens",
            help="Longest text analysed (tokens, first token included); longer texts are cut, and the page says so.",
        ),
    ] = 1024,
    max_chars: Annotated[
        int, typer.Option("--max-chars", help="Longest text accepted (characters); longer ones are refused (413).")
    ] = 50_000,
    queue: Annotated[int, typer.Option("--queue", help="Requests queued or running at once; more get 503.")] = 8,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open the page in a browser.")] = False,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "float32",
    debug: DebugOpt = False,
) -> None:
    """Start the live explorer: type a text, click a head, see its pattern, what its score is made of (QK) and what it writes.

    The model loads once; the page works with no network (every asset is in the package). It
    binds 127.0.0.1 unless --host and --expose say otherwise.

    Example: headscope serve --model smollm2-135m-instruct-q4
    """
    from ..errors import BadInput
    from ..explorer.app import LOOPBACK, ServeRun

    _, err = consoles(False)
    if host not in LOOPBACK and not expose:
        raise BadInput(
            f"--host {host} would let other machines reach the explorer",
            hint="pass --expose as well (a token is then required), or keep the default 127.0.0.1",
        )
    run = ServeRun()
    # Ctrl-C or SIGTERM is how a server stops, and it writes no results: it says what stopping it did (handled
    # here, so handle_errors's line for a command that writes results is not said); exit 130 or 143 as a shell has it
    try:
        _serve(err, run, model, host, port, expose, max_tokens, max_chars, queue, no_browser, device, device_map, dtype)
    except KeyboardInterrupt as exc:
        from ..errors import Terminated

        err.print(run.stopped(), highlight=False, soft_wrap=True, markup=False)
        code = 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        if run.unanswered:  # a second Ctrl-C: exit now, not when the computation it cut short ends in its thread
            err.file.flush()
            os._exit(code)
        raise typer.Exit(code) from None


def _serve(err, run, model, host, port, expose, max_tokens, max_chars, queue, no_browser, device, device_map, dtype):
    """Bind, load, prepare and serve until stopped (``run`` records where it answered and what the stop left)."""
    from ..explorer.app import Limits, bind, serve
    from ..explorer.engine import Explorer

    # the address first: a port another program holds fails now, not after the model has loaded
    with bind(host, port) as sock:
        m = load(err, load_settings(model, device, device_map, dtype))
        err.print(
            "Preparing the explorer: scoring every head on repeated random tokens, once (the address follows)",
            highlight=False,
            soft_wrap=True,
        )
        explorer = Explorer(m, max_tokens=max_tokens)
        with err.status("Scoring the model on repeated random tokens..."):
            explorer.scan()
        serve(
            explorer,
            host,
            port,
            expose=expose,
            open_browser=not no_browser,
            say=lambda s: err.print(s, highlight=False, soft_wrap=True),  # the address never broken
            limits=Limits(max_chars=max_chars),
            max_waiting=queue,
            sock=sock,
            run=run,
        )
