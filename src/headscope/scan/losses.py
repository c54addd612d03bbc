"""Next-token losses of a pass, and their means over the repeats of a repeated-token sequence.

Its own module so that the scan (:mod:`.induction_scan`) and the causal check
(:mod:`.ablation`) read the same definition without importing each other.

The scan and the causal check never hold a pass's full logits (``[batch, n, vocab]``: 0.8 GB
for 4,097 SmolLM2 tokens, more than the rest of the pass). Inside :func:`normed_output` the
model's forward stops before the unembedding and returns the final norm's output;
:func:`losses_from_normed` then unembeds it a slice at a time with the model's own unembedding
weights (the same product) and reduces each slice to losses in place, with an online
logsumexp over vocabulary slices small enough to stay in the CPU's cache. Whether a
model's logits really are its unembedding of that output (no soft-capping or scaling after
it) is checked once per model on a short input (:func:`normed_route_ok`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import numpy as np
import torch

from ..models.model import HeadscopeModel
from ..scores.layout import RepeatLayout, first_repeat_targets, later_repeat_targets


def token_losses(logits: torch.Tensor, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``[batch, n-1]`` cross-entropy of predicting token p+1 at position p, in position chunks."""
    # logsumexp - gather over the contiguous vocab axis: 3x faster on CPU than cross_entropy,
    # which wants the classes on axis 1 and so walks a transposed [batch, vocab, pos] view.
    out = []
    for p in range(0, tokens.shape[1] - 1, chunk):
        lg = logits[:, p : min(p + chunk, tokens.shape[1] - 1)].float()
        tg = tokens[:, p + 1 : p + 1 + lg.shape[1]]
        out.append(torch.logsumexp(lg, dim=-1) - lg.gather(-1, tg[..., None])[..., 0])
    return torch.cat(out, dim=1)


def _lse_minus_target(lg: torch.Tensor, tg: torch.Tensor) -> torch.Tensor:
    """``logsumexp(lg) - lg[tg]`` over the last axis, overwriting ``lg`` (a slice no one else reads).

    The same steps as ``torch.logsumexp`` (max, shift, exp, sum, log), done in place: no
    temporary the size of the slice.
    """
    target = lg.gather(-1, tg[..., None])[..., 0]
    top = lg.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return lg.sub_(top).exp_().sum(-1).log_() + top[..., 0] - target


def _bridge(model):
    return model.bridge if isinstance(model, HeadscopeModel) else model


def _unembed_module(model) -> torch.nn.Module:
    return _bridge(model).unembed.original_component


