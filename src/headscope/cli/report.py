"""`headscope report`: everything headscope finds about a model, on one self-contained HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import BadInput, OutputExists
from ..models import load_model, resolve_device, resolve_dtype
from ..render.report import build_report
from ..scan.result import DEFAULT_THRESHOLDS
from ..scan.sequences import check_settings
from . import app
from ._common import DEFAULT, DebugOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, OverwriteOpt, consoles, handle_errors
from ._inputs import parse_thresholds, read_texts, slug


def check_out_file(out: Path, overwrite: bool) -> Path:
    """Refuse to replace an existing ``out`` unless ``overwrite``; create its folder."""
    if out.exists() and (out.is_dir() or not overwrite):
        raise OutputExists(f"{out} already exists; nothing was written",
                           hint="pass --overwrite to replace it, or choose another --out" if not out.is_dir()
                           else "--out names the HTML file to write, e.g. --out report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@app.command("report")
@handle_errors
def report_cmd(
    model: ModelOpt = DEFAULT,
    text: Annotated[list[str] | None, typer.Option("--text", help="Your own text (repeatable): attention views and QK "
                    "analysis run on it. Default: three built-in sample texts.")] = None,
    file: Annotated[list[Path] | None, typer.Option("--file", help="A UTF-8 text file (repeatable), like --text.")] \
        = None,
    out: Annotated[Path | None, typer.Option("--out", help="The HTML file to write "
                   "(default: headscope-results/report-MODEL.html).")] = None,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Length of the random block r that is repeated.")] = 50,
    batch: Annotated[int, typer.Option("--batch", help="Number of random sequences.")] = 10,
    repeats: Annotated[int, typer.Option("--repeats", help="How many times r appears (>= 2).")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed for drawing r.")] = 0,
    top: Annotated[int, typer.Option("--top", help="How many top induction heads to show and ablate.")] = 5,
    ablation: Annotated[str, typer.Option("--ablation", help="mean (head output -> its mean) or zero.")] = "mean",
    no_ablate: Annotated[bool, typer.Option("--no-ablate", help="Skip the causal check (faster).")] = False,
    no_qk: Annotated[bool, typer.Option("--no-qk", help="Skip the QK analysis (faster).")] = False,
    qk_top: Annotated[int, typer.Option("--qk-top", help="The QK analysis takes this many top induction heads and "
                      "as many top previous-token heads.")] = 3,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="Role threshold NAME=VALUE (repeatable); "
                         f"defaults {', '.join(f'{k}={v}' for k, v in DEFAULT_THRESHOLDS.items())}.")] = None,
    max_memory: Annotated[float, typer.Option("--max-memory", help="GiB budget for one chunk's attention + "
                          "logits.")] = 2.0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the induction scan and the QK analysis and write one HTML page that works offline.

    The page holds the model and settings, the top heads with their roles, score heatmaps,
    loss by position, the causal check, interactive attention views of the top heads
    (circuitsvis, its JavaScript inlined once), QK scores, decompositions, positional and token
    QK circuits, composition scores, and a legend with every score's definition and source.
    It loads nothing from the network: send it to a colleague as it is.

    Example: headscope report --model smollm2-135m --text "The cat sat. The cat sat." --out report.html
    """
    con, err = consoles(json_out)
    thresholds = parse_thresholds(threshold, DEFAULT_THRESHOLDS)
    texts = read_texts(text, file)
    check_settings(seq_len, batch, repeats, True, None)  # cheap checks before loading anything
    if qk_top < 1:
        raise BadInput(f"--qk-top must be at least 1 (got {qk_top})", hint="or pass --no-qk to skip the QK analysis")
    resolve_device(device), resolve_dtype(dtype)
    path = check_out_file(out or Path("headscope-results") / f"report-{slug(model)}.html", overwrite)

    with err.status(f"Loading {model}..."):
        m = load_model(model, device=device, dtype=dtype, log=lambda s: err.print(s, highlight=False))
    err.print(f"Loaded {model}: {m.cfg.n_layers} layers x {m.cfg.n_heads} heads on {m.cfg.device}", highlight=False)
    rep = build_report(m, texts or None, seq_len=seq_len, batch=batch, repeats=repeats, seed=seed, top_k=top,
                       ablate=not no_ablate, ablation=ablation, thresholds=thresholds, qk=not no_qk, qk_top=qk_top,
                       max_memory_gb=max_memory, progress=True, log=lambda s: err.print(s, highlight=False))
    with err.status("Writing the page..."):
        rep.save(path)
    size = path.stat().st_size
    if json_out:
        typer.echo(json.dumps({"report": str(path), "bytes": size,
                               "qk_heads": [f"{l}.{h}" for l, h in rep.qk.heads] if rep.qk is not None else [],
                               "induction": rep.induction.to_dict()}, indent=2))
    con.print(f"[green]Wrote {path}[/] ({size / 1e6:.1f} MB): open it in any browser, no network needed.",
              highlight=False)
