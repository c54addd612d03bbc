"""The files of each command's result set, staged into a :class:`~headscope.pipeline.outputs.ResultDir`.

``headscope induction``::

    scores.json   everything (scores, loss, causal check, definitions, settings)
    scores.csv    one row per head, one column per score of the registry, roles
    heatmap_<score>.png, loss_by_position.png, ablation.png, attention_repeated.png, attention_text_<n>.png

``headscope heads``::

    heads.json    roles of every head, counts, every score, ICL check, successor sets, definitions
    heads.csv     one row per head: every score, roles (and natural-text sinks, ICL delta when measured)

``headscope qk``::

    qk.json                 everything, including definitions and findings
    heads.csv               chosen heads, why, quick-scan scores
    scores.csv              live scores and attention, one row per (sequence, head, query, key)
    decomposition.csv       per (sequence, head, side, component): contribution, vs_mean_key
    positional.csv          positional score by offset, per head
    token_qk.csv            token circuit on the token set, per head
    composition.csv         every earlier -> later head pair, Q/K/V, score and excess
    figures/                PNGs
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from ..heads import head_label
from ..render._mpl import encode_png
from .outputs import ResultDir

Progress = Callable[[str, int, int], None]


def _figures(rd: ResultDir, jobs: list[tuple[str, Callable]], progress: Progress | None = None) -> None:
    step = progress or (lambda *args: None)
    for i, (name, draw) in enumerate(jobs):
        step("figures", i, len(jobs))
        rd.write_bytes(name, encode_png(draw()))
    step("figures", len(jobs), len(jobs))


def induction_files(rd: ResultDir, res, texts=()) -> None:
    """Stage an induction run: ``scores.json``, ``scores.csv`` and its figures (attention on ``texts`` too)."""
    from ..render.induction_figures import named_figures

    rd.write_text("scores.json", res.to_json())
    rd.write("scores.csv", lambda p: res.to_frame().to_csv(p, index=False, float_format="%.6f"))
    _figures(rd, named_figures(res, list(texts)))


def qk_tables(rd: ResultDir, a) -> None:
    """Stage ``qk.json`` and the CSVs of a :class:`~headscope.qk.QKAnalysis`."""
    rd.write_text("qk.json", a.to_json())
    rows = [{"head": head_label(l, h), "layer": l, "head_index": h,
             "reason": a.reasons.get(head_label(l, h), "chosen with --head"),
             **({k: float(v[l, h]) for k, v in a.scan_scores.items()} if a.scan_scores else {})} for l, h in a.heads]
    rd.write("heads.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False))
    rd.write("scores.csv", lambda p: a.live.to_frame().to_csv(p, index=False, float_format="%.6g"))
    decs = []
    for d in a.decompositions:
        f = d.to_frame()
        f.insert(0, "sequence", d.sequence_index)
        f["pairs"] = d.how
        decs.append(f)
    rd.write("decomposition.csv",
             lambda p: pd.concat(decs, ignore_index=True).to_csv(p, index=False, float_format="%.6g"))
    rd.write("positional.csv", lambda p: a.positional.to_frame().to_csv(p, index=False, float_format="%.6g"))
    rd.write("token_qk.csv", lambda p: pd.concat([t.to_frame() for t in a.token_circuits], ignore_index=True)
             .to_csv(p, index=False, float_format="%.6g"))
    rd.write("composition.csv", lambda p: a.composition.to_frame().to_csv(p, index=False, float_format="%.6g"))


def qk_figures(rd: ResultDir, a, progress: Progress | None = None) -> None:
    """Stage the QK figures under ``figures/``."""
    from ..render import qk_figures as F

    jobs: list[tuple[str, Callable]] = []
    for s in range(len(a.live.sequences)):
        for n, (l, h) in enumerate(a.live.heads):
            jobs.append((f"figures/live_s{s}_{head_label(l, h)}.png", lambda s=s, n=n: F.plot_live(a.live, s, n)))
        jobs.append((f"figures/grid_s{s}.png", lambda s=s: F.plot_live_grid(a.live, s)))
    for d in a.decompositions:
        jobs.append((f"figures/decomposition_s{d.sequence_index}_{d.label}.png", lambda d=d: F.plot_decomposition(d)))
    for t in a.token_circuits:
        jobs.append((f"figures/token_qk_{t.label}.png", lambda t=t: F.plot_token_qk(t)))
    jobs.append(("figures/positional.png", lambda: F.plot_positional(a.positional)))
    jobs.append(("figures/composition.png", lambda: F.plot_composition(a.composition)))
    prev = a.scan_scores["previous_token"] if a.scan_scores else None
    later = [lh for lh in a.heads if lh[0] > 0]
    if later:
        jobs.append(("figures/k_sources.png", lambda: F.plot_k_sources(a.composition, later, prev)))
    _figures(rd, jobs, progress)


def qk_files(rd: ResultDir, a, figures: bool = True, progress: Progress | None = None) -> None:
    """Stage a QK analysis: tables, and figures unless ``figures=False``."""
    qk_tables(rd, a)
    if figures:
        qk_figures(rd, a, progress)


def heads_files(rd: ResultDir, a) -> None:
    """Stage ``headscope heads``: ``heads.json`` (what ``--json`` prints) and ``heads.csv`` (one row per head)."""
    rd.write_text("heads.json", a.to_json())
    rd.write("heads.csv", lambda p: a.to_frame().to_csv(p, index=False, float_format="%.6f"))
