"""Writing a :class:`~headscope.qk.analysis.QKAnalysis` to a directory: JSON, CSVs, PNGs.

Layout of ``out``::

    qk.json                 everything, including definitions and findings
    heads.csv               chosen heads, why, quick-scan scores
    scores.csv              live scores and attention, one row per (sequence, head, query, key)
    decomposition.csv       per (sequence, head, side, component): contribution, vs_mean_key
    positional.csv          positional score by offset, per head
    token_qk.csv            token circuit on the token set, per head
    composition.csv         every earlier -> later head pair, Q/K/V, score and excess
    figures/                PNGs (names below)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FIXED_FILES = ["qk.json", "heads.csv", "scores.csv", "decomposition.csv", "positional.csv", "token_qk.csv",
               "composition.csv"]
FIGURE_PATTERNS = ("live_s*.png", "grid_s*.png", "decomposition_s*.png", "token_qk_*.png", "positional.png",
                   "composition.png", "k_sources.png")


def existing_outputs(out: Path) -> list[str]:
    """Names of earlier QK results in ``out`` (what --overwrite would replace)."""
    names = [n for n in FIXED_FILES if (out / n).exists()]
    figs = out / "figures"
    if figs.is_dir():
        names += [f"figures/{p.name}" for pat in FIGURE_PATTERNS for p in sorted(figs.glob(pat))]
    return names


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_tables(a, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "qk.json").write_text(a.to_json())
    rows = [{"head": f"{l}.{h}", "layer": l, "head_index": h, "reason": a.reasons.get(f"{l}.{h}", "chosen with --head"),
             **({k: float(v[l, h]) for k, v in a.scan_scores.items()} if a.scan_scores else {})} for l, h in a.heads]
    pd.DataFrame(rows).to_csv(out / "heads.csv", index=False)
    a.live.to_frame().to_csv(out / "scores.csv", index=False, float_format="%.6g")
    decs = []
    for d in a.decompositions:
        f = d.to_frame()
        f.insert(0, "sequence", a.live.sequences.index(d.sequence))
        f["pairs"] = d.how
        decs.append(f)
    pd.concat(decs, ignore_index=True).to_csv(out / "decomposition.csv", index=False, float_format="%.6g")
    a.positional.to_frame().to_csv(out / "positional.csv", index=False, float_format="%.6g")
    pd.concat([t.to_frame() for t in a.token_circuits], ignore_index=True).to_csv(
        out / "token_qk.csv", index=False, float_format="%.6g")
    a.composition.to_frame().to_csv(out / "composition.csv", index=False, float_format="%.6g")
    return [out / n for n in FIXED_FILES]


def write_figures(a, out: Path, progress=None) -> list[Path]:
    from ..render import qk_figures as F

    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for pat in FIGURE_PATTERNS:  # stale figures of an earlier run (we only get here when allowed to overwrite)
        for p in figs.glob(pat):
            p.unlink()
    step = progress or (lambda *args: None)
    jobs = []
    for s in range(len(a.live.sequences)):
        for n, (l, h) in enumerate(a.live.heads):
            jobs.append((f"live_s{s}_{l}.{h}.png", lambda s=s, n=n: F.plot_live(a.live, s, n)))
        jobs.append((f"grid_s{s}.png", lambda s=s: F.plot_live_grid(a.live, s)))
    for d in a.decompositions:
        s = a.live.sequences.index(d.sequence)
        jobs.append((f"decomposition_s{s}_{d.label}.png", lambda d=d: F.plot_decomposition(d)))
    for t in a.token_circuits:
        jobs.append((f"token_qk_{t.label}.png", lambda t=t: F.plot_token_qk(t)))
    jobs.append(("positional.png", lambda: F.plot_positional(a.positional)))
    jobs.append(("composition.png", lambda: F.plot_composition(a.composition)))
    prev = a.scan_scores["previous_token"] if a.scan_scores else None
    later = [lh for lh in a.heads if lh[0] > 0]
    if later:
        jobs.append(("k_sources.png", lambda: F.plot_k_sources(a.composition, later, prev)))
    paths = []
    for i, (name, draw) in enumerate(jobs):
        step("figures", i, len(jobs))
        paths.append(_save(draw(), figs / name))
    step("figures", len(jobs), len(jobs))
    return paths


def write_analysis(a, out: Path, figures: bool = True, progress=None) -> list[Path]:
    paths = write_tables(a, out)
    return paths + (write_figures(a, out, progress) if figures else [])
