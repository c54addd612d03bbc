"""The causal check with a noise model: ablate heads, and say how sure the change is.

For each top induction head alone, all of them together, and a random control of as many other
heads drawn :data:`~headscope.scores.CONTROL_DRAWS` times, the heads' ``hook_z`` is replaced
(:class:`~.ablation.Replacement`: mean, zero, or resample from another sequence) and the later-
and first-repeat losses are measured *per sequence*. Each change is the mean over sequences of
(ablated - clean) with a percentile-bootstrap interval over sequences (:mod:`headscope.stats`);
the verdict ("raises" only when the interval lies above 0) and the rule are declared in the
registry (:func:`~headscope.scores.ablation_verdict`). The first-repeat change sits beside the
later-repeat one: an ablation that raises every loss is not evidence of induction.

Every pass restarts at the first ablated layer from the clean residual there (:mod:`.ablation`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..head_labels import Head
from ..scores import BOOTSTRAP_RESAMPLES, CONTROL_DRAWS, INTERVAL_LEVEL, ablation_verdict
from ..stats import bootstrap_interval
from .ablation import Replacement, ablated_losses, capture_residuals, capture_z, donor_order, first_layer
from .sequences import RepeatedTokens


def control_heads(n_layers: int, n_heads: int, top: list[Head], seed: int, draw: int = 0) -> list[Head]:
    """As many heads as ``top``, drawn at random (seeded by ``seed`` and ``draw``) from the others.

    >>> control_heads(2, 4, [(1, 0), (1, 1)], seed=0) == control_heads(2, 4, [(1, 0), (1, 1)], seed=0)
    True
    >>> {(1, 0), (1, 1)} & set(control_heads(2, 4, [(1, 0), (1, 1)], seed=0, draw=3))
    set()
    """
    others = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in top]
    gen = np.random.default_rng([seed, draw])
    return [others[i] for i in sorted(gen.choice(len(others), size=min(len(top), len(others)), replace=False))]


def ablation_plan(
    n_layers: int, n_heads: int, top: list[Head], seed: int, controls: int
) -> list[tuple[str, list[Head]]]:
    """``[(kind, heads)]``: each top head alone ("head"), all together ("all_top"), ``controls`` random draws.

    Where the model has no more other heads than ``top`` holds, every draw would be all of them:
    one control, not ``controls`` copies of it.

    >>> [k for k, _ in ablation_plan(2, 4, [(1, 0), (1, 1), (1, 2), (1, 3), (0, 0)], 0, 10)].count("control")
    1
    """
    plan = [("head", [h]) for h in top] + [("all_top", list(top))]
    draws = controls if n_layers * n_heads - len(set(top)) > len(top) else min(controls, 1)
    return plan + [("control", control_heads(n_layers, n_heads, top, seed, d)) for d in range(draws)]


def replacement_for(kind: str, model, rt: RepeatedTokens, heads, z_mean, chunk: int, fused: bool, seed: int):
    """The :class:`Replacement` of ``kind`` for ``heads``; "resample" captures their clean outputs once."""
    if kind == "zero":
        return Replacement("zero")
    if kind == "mean":
        return Replacement("mean", z_mean=z_mean)
    donor = torch.as_tensor(donor_order(rt.tokens.shape[0], seed))
    clean = capture_z(model, rt.tokens, heads, chunk, fused=fused)
    return Replacement("resample", donor_z={k: v[donor] for k, v in clean.items()})


def change(ablated: np.ndarray, clean: np.ndarray, seed: int) -> tuple[float, list[float]]:
    """Mean of the per-sequence ``ablated - clean`` and its bootstrap interval ``[low, high]``."""
    return mean_interval(per_sequence(ablated, clean), seed)


def mean_interval(d: np.ndarray, seed: int) -> tuple[float, list[float]]:
    """Mean of per-sequence changes ``d`` and their bootstrap interval ``[low, high]`` (the registry's level)."""
    lo, hi = bootstrap_interval(d, resamples=BOOTSTRAP_RESAMPLES, level=INTERVAL_LEVEL, seed=seed)
    return float(d.mean()), [lo, hi]


def per_sequence(ablated: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """``ablated - clean`` for each sequence, in float64."""
    return np.asarray(ablated, dtype=np.float64) - np.asarray(clean, dtype=np.float64)


def causal_check(
    model,
    rt: RepeatedTokens,
    top: list[Head],
    clean: tuple[np.ndarray, np.ndarray],
    *,
    ablation: str,
    z_mean: torch.Tensor | None,
    residuals: dict[int, torch.Tensor],
    chunk: int,
    fused: bool,
    seed: int = 0,
    controls: int = CONTROL_DRAWS,
    step: Callable[[], None] | None = None,
) -> list[dict]:
    """One entry per ablation of :func:`ablation_plan`, with intervals, verdict and first-repeat change.

    ``clean``: the clean run's per-sequence (later, first) losses. ``residuals``: clean
    ``resid_pre`` by layer (missing layers are captured here). Entry keys: kind, heads, layer,
    head, loss (ablated later-repeat loss), loss_increase and interval (its change),
    verdict, first_repeat_increase and first_repeat_interval, sequence_changes (the later-repeat change
    of each sequence, so that two ablations of the same sequences compare paired); control entries
    also draw.
    """
    plan = ablation_plan(model.n_layers, model.n_heads, top, seed, controls)
    needed = {first_layer(heads) for _, heads in plan} - set(residuals)
    if needed:
        residuals = {**residuals, **capture_residuals(model, rt.tokens, needed, chunk, fused=fused)}
    every = sorted({h for _, heads in plan for h in heads})
    repl = replacement_for(ablation, model, rt, every, z_mean, chunk, fused, seed)
    entries, draw = [], 0
    for kind, heads in plan:
        later, first = ablated_losses(model, rt, heads, chunk, repl, residuals, fused=fused)
        changes = per_sequence(later, clean[0])  # kept whole: two ablations of these sequences compare paired
        rise, interval = mean_interval(changes, seed)
        first_rise, first_interval = change(first, clean[1], seed)
        entry = {
            "kind": kind,
            "heads": [list(h) for h in heads],
            "layer": heads[0][0] if kind == "head" else None,
            "head": heads[0][1] if kind == "head" else None,
            "loss": float(later.mean()),
            "loss_increase": rise,
            "interval": interval,
            "verdict": ablation_verdict(*interval),
            "first_repeat_increase": first_rise,
            "first_repeat_interval": first_interval,
            "sequence_changes": changes.tolist(),
        }
        if kind == "control":
            entry["draw"], draw = draw, draw + 1
        entries.append(entry)
        if step:
            step()
    return entries
