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
   ``run/phase/composition.json`` so a rerun loads nothing twice).
4. :func:`headscope.toy.phase.detect_phase_change` on the later-repeat loss gives the window;
   the same detector runs on the induction, previous-token and composition curves.
5. Induction against copy distance (:mod:`headscope.toy.offsets`): every head's induction
   score at every distance from 3 to the context, at every checkpoint, and the last
   checkpoint again on a fresh, larger sample. The aim ``induction_head_at_every_offset``
   asks the tracked head to pass the induction role threshold at every distance.

>>> from headscope.toy import analyse_run
>>> ph = analyse_run("toy-run")                      # doctest: +SKIP
>>> ph.window.before, ph.window.after, ph.window.ratio  # doctest: +SKIP
>>> ph.save("toy-run/phase")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..head_labels import head_label
from ..jsonsafe import dumps
from ..scores import default_thresholds
from .offsets import OffsetCurves, measure_checkpoints
from .phase import PhaseWindow, detect_phase_change
from .train import default_threads, read_run, torch_threads

CURVES = {
    "loss_later_repeats": "Later-repeat loss (nats): mean loss on the second copy of [BOS] + r + r (the scan's "
    "sequences); falls when induction works.",
    "loss_first_repeat": "First-repeat loss (nats): the first copy, unpredictable, about ln(vocab).",
    "induction_best": "Highest induction score over every head at that checkpoint (ARENA definition).",
    "induction_pair": "Induction score of the tracked induction head (the last checkpoint's best).",
    "previous_token_best": "Highest previous-token score among the heads in layers below the tracked induction head.",
    "previous_token_pair": "Previous-token score of the tracked previous-token head.",
    "induction_pair_offset_min": "Lowest induction score of the tracked induction head over copy distances 3 to "
    "the context (headscope.toy.offsets): an induction head at every distance keeps this high.",
    "k_composition": "K-composition score (Elhage et al. 2021) of the tracked previous-token head's OV circuit into "
    "the tracked induction head's keys: ||W_OV W_K W_Q^T||_F / (||W_OV||_F ||W_K W_Q^T||_F).",
}
#: Which way each curve moves when an induction head forms (for the detector).
DIRECTION = {"loss_later_repeats": "down", "induction_best": "up", "previous_token_best": "up", "k_composition": "up"}


@dataclass
class PhaseAnalysis:
    """Curves against training step and the detected window; numbers only.

    ``curves[name]`` is a list aligned with ``steps``; ``scores[step][name]`` the ``[L, H]``
    score grid of one checkpoint (induction, previous_token) and ``k_comp[step]`` the
    ``[H, H]`` K-composition of earlier-layer heads (rows) into the induction head's layer
    (columns). ``window`` comes from the later-repeat loss; ``windows`` holds the detector's
    answer for every curve in :data:`DIRECTION`.
    """

    run_dir: Path
    steps: list[int]
    curves: dict[str, list[float]]
    induction_head: tuple[int, int]
    previous_token_head: tuple[int, int]
    window: PhaseWindow | None
    windows: dict[str, PhaseWindow | None]
    scores: dict[int, dict[str, np.ndarray]]
    k_comp: dict[int, np.ndarray]
    k_baseline: float
    total_steps: int
    live: list[dict] = field(default_factory=list)  # the training log (finer than the checkpoints)
    offsets: OffsetCurves | None = None  # induction against copy distance, every checkpoint

    @property
    def before_step(self) -> int | None:
        return None if self.window is None else int(self.window.before)

    @property
    def after_step(self) -> int | None:
        return None if self.window is None else int(self.window.after)

    def aims(self) -> dict:
        """The issue's aims, checked on these curves: True/False per aim, and the numbers.

        Induction head: best score > 0.6; previous-token head: at least headscope's role
        threshold (0.4); the later-repeat loss more than halves between the window's
        checkpoints, which are less than 20 % of the run apart; the tracked induction head
        passes the induction threshold (0.4) at every copy distance at the last checkpoint,
        on both offset samples (``induction_head_at_every_offset``)."""
        last = {k: v[-1] for k, v in self.curves.items()}
        w = self.window
        return {
            "induction_best_final": last["induction_best"],
            "induction_head_formed": last["induction_best"] > 0.6,
            "previous_token_final": last["previous_token_best"],
            "previous_token_head_formed": last["previous_token_best"] >= default_thresholds()["previous_token"],
            "window_found": w is not None,
            "loss_ratio_in_window": None if w is None else w.ratio,
            "loss_more_than_halved_in_window": w is not None and w.ratio < 0.5,
            "window_fraction_of_run": None if w is None else w.width / self.total_steps,
            "window_shorter_than_20pc": w is not None and w.width / self.total_steps < 0.2,
            **({} if self.offsets is None else self.offsets.aim(self.steps[-1], self.induction_head)),
        }

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "steps": self.steps,
            "total_steps": self.total_steps,
            "curves": {k: [round(float(x), 6) for x in v] for k, v in self.curves.items()},
            "induction_head": head_label(*self.induction_head),
            "previous_token_head": head_label(*self.previous_token_head),
            "window": None if self.window is None else self.window.to_dict(),
            "windows": {k: (None if w is None else w.to_dict()) for k, w in self.windows.items()},
            "k_composition_baseline": self.k_baseline,
            "heatmaps": {
                str(s): {
                    "step": s,
                    **{k: np.round(v, 6).tolist() for k, v in self.scores[s].items()},
                    "k_composition": np.round(self.k_comp[s], 6).tolist(),
                }
                for s in self.heatmap_steps()
            },
            "offsets": None if self.offsets is None else self.offsets.to_dict(self.induction_head),
            "aims": self.aims(),
            "definitions": CURVES,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)  # strict JSON: NaN/Infinity -> null

    def to_frame(self):
        """One row per checkpoint: step and every curve."""
        import pandas as pd

        return pd.DataFrame({"step": self.steps, **self.curves})

    def heatmap_steps(self) -> list[int]:
        """The checkpoints the before/after heatmaps show: the window's ends, else the first and last."""
        if self.window is None:
            return [self.steps[0], self.steps[-1]]
        return [int(self.window.before), int(self.window.after)]

    def plot(self):
        from ..render.phase_figures import phase_figure

        return phase_figure(self)

    def plot_heatmaps(self):
        from ..render.phase_figures import phase_heatmaps

        return phase_heatmaps(self)

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """phase.json, phase.csv, phase.png, phase_heatmaps.png and report.html (the page) in ``out_dir``."""
        from ..pipeline.outputs import write_file_atomic
        from ..render.page import Report
        from ..render.phase_figures import save_phase_figures

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_file_atomic(out / "phase.json", self.to_json())
        write_file_atomic(out / "phase.csv", self.to_frame().to_csv(index=False, float_format="%.6f"))
        figures = save_phase_figures(self, out)
        page = Report(model={"name": f"toy run {self.run_dir.name}"}, phase=self)
        write_file_atomic(out / "report.html", page.to_html())
        return [out / "phase.json", out / "phase.csv", *figures, out / "report.html"]


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
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".partial")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
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
    with torch_threads(threads or default_threads()):
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
    comp, baseline = _composition(ckpts, run_dir / "phase" / "composition.json", log or (lambda m: None))
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
