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
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import BadInput
from ..results.icl_result import ICLResult
from ..scan.losses import token_losses
from ..settings import check_ablation
from .documents import TokenWindows, natural_windows

#: How the ICL check may ablate a head (resample is the scan's alone).
ICL_ABLATIONS = ("mean", "zero")


def _pick(per_pos: torch.Tensor, windows: TokenWindows, i: int) -> torch.Tensor:
    """``[n_windows]`` loss of document token ``i`` from ``[n_windows, n-1]`` per-position losses."""
    return per_pos[:, i + int(windows.bos) - 1]


@torch.no_grad()
def _losses(model, windows: TokenWindows, chunk: int, hooks=()) -> torch.Tensor:
    out = []
    for start in range(0, len(windows.tokens), chunk):
        tokens = windows.tokens[start : start + chunk].to(model.cfg.device)
        logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks))
        out.append(token_losses(logits, tokens).cpu())
        del logits
    return torch.cat(out)


def _stderr(x: torch.Tensor) -> float:
    return float(x.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


@torch.no_grad()
def icl_score(
    model,
    files=None,
    *,
    heads=(),
    ablation: str = "mean",
    early: int = 50,
    late: int = 500,
    window: int = 512,
    max_windows: int | None = 32,
    chunk_size: int = 4,
) -> ICLResult:
    """Olsson et al.'s in-context learning score of ``model``, and each of ``heads``' share in it.

    ``heads`` are ``(layer, head)`` pairs; each is ablated alone (``ablation`` "mean" or
    "zero" of its ``hook_z``). ``max_windows`` windows spread evenly over the corpus (None:
    all of them; pydoc_data.topics gives 205 windows of 512 SmolLM2 tokens).

    >>> r = icl_score(model, heads=[(4, 1)], max_windows=16)   # doctest: +SKIP
    >>> r.icl_score, r.ablations[0]["delta"]                   # doctest: +SKIP
    """
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
    t0 = time.perf_counter()
    windows = natural_windows(model, files, window, max_windows)
    layers = sorted({l for l, _ in heads})
    z_sum: dict[int, torch.Tensor] = {}
    n_z = [0]

    def on_z(z, hook):  # z: [batch, pos, head, d_head]
        layer = int(hook.name.split(".")[1])
        z_sum[layer] = z_sum.get(layer, 0) + z.float().sum(dim=(0, 1)).cpu()
        if layer == layers[0]:
            n_z[0] += z.shape[0] * z.shape[1]

    keep = [(f"blocks.{l}.attn.hook_z", on_z) for l in layers] if ablation == "mean" else []
    clean = _losses(model, windows, chunk_size, keep)
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
    )
    t0 = time.perf_counter()
    for layer, head in heads:
        value = None if ablation == "zero" else (z_sum[layer] / n_z[0])[head]

        def ablate(z, hook, head=head, value=value):
            z = z.clone()
            z[:, :, head, :] = 0.0 if value is None else value.to(z.device, z.dtype)
            return z

        lost = _losses(model, windows, chunk_size, [(f"blocks.{layer}.attn.hook_z", ablate)])
        ae, al = _pick(lost, windows, early), _pick(lost, windows, late)
        score = al - ae
        result.ablations.append(
            {
                "layer": layer,
                "head": head,
                "icl_score": float(score.mean()),
                "delta": float((score - per_window).mean()),
                "delta_stderr": _stderr(score - per_window),
                "loss_early": float(ae.mean()),
                "loss_late": float(al.mean()),
            }
        )
    if heads:
        timings["icl_ablation_s"] = time.perf_counter() - t0
    return result
