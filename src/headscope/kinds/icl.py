"""In-context learning score on natural text, and how much single heads carry it.

Olsson et al. 2022 ("In-context Learning and Induction Heads") define the in-context
learning score as the model's loss at token 500 of a context minus its loss at token 50,
averaged over many contexts: negative when later tokens, which have more context, are
predicted better. headscope counts document tokens from 0, so "loss at token i" is the
cross-entropy of predicting document token i from the i tokens before it (and the BOS in
front, where the model has one). Contexts are windows of ``window`` (512) tokens of natural
documents (:mod:`headscope.kinds.documents`: the user's files, or CPython's
``pydoc_data.topics``).

The causal check: for each given head, its output ``hook_z`` is replaced by its mean over
every position of every window of the clean run (mean ablation; or by zero), and the score
is measured again on the same windows. ``delta = ablated - clean``: positive when removing
the head makes the model learn less from its context.

**Sample size.** The loss at one position varies by several nats between windows (SmolLM2 on
pydoc text: a standard deviation of about 4 nats for the score), so the default is 200 windows,
which puts the standard error near 0.3 nats; every score and delta comes with its standard error
and a 95% interval (Student t over windows; deltas are paired, window by window).

**Cost.** The clean pass runs attention through a fused kernel where the model allows it (the
scan's route, :mod:`headscope.scan.fused`; no ``n x n`` pattern), reduces its per-position
losses a vocabulary slice at a time without holding the logits, and keeps the residual stream
entering each ablated head's layer; each ablated pass restarts there
(:func:`headscope.scan.ablation.restart_from`), since the layers below compute exactly what the
clean run did, runs the positions up to the later scored one only, and unembeds the two scored
positions only. A model whose logits are not its unembedding of the final norm's output (soft-
capping, scaling) takes full logits instead, with the same numbers.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch

from ..errors import BadInput
from ..models.model import in_eval_mode
from ..results.icl_result import ICLResult
from ..scan.ablation import residual_hooks, restart_from
from ..scan.fused import fused_attention, fused_supported
from ..scan.losses import normed_output, normed_route_ok, pass_losses
from ..settings import check_ablation
from .documents import TokenWindows, natural_windows

#: How the ICL check may ablate a head (resample is the scan's alone).
ICL_ABLATIONS = ("mean", "zero")
#: Windows by default: SE <= ~0.3 nats for a score whose SD across windows is about 4 nats (issue 19.10).
ICL_DEFAULT_WINDOWS = 200


def _pick(per_pos: torch.Tensor, windows: TokenWindows, i: int) -> torch.Tensor:
    """``[n_windows]`` loss of document token ``i`` from ``[n_windows, n-1]`` per-position losses."""
    return per_pos[:, i + int(windows.bos) - 1]


def _route(model, attention: str, n_tokens: int | None = None) -> contextlib.AbstractContextManager:
    """The fused kernel where the model allows it on ``n_tokens``-token windows ("auto"), else eager attention."""
    if attention == "eager" or (attention == "auto" and not fused_supported(model, n_tokens)):
        return contextlib.nullcontext()
    return fused_attention(model)


@torch.no_grad()
def _clean_losses(model, windows: TokenWindows, chunk: int, hooks, attention: str, step=None) -> torch.Tensor:
    """``[n_windows, n-1]`` per-position losses of the clean run (``hooks`` see every chunk).

    Where the model allows it (:func:`~headscope.scan.losses.normed_route_ok`) the pass returns
    the final norm's output and the losses are reduced a vocabulary slice at a time, as the
    scan's are: no ``[chunk, 512, vocab]`` logits are held."""
    normed = normed_route_ok(model)
    out = []
    with (
        _route(model, attention, windows.tokens.shape[1]),
        normed_output(model) if normed else contextlib.nullcontext(),
    ):
        for start in range(0, len(windows.tokens), chunk):
            tokens = windows.tokens[start : start + chunk].to(model.cfg.device)
            y = model.run_with_hooks(tokens, fwd_hooks=list(hooks), use_cache=False)
            out.append(pass_losses(model, y, tokens, normed=normed).cpu())
            del y
            if step:
                step(start + len(tokens))
    return torch.cat(out)


