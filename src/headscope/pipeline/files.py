"""The files of each command's result set, staged into a :class:`~headscope.pipeline.outputs.ResultDir`.

``headscope induction``::

    scores.json   everything (scores, loss, causal check, definitions, settings)
    scores.csv    one row per head, one column per score of the registry, roles
    heatmap_<score>.png, loss_by_position.png, ablation.png, attention_repeated.png, attention_text_<n>.png

``headscope heads``::

    heads.json    roles of every head, counts, every score, ICL check, weight-score notes (successor sets), definitions
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

``headscope logits``::

    logits.json             everything, including definitions and findings
    heads.csv               chosen heads, why, largest push, scan scores, OV self-rank
    effects.csv             direct effect of every head at every position of every text
    components.csv          per (text, position): embeddings, MLPs, biases, heads' total, logit
    ov.csv                  per (head, source token): self-rank, top promoted/suppressed tokens
    stories.csv             the induction story of each top induction head
    repeats.csv             per head: scan scores and direct effect on first/later repeats
    figures/                dla_text<n>.png (tokens x heads), repeat_later.png, ov_<head>.png

``headscope circuit``::

    circuit.json            everything: the task, activation and path patching with intervals, definitions
    activation_patching.csv one row per (direction, layer, head or MLP): normalised value and interval
    path_patching.csv       one row per (sender, receiver) path: value, effect and their intervals
    figures/                patching_<direction>.png (layers x heads + MLP), paths_<n>.png
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ..head_labels import head_label
from ..progress import Progress
from ..render._mpl import encode_png
from ..results.edge_results import EdgeCircuit
from .outputs import ResultDir


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
    rows = [
        {
            "head": head_label(l, h),
            "layer": l,
            "head_index": h,
            "reason": a.reasons.get(head_label(l, h), "chosen with --head"),
            **({k: float(v[l, h]) for k, v in a.scan_scores.items()} if a.scan_scores else {}),
        }
        for l, h in a.heads
    ]
    rd.write("heads.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False))
    rd.write("scores.csv", lambda p: a.live.to_frame().to_csv(p, index=False, float_format="%.6g"))
    decs = []
    for d in a.decompositions:
        f = d.to_frame()
        f.insert(0, "sequence", d.sequence_index)
        f["pairs"] = d.how
        decs.append(f)
    rd.write(  # empty (no rows) where every decomposition was left out: they did not reproduce the model's scores
        "decomposition.csv",
        lambda p: (pd.concat(decs, ignore_index=True) if decs else pd.DataFrame()).to_csv(
            p, index=False, float_format="%.6g"
        ),
    )
    rd.write("positional.csv", lambda p: a.positional.to_frame().to_csv(p, index=False, float_format="%.6g"))
    rd.write(
        "token_qk.csv",
        lambda p: pd.concat([t.to_frame() for t in a.token_circuits], ignore_index=True).to_csv(
            p, index=False, float_format="%.6g"
        ),
    )
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
        src = a.composition_by_offset if a.composition_by_offset is not None else a.composition
        jobs.append(("figures/k_sources.png", lambda: F.plot_k_sources(src, later, prev)))
    _figures(rd, jobs, progress)


def qk_files(rd: ResultDir, a, figures: bool = True, progress: Progress | None = None) -> None:
    """Stage a QK analysis: tables, and figures unless ``figures=False``."""
    qk_tables(rd, a)
    if figures:
        qk_figures(rd, a, progress)


def logit_tables(rd: ResultDir, a) -> None:
    """Stage ``logits.json`` and the CSVs of a :class:`~headscope.pipeline.logit_analysis.LogitAnalysis`."""
    from .logit_analysis import SCAN_SCORES

    rd.write_text("logits.json", a.to_json())
    rd.write("heads.csv", lambda p: a.to_frame().to_csv(p, index=False, float_format="%.6g"))
    effects, comps = [], []
    for n, t in enumerate(a.texts, 1):
        f = t.to_frame()
        f.insert(0, "text", n)
        effects.append(f)
        c = t.components_frame()
        c.insert(0, "text", n)
        comps.append(c)
    rd.write("effects.csv", lambda p: pd.concat(effects, ignore_index=True).to_csv(p, index=False, float_format="%.6g"))
    rd.write(
        "components.csv", lambda p: pd.concat(comps, ignore_index=True).to_csv(p, index=False, float_format="%.6g")
    )
    rd.write(
        "ov.csv",
        lambda p: pd.concat([o.to_frame() for o in a.ov.values()], ignore_index=True).to_csv(
            p, index=False, float_format="%.6g"
        ),
    )
    rd.write("stories.csv", lambda p: a.stories.to_frame().to_csv(p, index=False, float_format="%.6g"))
    sc = a.scan.scores
    L, H = sc["induction"].shape
    rows = [
        {"layer": l, "head": h, "label": head_label(l, h), **{k: float(sc[k][l, h]) for k in SCAN_SCORES if k in sc}}
        for l in range(L)
        for h in range(H)
    ]
    rd.write("repeats.csv", lambda p: pd.DataFrame(rows).to_csv(p, index=False, float_format="%.6g"))


def logit_figures(rd: ResultDir, a, progress: Progress | None = None) -> None:
    """Stage the logit figures under ``figures/``."""
    from ..render import logit_figures as F

    jobs: list[tuple[str, Callable]] = []
    for n, t in enumerate(a.texts, 1):
        jobs.append((f"figures/dla_text{n}.png", lambda t=t: F.token_head_heatmap(t, a.heads)))
    jobs.append(("figures/repeat_later.png", lambda: F.scan_effect_heatmap(a.scan, "later", outline=a.story_heads)))
    for lh, ov in a.ov.items():
        jobs.append((f"figures/ov_{ov.label}.png", lambda ov=ov, lh=lh: F.ov_row_bars(ov, a.ov_example(lh))))
    _figures(rd, jobs, progress)


def logit_files(rd: ResultDir, a, figures: bool = True, progress: Progress | None = None) -> None:
    """Stage a logit analysis: tables, and figures unless ``figures=False``."""
    logit_tables(rd, a)
    if figures:
        logit_figures(rd, a, progress)


def heads_files(rd: ResultDir, a) -> None:
    """Stage ``headscope heads``: ``heads.json`` (what ``--json`` prints) and ``heads.csv`` (one row per head)."""
    rd.write_text("heads.json", a.to_json())
    rd.write("heads.csv", lambda p: a.to_frame().to_csv(p, index=False, float_format="%.6f"))


def _write_csv(rd: ResultDir, name: str, frame: pd.DataFrame, float_format: str) -> None:
    rd.write(name, lambda p: frame.to_csv(p, index=False, float_format=float_format))


def circuit_files(rd: ResultDir, a, figures: bool = True, progress: Progress | None = None) -> None:
    """Stage ``headscope circuit``: ``circuit.json``, ``activation_patching.csv``, ``path_patching.csv``,
    ``edges.csv`` and ``faithfulness.csv`` (the edges step), ``figures/patching_<direction>.png`` and
    ``figures/paths_<n>.png`` (and each added step's own files); with ``per_position`` also
    ``activation_patching_by_position.csv`` and ``figures/patching_<direction>_by_position.png``."""
    from ..render.lookup import view_of

    rd.write_text("circuit.json", a.to_json())
    if a.activation:
        frame = pd.concat([x.to_frame() for x in a.activation], ignore_index=True)
        rd.write("activation_patching.csv", lambda p: frame.to_csv(p, index=False, float_format="%.6f"))
    by_position = [x for x in a.activation if x.per_position]
    if by_position:
        _write_csv(
            rd, "activation_patching_by_position.csv", pd.concat([x.position_frame() for x in by_position]), "%.6f"
        )
    if a.paths:
        paths = pd.concat([p.to_frame().assign(group=p.receiver) for p in a.paths], ignore_index=True)
        rd.write("path_patching.csv", lambda p: paths.to_csv(p, index=False, float_format="%.6f"))
    for e in a.extra:
        if isinstance(e, EdgeCircuit):
            _write_csv(rd, "edges.csv", e.attribution.to_frame(), "%.6g")
            _write_csv(rd, "faithfulness.csv", e.to_frame(), "%.6f")
    if not figures:
        return
    jobs: list[tuple[str, Callable]] = [
        (f"figures/patching_{x.direction}.png", lambda x=x: view_of(x).figure(x, "heatmap")) for x in a.activation
    ]
    jobs += [
        (f"figures/patching_{x.direction}_by_position.png", lambda x=x: view_of(x).figure(x, "by_position"))
        for x in by_position
    ]
    jobs += [(f"figures/paths_{i}.png", lambda p=p: view_of(p).figure(p, "paths")) for i, p in enumerate(a.paths)]
    for e in a.extra:
        for name in view_of(e).figures:
            jobs.append(
                (f"figures/{type(e).__name__.lower()}_{name}.png", lambda e=e, name=name: view_of(e).figure(e, name))
            )
    _figures(rd, jobs, progress)
