"""The causal check without recomputing the layers an ablation cannot change.

Ablating heads in layer ``l`` (their ``hook_z``) leaves every layer below ``l`` exactly as in
the clean run, so an ablation pass can restart from the clean run's residual stream entering
block ``l`` (``blocks.{l}.hook_resid_pre``) instead of from the embedding.

TransformerLens 4.3's ``forward(..., start_at_layer=l)`` injects a residual at block ``l``
but still *executes* blocks ``0..l-1`` and throws their output away (its docstring says
so), which saves nothing. :func:`restart_from` therefore also swaps those blocks for a
pass-through for the duration of the call; the HF model still computes the position
embeddings / rotary tables / mask for the full length, and block ``l`` swaps the residual in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from .fused import fused_attention, fused_supported
from .losses import later_repeat_mean, token_losses
from .sequences import RepeatedTokens


def _pass_through(*args, **kwargs):
    """A block that returns its incoming hidden states (HF decoder layers return a tensor)."""
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def skip_blocks(model, below: int) -> Iterator[None]:
    """Make ``model.blocks[:below]`` return their input unchanged inside the block."""
    blocks = list(model.blocks)[:below]
    try:
        for block in blocks:
            # object.__setattr__: a bridge's __setattr__ forwards unknown names to the HF module.
            object.__setattr__(block, "forward", _pass_through)
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)


def first_layer(heads: list[tuple[int, int]]) -> int:
    """The first layer holding one of ``heads`` ((layer, head) pairs): where a restart begins."""
    return min(layer for layer, _ in heads)


def residual_hooks(store: dict[int, list[torch.Tensor]], layers) -> list[tuple[str, Callable]]:
    """Hooks that append ``blocks.{l}.hook_resid_pre`` ``[batch, n, d_model]`` to ``store[l]``.

    Add them to the clean pass (one per chunk); ``torch.cat(store[l])`` is then the full batch.
    """

    def keep(resid, hook):
        store.setdefault(int(hook.name.split(".")[1]), []).append(resid.detach().clone())

    return [(f"blocks.{l}.hook_resid_pre", keep) for l in sorted(set(layers))]


@torch.no_grad()
def capture_residuals(
    model, tokens: torch.Tensor, layers, chunk: int | None = None, fused: bool | None = None
) -> dict[int, torch.Tensor]:
    """``{l: clean resid_pre [batch, n, d_model]}`` for ``layers``, from passes that stop after the last one.

    The "recompute once" alternative to keeping residuals from the clean pass
    (``induction.score_pass(keep_residuals=...)``): ``chunk`` sequences per pass (default all),
    each pass stopping at the block after the deepest layer asked for. ``fused`` (default:
    wherever supported) routes attention through the fused kernel.
    """
    layers = sorted(set(layers))
    store: dict[int, list[torch.Tensor]] = {}
    stop = layers[-1] + 1
    chunk = chunk or tokens.shape[0]
    use_fused = fused_supported(model) if fused is None else fused
    ctx = fused_attention(model) if use_fused else contextlib.nullcontext()
    with ctx:
        for s in range(0, tokens.shape[0], chunk):
            model.run_with_hooks(
                tokens[s : s + chunk].to(model.cfg.device),
                fwd_hooks=residual_hooks(store, layers),
                stop_at_layer=stop if stop < model.cfg.n_layers else None,
                use_cache=False,
            )
    return {l: torch.cat(v) for l, v in store.items()}


@torch.no_grad()
def restart_from(model, resid: torch.Tensor, layer: int, fwd_hooks=(), fused: bool | None = None) -> torch.Tensor:
    """Logits ``[batch, n, vocab]`` of a pass that enters block ``layer`` with ``resid`` ``[batch, n, d_model]``.

    Blocks below ``layer`` are skipped (not computed); hooks on them do not fire. ``fused``
    (default: wherever supported) routes attention through the fused kernel.
    """
    use_fused = fused_supported(model) if fused is None else fused
    ctx = fused_attention(model) if use_fused else contextlib.nullcontext()
    with ctx, skip_blocks(model, layer):
        return model.run_with_hooks(resid, start_at_layer=layer, fwd_hooks=list(fwd_hooks), use_cache=False)


def ablation_hooks(heads: list[tuple[int, int]], z_mean: torch.Tensor | None) -> list[tuple[str, Callable]]:
    """``hook_z`` hooks replacing ``heads``' outputs by ``z_mean[layer, head]`` ``[d_head]`` (or zero)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(z, hook):
        layer = int(hook.name.split(".")[1])
        z = z.clone()
        for head in by_layer[layer]:
            z[:, :, head, :] = 0.0 if z_mean is None else z_mean[layer, head].to(z.device, z.dtype)
        return z

    return [(f"blocks.{layer}.attn.hook_z", ablate) for layer in by_layer]


@torch.no_grad()
def ablated_later_loss_restart(
    model,
    rt: RepeatedTokens,
    heads: list[tuple[int, int]],
    chunk: int,
    z_mean: torch.Tensor | None,
    residuals: dict[int, torch.Tensor],
    fused: bool | None = None,
) -> float:
    """``induction.ablated_later_loss`` restarted at the first ablated layer from the clean residuals.

    ``residuals[l]`` ``[batch, n, d_model]``: the clean run's ``blocks.{l}.hook_resid_pre`` for
    all ``rt.tokens`` (from :func:`residual_hooks` or :func:`capture_residuals`).
    """
    start = first_layer(heads)
    hooks = ablation_hooks(heads, z_mean)
    device = model.cfg.device
    total = 0.0
    for s in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[s : s + chunk].to(device)
        resid = residuals[start][s : s + chunk].to(device)
        logits = restart_from(model, resid, start, hooks, fused=fused)
        total += later_repeat_mean(token_losses(logits, tokens), rt.layout).sum().item()
        del logits
    return total / rt.tokens.shape[0]