def _linear_parts(unembed: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(weight [vocab, d_model], bias or None)`` of a plain linear unembedding; None for any other module.

    An all-zero bias is dropped: it changes no logit, but ``F.linear`` with a bias first copies the
    bias into every row of the output (``addmm``), a pass over the logits the product alone does
    not make (SmolLM2's loader gives ``lm_head`` a zero bias).
    """
    if type(unembed) is not torch.nn.Linear:
        return None
    bias = unembed.bias
    return unembed.weight, (bias if bias is not None and bool(torch.any(bias != 0)) else None)


def _lse_minus_target_by_columns(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tg: torch.Tensor, columns: int
) -> torch.Tensor:
    """``logsumexp(x W^T + b) - (x W^T + b)[tg]`` per row of ``x [R, d_model]``, ``columns`` logits at a time.

    An online logsumexp over vocabulary slices (running max and rescaled sum, as in
    Milakov & Gimelshein 2018): each slice of ``R x columns`` logits is small enough to stay in
    the CPU's cache while it is reduced, and the unembedding is still read once.
    """
    rows = x.shape[0]
    top = torch.full((rows,), float("-inf"), dtype=torch.float32, device=x.device)
    total = torch.zeros(rows, dtype=torch.float32, device=x.device)
    target = torch.zeros(rows, dtype=torch.float32, device=x.device)
    for c in range(0, weight.shape[0], columns):
        lg = torch.nn.functional.linear(x, weight[c : c + columns], None if bias is None else bias[c : c + columns])
        lg = lg.float()
        local = tg - c
        inside = (local >= 0) & (local < lg.shape[1])
        target += torch.where(inside, lg.gather(-1, local.clamp(0, lg.shape[1] - 1)[:, None])[:, 0], 0.0)
        new = torch.maximum(top, lg.amax(-1))
        new = torch.where(torch.isfinite(new), new, torch.zeros_like(new))
        total.mul_(torch.exp(top - new)).add_(lg.sub_(new[:, None]).exp_().sum(-1))
        top = new
    return total.log_() + top - target


@contextlib.contextmanager
def normed_output(model) -> Iterator[None]:
    """Inside the block, ``model``'s forward returns the final norm's output ``[batch, n, d_model]``, not logits.

    The unembedding (a bridge component that HF's model calls as its ``lm_head``) passes its
    input through; :func:`losses_from_normed` applies it a slice at a time.
    """
    unembed = _bridge(model).unembed
    try:
        # object.__setattr__: a bridge's __setattr__ forwards unknown names to the HF module.
        object.__setattr__(unembed, "forward", _pass_through)
        yield
    finally:
        unembed.__dict__.pop("forward", None)


def _pass_through(hidden_states, **kwargs):
    return hidden_states


_route_ok: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # bridge -> bool


@torch.no_grad()
def normed_route_ok(model) -> bool:
    """Whether ``model``'s logits are its unembedding module applied to the final norm's output.

    Checked once per model (weakly cached per bridge) on a 4-token input; a model
    that soft-caps or scales its logits after the unembedding fails and keeps full logits.
    """
    bridge = _bridge(model)
    if bridge in _route_ok:
        return _route_ok[bridge]
    tokens = torch.zeros(1, 4, dtype=torch.long, device=bridge.cfg.device)
    try:
        full = bridge.run_with_hooks(tokens, fwd_hooks=[], use_cache=False)
        with normed_output(bridge):
            normed = bridge.run_with_hooks(tokens, fwd_hooks=[], use_cache=False)
        ok = normed.shape[-1] != full.shape[-1] and torch.allclose(
            _unembed_module(bridge)(normed).float(), full.float(), rtol=1e-5, atol=1e-5
        )
    except Exception:  # an architecture the patch does not fit: keep the full logits
        ok = False
    _route_ok[bridge] = bool(ok)
    return bool(ok)


SLICE_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 25}
"""Logits per slice in :func:`losses_from_normed`, by device type: on a CPU few enough to be reduced
while still in the cache; elsewhere few large products ("other": any device not named)."""


def losses_from_normed(
    model, normed: torch.Tensor, tokens: torch.Tensor, positions=None, elements: int | None = None
) -> torch.Tensor:
    """Cross-entropy of predicting ``tokens[:, p + 1]`` at each position ``p``, from the final norm's output.

    ``normed [batch, n, d_model]`` (a pass inside :func:`normed_output`); ``positions`` (default
    ``0..n-2``) the positions wanted. Returns ``[batch, len(positions)]`` float32. About
    ``elements`` logits exist at a time (default: :data:`SLICE_ELEMENTS` for the device: 1M on a
    CPU, 32M elsewhere), each slice reduced in place. A plain
    linear unembedding is applied a vocabulary slice at a time to up to 2,048 rows
    (:func:`_lse_minus_target_by_columns`); any other module, to whole rows.
    """
    module = _unembed_module(model)
    n = tokens.shape[1]
    pos = torch.arange(n - 1) if positions is None else torch.as_tensor(np.asarray(positions), dtype=torch.long)
    pos = pos.to(normed.device)
    x = normed.index_select(1, pos)  # [B, P, d_model]
    tg = tokens.to(normed.device).index_select(1, pos + 1)  # [B, P]
    B, P = tg.shape
    x, tg = x.reshape(B * P, -1), tg.reshape(-1)
    if elements is None:
        elements = SLICE_ELEMENTS.get(normed.device.type, SLICE_ELEMENTS["other"])
    out = torch.empty(B * P, dtype=torch.float32, device=normed.device)
    linear = _linear_parts(module)
    if linear is not None:
        weight, bias = linear
        rows = 2048
        columns = max(256, min(weight.shape[0], elements // min(rows, max(1, B * P))))
        for r in range(0, B * P, rows):
            out[r : r + rows] = _lse_minus_target_by_columns(x[r : r + rows], weight, bias, tg[r : r + rows], columns)
        return out.view(B, P)
    rows = max(1, elements // int(getattr(module, "out_features", 0) or 50_000))
    for r in range(0, B * P, rows):
        out[r : r + rows] = _lse_minus_target(module(x[r : r + rows]).float(), tg[r : r + rows])
    return out.view(B, P)


def pass_losses(model, out: torch.Tensor, tokens: torch.Tensor, positions=None, *, normed: bool) -> torch.Tensor:
    """``[batch, len(positions)]`` losses (default: every position ``0..n-2``) from a pass's output.

    ``out`` is the final norm's output where the pass ran inside :func:`normed_output`
    (``normed``, the route :func:`normed_route_ok` allows: :func:`losses_from_normed`), else the
    logits, of which only ``positions`` are read. The one place a pass's output becomes losses.
    """
    if normed:
        return losses_from_normed(model, out, tokens, positions)
    if positions is None:
        return token_losses(out, tokens)
    pos = torch.as_tensor(np.asarray(positions), dtype=torch.long, device=out.device)
    targets = tokens.to(out.device).index_select(1, pos + 1)
    return _lse_minus_target(out.index_select(1, pos).float(), targets)


def counted_positions(layout: RepeatLayout) -> np.ndarray:
    """Every position whose loss a repeat mean reads (first-repeat and later-repeat targets), sorted."""
    return np.union1d(first_repeat_targets(layout), later_repeat_targets(layout))


def repeat_means_at(
    losses: torch.Tensor, positions: np.ndarray, layout: RepeatLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(later [batch], first [batch])`` repeat means of ``losses [batch, len(positions)]`` taken at ``positions``."""
    rows = {int(p): i for i, p in enumerate(np.asarray(positions))}
    later = torch.as_tensor([rows[int(p)] for p in later_repeat_targets(layout)], device=losses.device)
    first = torch.as_tensor([rows[int(p)] for p in first_repeat_targets(layout)], device=losses.device)
    return losses.index_select(-1, later).mean(-1), losses.index_select(-1, first).mean(-1)


def later_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """Mean of ``[..., n-1]`` per-position losses over the predictable targets in repeats 2..R.

    The targets are :func:`~headscope.scores.layout.later_repeat_targets` (the first token of
    repeat 2, which no context predicts, left out).
    """
    idx = torch.as_tensor(later_repeat_targets(layout), device=per_position.device)
    return per_position.index_select(-1, idx).mean(-1)


def first_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """Mean of ``[..., n-1]`` per-position losses over the targets in repeat 1."""
    idx = torch.as_tensor(first_repeat_targets(layout), device=per_position.device)
    return per_position.index_select(-1, idx).mean(-1)
