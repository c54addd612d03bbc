"""The phase change of a train-toy run, measured on its checkpoints with headscope's own tools.

1. ``headscope sweep`` over the checkpoints (:func:`headscope.pipeline.sweep.run_sweep`, into
   ``run/sweep``; resumable): the induction scan on each, with the run's evaluation
   settings, gives per-head induction and previous-token scores and the first- and
   later-repeat losses.
2. The heads: the best induction head of the last checkpoint (layer >= 1) and the best
   previous-token head in the layers below it. They are fixed for the whole curve, so the
   curve follows two heads rather than whichever head happens to score highest in the noise.
3. K-composition (:func:`headscope.qk.composition_scores`) of every earlier-layer head into
   every later-layer head at each checkpoint, from the weights (cached in
   ``run/.phase-composition.json`` so a rerun loads nothing twice; beside ``phase/``, not in it,
   because ``phase/`` is written all at once and holds only the analysis).
4. :func:`headscope.toy.phase.detect_phase_change` on the later-repeat loss gives the window;
   the same detector runs on the induction, previous-token and composition curves.
5. Induction against copy distance (:mod:`headscope.toy.offsets`): every head's induction
   score at every distance from 3 to the context, at every checkpoint, and the last
   checkpoint again on a fresh, larger sample. The aim ``induction_head_at_every_offset``
   asks the tracked head to pass the induction role threshold at every distance.

>>> from headscope.toy import analyse_run
>>> ph = analyse_run("toy-run")                      # doctest: +SKIP
>>> ph.window.before, ph.window.after, ph.window.ratio  # doctest: +SKIP
>>> save_phase(ph, "toy-run/phase")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import BadInput
from ..results.phase_change import PhaseAnalysis
from .offsets import measure_checkpoints
from .phase import detect_phase_change
from .train import check_threads, read_run, torch_threads

#: Which way each curve moves when an induction head forms (for the detector).
DIRECTION = {"loss_later_repeats": "down", "induction_best": "up", "previous_token_best": "up", "k_composition": "up"}


def save_phase(phase: PhaseAnalysis, out_dir: str | os.PathLike) -> list[Path]:
    """phase.json, phase.csv, phase.png, phase_heatmaps.png, phase_offsets.png and report.html (the page) in ``out_dir``.

    Written all at once as every command's results are (:class:`~headscope.pipeline.outputs.ResultDir`): an
    earlier phase analysis there is replaced, but a folder holding files headscope did not write is refused
    (:class:`~headscope.errors.OutputExists`), never written into.
    """
    from ..pipeline.outputs import ResultDir
    from ..render.page import Report
    from ..render.phase_figures import save_phase_figures

    with ResultDir.open(Path(out_dir), command="train-toy phase", overwrite=True) as rd:
        rd.write_text("phase.json", phase.to_json())
        rd.write_text("phase.csv", phase.to_frame().to_csv(index=False, float_format="%.6f"))
        figures = save_phase_figures(phase, rd.staging)
        rd.written += [p.name for p in figures]
        page = Report({"name": f"toy run {phase.run_dir.name}"}, [phase])
        rd.write_text("report.html", page.to_html())
        return rd.commit()


def run_checkpoints(run_dir: Path) -> tuple[dict, list[tuple[int, Path]]]:
    run = read_run(run_dir)
    if run is None:
        raise BadInput(
            f"{run_dir} holds no train-toy run (no run.json)", hint="train one first: headscope train-toy --out DIR"
        )
    ckpts = [(int(c["step"]), run_dir / c["path"]) for c in run.get("checkpoints", [])]
    ckpts = [(s, p) for s, p in ckpts if (p / "config.json").is_file()]
    if len(ckpts) < 2:
        raise BadInput(
            f"{run_dir} has {len(ckpts)} checkpoint(s); a phase change needs a curve",
            hint="train with more steps or a smaller --every",
        )
    return run, ckpts


#: The K-composition cache, in the run's folder (a hidden name: train-toy's own --overwrite check passes it).
COMPOSITION_CACHE = ".phase-composition.json"


def _composition(ckpts, cache_path: Path, log) -> tuple[dict[int, np.ndarray], float]:
    """K-composition ``[L, H, L, H]`` per checkpoint step, cached in ``cache_path`` (keyed by step and path)."""
    from ..models.loading import load_model
    from ..qk.composition import composition_scores, random_baseline

    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    out, baseline = {}, cache.get("baseline")
    for step, path in ckpts:
        key = f"{step}|{path.resolve()}|{(path / 'model.safetensors').stat().st_mtime_ns}"
        if key in cache.get("k", {}):
            out[step] = np.asarray(cache["k"][key], dtype=np.float64)  # None (JSON null) -> NaN
            continue
        model = load_model(str(path), device="cpu", log=log)
        # the random-matrix baseline depends only on the shapes: computed once below, not per checkpoint
        comp = composition_scores(model, kinds=("K",), baseline_samples=2)
        del model
        out[step] = comp.scores["K"]
        if baseline is None:
            baseline = random_baseline(comp.d_model, comp.d_head, 200, 0)[0]
        grid = np.asarray(out[step], dtype=np.float64)
        cell = grid.astype(object)
        cell[np.isnan(grid)] = None  # JSON has no NaN
        cache.setdefault("k", {})[key] = cell.tolist()
        cache["baseline"] = baseline
        write_atomic(cache_path, json.dumps(cache), parents=True)
    return out, float(baseline)


def analyse_run(
    run_dir: str | os.PathLike,
    *,
    rerun: bool = False,
    on_event: Callable | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = False,
    threads: int | None = None,
) -> PhaseAnalysis:
    """Sweep the run's checkpoints (resumable), compute composition, detect the window.

    ``on_event`` and ``progress`` are passed to :func:`headscope.pipeline.sweep.run_sweep`; ``rerun``
    recomputes finished sweep entries. ``threads``: torch CPU threads meanwhile (default 1,
    as for training: these models are tiny, and extra threads only contend).
    """
    with torch_threads(check_threads(threads)):
        return _analyse(Path(run_dir), rerun, on_event, log, progress)


def _read_sweep(run_dir: Path, entries, steps_of: dict) -> tuple[dict, dict]:
    """The finished sweep entries: ``{step: {score: [L, H]}}`` and ``{step: (later, first) loss}``."""
    from ..pipeline.sweep import read_entry

    scores: dict[int, dict[str, np.ndarray]] = {}
    losses: dict[int, tuple[float, float]] = {}
    for e in entries:
        rec = read_entry(run_dir / "sweep", e)
        if rec is None:
            continue
        s = steps_of[e.key]
        scores[s] = {
            k: np.asarray(rec["result"]["scores"][k], dtype=np.float64) for k in ("induction", "previous_token")
        }
        losses[s] = (rec["summary"]["loss_later_repeats"], rec["summary"]["loss_first_repeat"])
    return scores, losses


def _analyse(run_dir: Path, rerun, on_event, log, progress) -> PhaseAnalysis:
    from ..pipeline.sweep import plan_sweep, run_sweep

    run, ckpts = run_checkpoints(run_dir)
    cfg = run["config"]
    entries = plan_sweep([str(p) for _, p in ckpts])
    steps_of = {e.key: s for e, (s, _) in zip(entries, ckpts)}
    res = run_sweep(
        entries,
        run_dir / "sweep",
        device="cpu",
        rerun=rerun,
        on_event=on_event,
        log=log,
        progress=progress,
        seq_len=cfg["eval_seq_len"],
        batch=cfg["eval_batch"],
        seed=cfg["eval_seed"],
        ablate=False,
    )
    scores, losses = _read_sweep(run_dir, entries, steps_of)
    if not res.ok or len(scores) < 2:
        failed = ", ".join(f["label"] for f in res.failures) or "none"
        raise BadInput(
            f"the sweep over {run_dir} finished only {len(scores)} checkpoint(s) (failed: {failed})",
            hint=f"see {run_dir / 'sweep' / 'sweep.json'}; run again to retry the failed ones",
        )
    ckpts = [(s, p) for s, p in ckpts if s in scores]
    steps = [s for s, _ in ckpts]
    final = scores[steps[-1]]
    ind = final["induction"].copy()
    ind[0] = -np.inf  # an induction head needs an earlier layer to compose with
    il, ih = np.unravel_index(int(np.argmax(ind)), ind.shape)
    prev = final["previous_token"][:il]
    pl, ph = np.unravel_index(int(np.argmax(prev)), prev.shape)
    comp, baseline = _composition(ckpts, run_dir / COMPOSITION_CACHE, log or (lambda m: None))
    offsets = measure_checkpoints(ckpts, int(cfg["vocab"]), int(cfg["n_ctx"]))

    curves = {
        "loss_later_repeats": [losses[s][0] for s in steps],
        "loss_first_repeat": [losses[s][1] for s in steps],
        "induction_best": [float(scores[s]["induction"].max()) for s in steps],
        "induction_pair": [float(scores[s]["induction"][il, ih]) for s in steps],
        "previous_token_best": [float(scores[s]["previous_token"][:il].max()) for s in steps],
        "previous_token_pair": [float(scores[s]["previous_token"][pl, ph]) for s in steps],
        "induction_pair_offset_min": [float(offsets.head(s, (int(il), int(ih))).min()) for s in steps],
        "k_composition": [float(comp[s][pl, ph, il, ih]) for s in steps],
    }
    windows = {name: detect_phase_change(steps, curves[name], direction=d) for name, d in DIRECTION.items()}
    live = []
    try:
        import pandas as pd

        live = pd.read_csv(run_dir / "train_log.csv").to_dict("records")
    except (OSError, ValueError):
        pass
    return PhaseAnalysis(
        run_dir=run_dir,
        steps=steps,
        curves=curves,
        induction_head=(int(il), int(ih)),
        previous_token_head=(int(pl), int(ph)),
        window=windows["loss_later_repeats"],
        windows=windows,
        scores=scores,
        k_comp={s: comp[s][pl, :, il, :] for s in steps},
        k_baseline=baseline,
        total_steps=int(cfg["steps"]),
        live=live,
        offsets=offsets,
    )
