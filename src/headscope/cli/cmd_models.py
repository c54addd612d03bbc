"""`headscope models` and `headscope fetch`: what is built in, what is cached, prepare one."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..models import BUILTINS, fetch_hub, list_cached, resolve_source
from ..models.cache import cache_dir
from ..models.loading import cache_extras, gguf_source
from . import app
from ._common import DebugOpt, JsonOpt, consoles, handle_errors


@app.command("models")
@handle_errors
def models_cmd(json_out: JsonOpt = False, debug: DebugOpt = False) -> None:
    """List the built-in model aliases and the models converted into the cache (size, path)."""
    by_folder = {b.folder: b.alias for b in BUILTINS.values()}
    # the folder keeps its first name (smollm2-135m) so a cache from before the alias changed stays valid;
    # say which alias reads it, or a user takes the folder's name for the model's
    cached = [{**c, "alias": by_folder.get(c["name"]), "gguf": gguf_source(c["name"])} for c in list_cached()]
    extras = cache_extras()
    if json_out:
        doc = {
            "cache_dir": str(cache_dir()),
            "builtin": [
                {"alias": b.alias, "description": b.description, "source": b.pypi_requirement}
                for b in BUILTINS.values()
            ],
            "cached": cached,
            "other": extras,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    out, _ = consoles(False)
    t = Table(title="Built-in models (work offline)")
    t.add_column("alias", style="bold cyan")
    t.add_column("what")
    t.add_column("cached")
    names = {c["name"] for c in cached}
    for b in BUILTINS.values():
        t.add_row(b.alias, b.description, "yes" if b.folder in names else "no (fetched on first use)")
    out.print(t)
    c = Table(title=f"Cache: {cache_dir()}")
    c.add_column("folder", style="bold")
    c.add_column("read by")
    c.add_column("size", justify="right")
    c.add_column("path")
    for item in cached:
        read_by = item["alias"] or (f"--model .../{item['gguf']}" if item["gguf"] else "--model PATH")
        c.add_row(item["name"], read_by, f"{item['bytes'] / 1e6:.0f} MB", item["path"])
    if not cached:
        c.add_row("(empty)", "", "", "")
    out.print(c)
    for e in extras:  # not models, but in the cache and on the disk: a user clearing space should see them
        s = "" if e["files"] == 1 else "s"
        out.print(f"Also in the cache: {e['name']}/ ({e['bytes'] / 1e6:.1f} MB, {e['files']} file{s}): {e['what']}.")
    out.print(
        "Any Hugging Face hub id (gpt2, EleutherAI/pythia-70m, ...), model directory or .gguf file also works "
        "with --model. Clear the cache with `rm -r " + str(cache_dir()) + "`.",
        highlight=False,
        soft_wrap=True,
    )


@app.command("fetch")
@handle_errors
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="Built-in alias, .gguf file or hub id to prepare now.")],
    debug: DebugOpt = False,
) -> None:
    """Prepare a model ahead of time so later runs start in seconds.

    A built-in alias or a .gguf file is downloaded (built-ins only) and dequantized once into
    the headscope cache; a hub id is downloaded into the Hugging Face cache (where the hub is
    reachable). A model directory needs no preparing.
    """
    _, err = consoles(False)
    src = resolve_source(name, log=lambda m: err.print(m, highlight=False, soft_wrap=True))
    path = fetch_hub(src.path) if src.kind == "hub" else src.path
    err.print(f"[green]ready:[/] {src.name} -> {path}", highlight=False, soft_wrap=True)
