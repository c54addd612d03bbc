"""The causal check without recomputing the layers an ablation cannot change.

Ablating heads in layer ``l`` (their ``hook_z``) leaves every layer below ``l`` exactly as in
the clean run, so an ablation pass can restart from the clean run's residual stream entering
block ``l`` (``blocks.{l}.hook_resid_pre``) instead of from the embedding.

TransformerLens 4.3's ``forward(..., start_at_layer=l)`` injects a residual at block ``l``
but still *executes* blocks ``0..l-1`` and throws their output away (its docstring says
so), which saves nothing. :func:`restart_from` therefore also swaps those blocks for a
pass-through for the duration of the call; the HF model still computes the position
embeddings / rotary tables / ALiBi biases / mask for the full length, and block ``l`` swaps
the residual in.

Two architectures need more than TransformerLens does (:func:`skip_blocks` does both):

- a Hugging Face layer that returns a tuple (Bloom, Falcon, MPT, GPT-Neo: the model reads
  ``outputs[0]``) gets a tuple from the pass-through too, not a tensor it would index along
  the batch;
- a block bridge with its own ``forward`` that never swaps the residual in
  (TransformerLens 4.3's ``BloomBlockBridge``, which would run block ``l`` on the *embedding
  norm of* the residual) gets the swap from a forward pre-hook: the residual the bridge
  stashed for ``start_at_layer``, exactly what ``BlockBridge`` itself puts there.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..settings import ABLATION_MODES
from .fused import fused_attention, fused_supported
from .losses import (
    counted_positions,
    normed_output,
    normed_route_ok,
    pass_losses,
    repeat_means_at,
)
from .sequences import RepeatedTokens

_tuple_width: dict[type, int] = {}


def _returns_tuple(layer: torch.nn.Module | None) -> int:
    """How many items the HF layer's ``forward`` returns as a tuple (0: a tensor), read from its source.

    Bloom's ``BloomBlock.forward`` ends ``return output, attn_weights`` and ``BloomModel`` takes
    ``outputs[0]``; Llama's returns the tensor and its model uses it as it is.
    """
    if layer is None:
        return 0
    cls = type(layer)
    if cls not in _tuple_width:
        width = 0
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
            returns = [n.value for n in ast.walk(tree.body[0]) if isinstance(n, ast.Return) and n.value is not None]
            if returns and all(isinstance(r, ast.Tuple) for r in returns):
                width = max(len(r.elts) for r in returns)  # type: ignore[attr-defined]
        except (OSError, TypeError, SyntaxError, IndexError):
            pass
        _tuple_width[cls] = width
    return _tuple_width[cls]


def _pass_through_for(width: int):
    """A block forward returning its incoming hidden states, as a tuple of ``width`` items where the HF layer does."""

    def pass_through(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden,) + (None,) * (width - 1) if width else hidden

    return pass_through


def _swap_in_start_residual(block, args, kwargs):
    """Forward pre-hook: the residual stashed for ``start_at_layer`` replaces the block's hidden states.

    The same swap as TransformerLens's ``BlockBridge._maybe_inject_start_residual`` (a no-op
    where that already ran: the same tensor), for block bridges whose ``forward`` skips it.
    """
    residual = getattr(block, "_start_residual", None)
    if residual is None or getattr(block, "_start_at_layer_idx", None) is None:
        return None
    if args and isinstance(args[0], torch.Tensor):
        return (residual,) + tuple(args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": residual}
    return None


@contextlib.contextmanager
def skip_blocks(model, below: int) -> Iterator[None]:
    """Make ``model.blocks[:below]`` return their input unchanged inside the block, and block ``below``
    take the residual a ``start_at_layer`` pass hands it (whatever its bridge does)."""
    all_blocks = list(model.blocks)
    blocks = all_blocks[:below]
    handle = None
    try:
        for block in blocks:
            # object.__setattr__: a bridge's __setattr__ forwards unknown names to the HF module.
            width = _returns_tuple(getattr(block, "original_component", None))
            object.__setattr__(block, "forward", _pass_through_for(width))
        if below < len(all_blocks):
            handle = all_blocks[below].register_forward_pre_hook(_swap_in_start_residual, with_kwargs=True)
        yield
    finally:
        if handle is not None:
            handle.remove()
        for block in blocks:
            block.__dict__.pop("forward", None)


def first_layer(heads: list[tuple[int, int]]) -> int:
    """The first layer holding one of ``heads`` ((layer, head) pairs): where a restart begins."""
    return min(layer for layer, _ in heads)


def residual_hooks(store: dict[int, list[torch.Tensor]], layers) -> list[tuple[str, Callable]]:
    """Hooks that append ``blocks.{l}.hook_resid_pre`` ``[batch, n, d_model]`` to ``store[l]``.

    Add them to the clean pass (one per chunk); ``torch.cat(store[l])`` is then the full batch.
    """

    def keep(layer: int):  # the layer asked for, not parsed from hook.name (an alias in compatibility mode)
        def hook(resid, hook):
            store.setdefault(layer, []).append(resid.detach().clone())

        return hook

    return [(f"blocks.{l}.hook_resid_pre", keep(l)) for l in sorted(set(layers))]


@torch.no_grad()
def _capture(model, tokens: torch.Tensor, hooks: list, stop: int, chunk: int | None, fused: bool | None) -> None:
    """Clean passes over ``tokens`` (``chunk`` sequences each) that stop before block ``stop``, with ``hooks``."""
    chunk = chunk or tokens.shape[0]
    use_fused = fused_supported(model, tokens.shape[-1]) if fused is None else fused
    ctx = fused_attention(model) if use_fused else contextlib.nullcontext()
    with ctx:
        for s in range(0, tokens.shape[0], chunk):
            model.run_with_hooks(
                tokens[s : s + chunk].to(model.cfg.device),
                fwd_hooks=hooks,
                stop_at_layer=stop if stop < model.cfg.n_layers else None,
                use_cache=False,
            )


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
    _capture(model, tokens, residual_hooks(store, layers), layers[-1] + 1, chunk, fused)
    return {l: torch.cat(v) for l, v in store.items()}


def capture_z(
    model, tokens: torch.Tensor, heads, chunk: int | None = None, fused: bool | None = None
) -> dict[tuple[int, int], torch.Tensor]:
    """``{(l, h): clean hook_z [batch, n, d_head]}`` of ``heads``, from passes that stop after the last layer."""
    heads = sorted(set(map(tuple, heads)))
    store: dict[tuple[int, int], list[torch.Tensor]] = {}

    def keep(layer: int):  # the layer asked for, not parsed from hook.name (an alias in compatibility mode)
        def hook(z, hook):
            for l, h in heads:
                if l == layer:
                    store.setdefault((l, h), []).append(z[:, :, h].detach().clone())

        return hook

    hooks = [(f"blocks.{l}.attn.hook_z", keep(l)) for l in sorted({l for l, _ in heads})]
    _capture(model, tokens, hooks, max(l for l, _ in heads) + 1, chunk, fused)
    return {k: torch.cat(v) for k, v in store.items()}


def donor_order(batch: int, seed: int = 0) -> np.ndarray:
    """For each sequence ``b``, another sequence ``donor[b] != b`` whose activations replace its own (seeded).

    A random cyclic order: every sequence gives to exactly one other and takes from one other.

    >>> d = donor_order(5, seed=1)
    >>> sorted(d.tolist()) == list(range(5)) and all(d[b] != b for b in range(5))
    True
    """
    if batch < 2:
        raise ValueError("resample ablation needs at least 2 sequences")
    order = np.random.default_rng(seed).permutation(batch)
    donor = np.empty(batch, dtype=np.int64)
    donor[order] = np.roll(order, -1)
    return donor


ABLATIONS = ABLATION_MODES  # declared once, with the other scan settings


@dataclass(frozen=True)
class Replacement:
    """What an ablated head's ``hook_z`` becomes.

    "mean": ``z_mean[layer, head]`` ``[d_head]``, its mean over every sequence and position of the
    clean run; "zero": 0; "resample": ``donor_z[(layer, head)]`` ``[batch, n, d_head]``, row ``b``
    being the head's clean output on another sequence (:func:`donor_order`), so the replaced
    output is one the head really writes, on unrelated tokens.
    """

    kind: str
    z_mean: torch.Tensor | None = None
    donor_z: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Replacement | torch.Tensor | None) -> Replacement:
        """A replacement from a ``z_mean`` tensor ("mean") or ``None`` ("zero"); a Replacement as it is."""
        if isinstance(value, Replacement):
            return value
        return cls("zero") if value is None else cls("mean", z_mean=value)

    def value(self, layer: int, head: int, rows: slice) -> torch.Tensor | float:
        """The replacement for ``head`` in ``layer`` on sequences ``rows`` (broadcasts over ``z[rows, :, head]``)."""
        if self.kind == "zero":
            return 0.0
        if self.kind == "mean":
            assert self.z_mean is not None
            return self.z_mean[layer, head]
        return self.donor_z[(layer, head)][rows]


@torch.no_grad()
def restart_from(
    model, resid: torch.Tensor, layer: int, fwd_hooks=(), fused: bool | None = None, normed: bool = False
) -> torch.Tensor:
    """Logits ``[batch, n, vocab]`` of a pass that enters block ``layer`` with ``resid`` ``[batch, n, d_model]``.

    Blocks below ``layer`` are skipped (not computed); hooks on them do not fire. ``fused``
    (default: wherever supported) routes attention through the fused kernel. ``normed``: return
    the final norm's output ``[batch, n, d_model]`` instead (:func:`~.losses.normed_output`).
    """
    use_fused = fused_supported(model, resid.shape[-2]) if fused is None else fused
    ctx = fused_attention(model) if use_fused else contextlib.nullcontext()
    with ctx, skip_blocks(model, layer), normed_output(model) if normed else contextlib.nullcontext():
        return model.run_with_hooks(resid, start_at_layer=layer, fwd_hooks=list(fwd_hooks), use_cache=False)


def ablation_hooks(
    heads: list[tuple[int, int]], replacement: Replacement | torch.Tensor | None, rows: slice = slice(None)
) -> list[tuple[str, Callable]]:
    """``hook_z`` hooks replacing ``heads``' outputs on sequences ``rows`` by :class:`Replacement`.

    ``replacement``: a Replacement, or (as before) ``z_mean`` ``[L, H, d_head]`` for mean ablation
    and ``None`` for zero ablation.
    """
    repl = Replacement.of(replacement)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(layer: int):  # the layer asked for, not parsed from hook.name (an alias in compatibility mode)
        def hook(z, hook):
            z = z.clone()
            for head in by_layer[layer]:
                v = repl.value(layer, head, rows)
                z[:, :, head, :] = v.to(z.device, z.dtype) if isinstance(v, torch.Tensor) else v
            return z

        return hook

    return [(f"blocks.{layer}.attn.hook_z", ablate(layer)) for layer in by_layer]


@torch.no_grad()
def ablated_losses(
    model,
    rt: RepeatedTokens,
    heads: list[tuple[int, int]],
    chunk: int,
    replacement: Replacement | torch.Tensor | None,
    residuals: dict[int, torch.Tensor],
    fused: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence later- and first-repeat losses ``([batch], [batch])`` with ``heads`` ablated.

    Restarted at the first ablated layer from the clean residuals: ``residuals[l]``
    ``[batch, n, d_model]`` is the clean run's ``blocks.{l}.hook_resid_pre`` for all
    ``rt.tokens`` (from :func:`residual_hooks` or :func:`capture_residuals`). The reference
    it is tested against is ``induction_scan.ablated_later_loss`` (full passes).
    """
    start = first_layer(heads)
    device = model.cfg.device
    normed = normed_route_ok(model)  # losses only at the counted positions, logits a slice at a time
    positions = counted_positions(rt.layout)
    later, first = [], []
    for s in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[s : s + chunk].to(device)
        resid = residuals[start][s : s + chunk].to(device)
        hooks = ablation_hooks(heads, replacement, slice(s, s + chunk))
        out = restart_from(model, resid, start, hooks, fused=fused, normed=normed)
        lat, fst = repeat_means_at(pass_losses(model, out, tokens, positions, normed=normed), positions, rt.layout)
        later.append(lat.cpu())
        first.append(fst.cpu())
    return torch.cat(later).double().numpy(), torch.cat(first).double().numpy()


def ablated_later_loss_restart(model, rt, heads, chunk, replacement, residuals, fused=None) -> float:
    """The mean over sequences of :func:`ablated_losses`' later-repeat loss."""
    return float(ablated_losses(model, rt, heads, chunk, replacement, residuals, fused)[0].mean())
