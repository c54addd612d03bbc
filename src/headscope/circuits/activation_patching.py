"""Activation patching of every head's output and every MLP, in both directions, optionally per position.

Denoising: the corrupted run with one component's activation taken from the clean run (how
much of the clean behaviour that one component restores). Noising: the clean run with one
component's activation taken from the corrupted run (how much is lost). Heimersheim & Nanda
(2024) explain why the two differ: denoising finds what is *sufficient*, noising what is
*necessary*. A head's activation is its ``hook_z`` (the head's output before ``W_O``), an MLP's
its ``hook_mlp_out``.

Every number is :func:`~headscope.circuits.tasks.normalised`: 1 = the clean run's metric,
0 = the corrupted run's, the ratio of the mean change over the examples to the mean clean -
corrupted gap, with a bootstrap interval over the examples
(:func:`headscope.stats.bootstrap_ratio_interval`).

``per_position`` patches one position at a time *besides* the whole sequence, not instead of it: one patch
per component and position (``n_tokens`` times the whole-sequence patch's passes), so the whole-sequence patch
beside it adds ``1 / n_tokens``; it is the same call as without ``per_position``, so the same numbers.

Speed: all patches of one layer run in one pass, stacked along the batch (copy ``c`` of the
examples carries patch ``c``: the layer's heads, its MLP, at every asked position), restarted
from the base run's residual entering that layer; attention runs through the fused kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..models.model import as_model, in_eval_mode
from ..results.patching_results import ActivationPatching
from ..settings import DEFAULT_MEMORY_GB
from ..tokens import token_text
from .runs import RunCache, cache_run, copies, final_normed, metric_of_normed, pass_sizes, per_head_view
from .tasks import CircuitTask, clean_corrupt_gap, normalised_rows, raw_rows

DIRECTIONS = ("denoise", "noise")


def _layer_hooks(layer: int, specs: list[tuple[int, int | None]], n_ex: int, n_heads: int, src: RunCache):
    """Hooks for one pass: copy ``c`` patches ``specs[c]`` = (unit, position or None); unit ``n_heads`` is the MLP."""

    def patch_z(z, hook):
        z4 = per_head_view(z, src.z[layer].shape[-1]).clone()
        for c, (unit, p) in enumerate(specs):
            if unit < n_heads:
                rows, at = slice(c * n_ex, (c + 1) * n_ex), slice(None) if p is None else slice(p, p + 1)
                z4[rows, at, unit] = src.z[layer][:, at, unit]
        return z4.view(z.shape)

    def patch_mlp(x, hook):
        x = x.clone()
        for c, (unit, p) in enumerate(specs):
            if unit == n_heads:
                rows, at = slice(c * n_ex, (c + 1) * n_ex), slice(None) if p is None else slice(p, p + 1)
                x[rows, at] = src.mlp_out[layer][:, at]
        return x

    return [(f"blocks.{layer}.attn.hook_z", patch_z), (f"blocks.{layer}.hook_mlp_out", patch_mlp)]


@torch.no_grad()
def patched_metrics(
    model,
    task: CircuitTask,
    base: RunCache,
    src: RunCache,
    positions: list[int] | None = None,
    max_memory_gb: float = DEFAULT_MEMORY_GB,
    fused: bool | None = None,
    progress: Callable | None = None,
    stage: str = "activation patching",
) -> np.ndarray:
    """The metric per example with each unit patched from ``src`` into ``base``'s run.

    Returns ``[n_layers, n_heads + 1, n_ex]`` (unit ``n_heads`` is the MLP) or, with
    ``positions``, ``[n_layers, n_heads + 1, len(positions), n_ex]`` (one position patched at a time).
    """
    bridge = as_model(model).bridge
    cfg = bridge.cfg
    n_ex, n_tok = task.clean.shape
    units = cfg.n_heads + 1
    pos_list: list[int | None] = list(positions) if positions is not None else [None]
    per_pass = max(1, pass_sizes(bridge, n_tok, max_memory_gb) // n_ex)
    out = np.zeros((cfg.n_layers, units, len(pos_list), n_ex))
    specs_all = [(u, p) for u in range(units) for p in pos_list]
    for layer in range(cfg.n_layers):
        for s in range(0, len(specs_all), per_pass):
            specs = specs_all[s : s + per_pass]
            resid = base.resid_pre[layer].repeat(len(specs), 1, 1)
            hooks = _layer_hooks(layer, specs, n_ex, cfg.n_heads, src)
            normed = final_normed(bridge, resid, layer, hooks, fused)
            vals = metric_of_normed(bridge, normed, copies(task, len(specs))).view(len(specs), n_ex).numpy()
            for c, (u, p) in enumerate(specs):
                out[layer, u, pos_list.index(p)] = vals[c]
        if progress:
            progress(stage, layer + 1, cfg.n_layers)
    return out if positions is not None else out[:, :, 0]


def position_tokens(model, task: CircuitTask) -> list[str]:
    """What sits at each position of the task's clean input, for the per-position table: the token's text where
    every example has the same token there; on the induction task, where the tokens are random, the part of the
    sequence ("repeat 1, token 3": the part the corrupted run replaces; "repeat 2, token 3"); else
    "(differs between examples)".

    >>> position_tokens(model, headscope.circuits.induction_task(model, n_examples=2, seq_len=2))[1:]
    ['repeat 1, token 0', 'repeat 1, token 1', 'repeat 2, token 0', 'repeat 2, token 1']
    """
    clean, tok = task.clean, as_model(model).tokenizer
    n_tok = clean.shape[1]
    offset, seq_len = n_tok % 2, n_tok // 2  # the induction task: [first token] + 2 x seq_len
    out = []
    for p in range(n_tok):
        if bool((clean[:, p] == clean[0, p]).all()):
            out.append(token_text(tok, int(clean[0, p])))
        elif task.name == "induction" and p >= offset:
            out.append(f"repeat {1 + (p - offset) // seq_len}, token {(p - offset) % seq_len}")
        else:
            out.append("(differs between examples)")
    return out


@in_eval_mode
def activation_patching(
    model,
    task: CircuitTask,
    direction: str = "denoise",
    per_position: bool = False,
    max_memory_gb: float = DEFAULT_MEMORY_GB,
    fused: bool | None = None,
    progress: Callable | None = None,
    caches: tuple[RunCache, RunCache] | None = None,
) -> ActivationPatching:
    """Patch every head (``hook_z``) and every MLP (``hook_mlp_out``) one at a time; normalised 1 = clean, 0 = corrupt.

    ``direction``: "denoise" (corrupted run, clean activation in) or "noise" (clean run,
    corrupted activation in). ``per_position``: also one position at a time (every position of the sequence),
    in the ``position_*`` fields; ``values`` stay the whole-sequence patch.

    >>> t = headscope.circuits.induction_task(model, n_examples=3, seq_len=5)
    >>> ap = activation_patching(model, t)
    >>> ap.values.shape, ap.direction
    ((2, 5), 'denoise')
    """
    if direction not in DIRECTIONS:
        from ..errors import BadInput

        raise BadInput(f"unknown direction {direction!r}", hint=f"use one of {', '.join(DIRECTIONS)}")
    clean, corrupt = caches or (cache_run(model, task.clean, task, fused), cache_run(model, task.corrupt, task, fused))
    base, src = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    cl, co, seed = clean.metric.double().numpy(), corrupt.metric.double().numpy(), task.seed or 0

    def rows(raw: np.ndarray) -> list[np.ndarray]:
        """``raw`` ``[..., n_ex]`` as values, low, high, change, change_low, change_high, each ``raw.shape[:-1]``."""
        flat, shape = raw.reshape(-1, raw.shape[-1]), raw.shape[:-1]
        out = [*normalised_rows(flat, cl, co, seed=seed), *raw_rows(flat, base.metric.double().numpy(), seed=seed)]
        return [a.reshape(shape) for a in out]

    values, low, high, change, change_low, change_high = rows(
        patched_metrics(model, task, base, src, None, max_memory_gb, fused, progress)
    )
    by_position: dict = {}
    if per_position:  # besides the whole-sequence patch above, which stays what values and the tables report
        every = list(range(task.clean.shape[1]))
        raw = patched_metrics(
            model, task, base, src, every, max_memory_gb, fused, progress, "activation patching by position"
        )
        names = ("values", "low", "high", "change", "change_low", "change_high")
        by_position = {f"position_{k}": v for k, v in zip(names, rows(raw), strict=True)}
        by_position["positions"] = position_tokens(model, task)
    cfg = as_model(model).bridge.cfg
    return ActivationPatching(
        direction=direction,
        metric=task.metric,
        task=task.name,
        n_examples=task.n_examples,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        clean_metric=float(cl.mean()),
        corrupt_metric=float(co.mean()),
        per_position=per_position,
        corruption=task.corruption,
        notes=list(task.notes),
        values=values,
        low=low,
        high=high,
        change=change,
        change_low=change_low,
        change_high=change_high,
        gap=clean_corrupt_gap(cl, co, task.metric, seed=seed),
        **by_position,
    )