@torch.no_grad()
def _ablated_losses(
    model,
    windows: TokenWindows,
    resid: torch.Tensor,
    layer: int,
    hooks,
    positions: list[int],
    chunk: int,
    attention,
    step=None,
) -> torch.Tensor:
    """``[n_windows, len(positions)]`` losses at model ``positions`` of passes restarted at ``layer`` from ``resid``.

    Only the positions up to the last scored one run (attention is causal: what comes after it
    changes none of the scored losses), and only the scored positions are unembedded."""
    normed = normed_route_ok(model)
    n = max(positions) + 1
    fused = attention == "fused" or (attention == "auto" and fused_supported(model, n))
    out = []
    for start in range(0, len(windows.tokens), chunk):
        tokens = windows.tokens[start : start + chunk, : n + 1].to(model.cfg.device)
        x = resid[start : start + chunk, :n].to(model.cfg.device)
        y = restart_from(model, x, layer, hooks, fused=fused, normed=normed)
        out.append(pass_losses(model, y, tokens, positions, normed=normed).cpu())
        del y
        if step:
            step(start + len(tokens))
    return torch.cat(out)


def _ablate_hook(layer: int, head: int, value):
    """A ``hook_z`` hook that replaces ``head``'s output by ``value`` (None: zero)."""

    def ablate(z, hook):
        z = z.clone()
        z[:, :, head, :] = 0.0 if value is None else value.to(z.device, z.dtype)
        return z

    return [(f"blocks.{layer}.attn.hook_z", ablate)]


def _delta_entry(layer: int, head: int, lost: torch.Tensor, per_window: torch.Tensor) -> dict:
    """One ablated head's entry: its score, the paired delta with SE and 95% interval, its two losses."""
    ae, al = lost[:, 0], lost[:, 1]
    score = al - ae
    delta = score - per_window
    return {
        "layer": layer,
        "head": head,
        "icl_score": float(score.mean()),
        "delta": float(delta.mean()),
        "delta_stderr": _stderr(delta),
        "delta_ci95": list(interval95(delta)),
        "loss_early": float(ae.mean()),
        "loss_late": float(al.mean()),
    }


def _stderr(x: torch.Tensor) -> float:
    return float(x.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (Cornish-Fisher, A&S 26.7.5).

    Within 0.002 of the exact value from 3 degrees of freedom up; exact values for 1 and 2.

    >>> round(t_quantile_975(9), 3), round(t_quantile_975(199), 3)
    (2.262, 1.972)
    """
    if dof < 1:
        return float("nan")
    exact = {1: 12.7062, 2: 4.3027}
    if dof in exact:
        return exact[dof]
    z, v = 1.959964, float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def interval95(x: torch.Tensor) -> tuple[float, float]:
    """95% interval of the mean of ``x`` (one value per window): mean +- t * SE; nan with one window."""
    m, se = float(x.mean()), _stderr(x)
    half = t_quantile_975(len(x) - 1) * se
    return (m - half, m + half)


@torch.no_grad()
def _checked(model, heads, ablation: str, early: int, late: int, window: int) -> list[tuple[int, int]]:
    """``heads`` as ``(layer, head)`` ints, once the arguments are known to make sense (else :class:`BadInput`)."""
    check_ablation(ablation, ICL_ABLATIONS, " for the in-context learning check")
    if not 1 <= early < late < window:
        raise BadInput(
            f"need 1 <= early ({early}) < late ({late}) < window ({window})",
            hint="the defaults are Olsson et al.'s: 50, 500, 512",
        )
    heads = [(int(l), int(h)) for l, h in heads]
    for l, h in heads:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise BadInput(
                f"head L{l}H{h} is not in the model ({model.cfg.n_layers} layers x {model.cfg.n_heads} heads)"
            )
    return heads


@in_eval_mode
def icl_score(
    model,
    files=None,
    *,
    heads=(),
    ablation: str = "mean",
    early: int = 50,
    late: int = 500,
    window: int = 512,
    max_windows: int | None = ICL_DEFAULT_WINDOWS,
    chunk_size: int = 4,
    attention: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> ICLResult:
    """Olsson et al.'s in-context learning score of ``model``, and each of ``heads``' share in it.

    ``heads`` are ``(layer, head)`` pairs; each is ablated alone (``ablation`` "mean" or
    "zero" of its ``hook_z``). ``max_windows`` windows spread evenly over the corpus (None:
    all of them; pydoc_data.topics gives 205 windows of 512 SmolLM2 tokens). ``attention``:
    "auto" (fused where supported), "fused" or "eager". ``progress(stage, done, total)``, when
    given, is called after every chunk of windows (:class:`headscope.progress.Progress` is one).

    >>> r = icl_score(model, heads=[(4, 1)], max_windows=16)   # doctest: +SKIP
    >>> r.icl_score, r.icl_ci95, r.ablations[0]["delta"], r.ablations[0]["delta_ci95"]   # doctest: +SKIP
    """
    heads = _checked(model, heads, ablation, early, late, window)
    t0 = time.perf_counter()
    windows = natural_windows(model, files, window, max_windows)
    layers = sorted({l for l, _ in heads})
    z_sum: dict[int, torch.Tensor] = {}
    n_z = [0]

    def on_z(layer: int):  # the layer asked for, not parsed from hook.name (an alias in compatibility mode)
        def hook(z, hook):  # z: [batch, pos, head, d_head]
            z_sum[layer] = z_sum.get(layer, 0) + z.float().sum(dim=(0, 1)).cpu()
            if layer == layers[0]:
                n_z[0] += z.shape[0] * z.shape[1]

        return hook

    store: dict[int, list[torch.Tensor]] = {}
    keep = [(f"blocks.{l}.attn.hook_z", on_z(l)) for l in layers] if ablation == "mean" else []
    n_win = len(windows.tokens)

    def step(stage: str):
        if progress is None:
            return None
        progress(stage, 0, n_win)  # the stage shows before its first chunk is done
        return lambda done: progress(stage, done, n_win)

    hooks = keep + residual_hooks(store, layers)
    clean = _clean_losses(model, windows, chunk_size, hooks, attention, step("ICL: clean pass over the windows"))
    residuals = {l: torch.cat(v) for l, v in store.items()}
    store.clear()
    timings = {"icl_clean_s": time.perf_counter() - t0}
    e, lt = _pick(clean, windows, early), _pick(clean, windows, late)
    per_window = lt - e
    per_pos = torch.full((window,), float("nan"))
    per_pos[1 - int(windows.bos) :] = clean.mean(0)
    result = ICLResult(
        float(per_window.mean()),
        _stderr(per_window),
        float(e.mean()),
        float(lt.mean()),
        early,
        late,
        per_pos.numpy(),
        len(windows.tokens),
        windows.describe(),
        ablation if heads else None,
        timings=timings,
        icl_ci95=interval95(per_window),
    )
    t0 = time.perf_counter()
    positions = [early + int(windows.bos) - 1, late + int(windows.bos) - 1]  # model positions predicting them
    for layer, head in heads:
        value = None if ablation == "zero" else (z_sum[layer] / n_z[0])[head]
        hook = _ablate_hook(layer, head, value)
        stage = step(f"ICL: L{layer}H{head} ablated")
        lost = _ablated_losses(model, windows, residuals[layer], layer, hook, positions, chunk_size, attention, stage)
        result.ablations.append(_delta_entry(layer, head, lost, per_window))
    if heads:
        timings["icl_ablation_s"] = time.perf_counter() - t0
    return result
