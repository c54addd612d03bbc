"""Rotary position embeddings (RoPE), applied exactly as the Hugging Face model applies them.

We take ``cos``/``sin`` from the model's own rotary module (``*RotaryEmbedding`` inside the
wrapped Hugging Face model), so the frequencies are the real ones: SmolLM2's
``rope_theta`` is 100000 although ``model.cfg.rotary_base`` says 10000. RoPE is linear in
its input, which is what lets a score split over residual components: rotate each
component's query (key) vector at its own position and the pieces still add up.
"""

from __future__ import annotations

import torch


def is_rotary(model) -> bool:
    return getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"


def _hf_rotary_module(model):
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise ValueError("the model has no wrapped Hugging Face model to take rotary frequencies from")
    for mod in hf.modules():
        name = type(mod).__name__
        if "Rotary" in name and "Bridge" not in name:
            return mod
    raise ValueError(f"no rotary embedding module found in {type(hf).__name__}")


@torch.no_grad()
def cos_sin(model, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[len(positions), rotary_dim]`` in float64."""
    mod = _hf_rotary_module(model)
    d = int(mod.inv_freq.shape[0]) * 2
    dummy = torch.zeros(1, len(positions), d, dtype=torch.float32, device=mod.inv_freq.device)
    cos, sin = mod(dummy, positions.reshape(1, -1).to(mod.inv_freq.device))
    return cos[0].double().cpu(), sin[0].double().cpu()


def rope_theta(model) -> float | None:
    """The base actually used (from the rotary module's frequencies), for the record."""
    try:
        inv = _hf_rotary_module(model).inv_freq.double().cpu()
    except ValueError:
        return None
    d = inv.shape[0] * 2
    # inv_freq[i] = theta ** (-2i/d)  =>  theta = inv_freq[1] ** (-d/2)
    return float(inv[1] ** (-d / 2)) if inv.shape[0] > 1 else None


def _rotate_half(x: torch.Tensor, adjacent: bool) -> torch.Tensor:
    if adjacent:  # GPT-J style: pairs (0,1), (2,3), ...
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((-x2, x1), dim=-1).flatten(-2)
    half = x.shape[-1] // 2  # GPT-NeoX / Llama style: pairs (i, i + d/2)
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, adjacent: bool = False) -> torch.Tensor:
    """Rotate ``x[..., pos, d_head]`` by ``cos/sin[pos, rotary_dim]``; dims past rotary_dim pass through."""
    r = cos.shape[-1]
    if adjacent:  # cos/sin from HF repeat each frequency twice in halves; re-pair them for adjacent layout
        cos = cos[..., : r // 2].repeat_interleave(2, dim=-1)
        sin = sin[..., : r // 2].repeat_interleave(2, dim=-1)
    rot, rest = x[..., :r], x[..., r:]
    rot = rot * cos + _rotate_half(rot, adjacent) * sin
    return torch.cat((rot, rest), dim=-1) if rest.shape[-1] else rot


def adjacent_pairs(model) -> bool:
    return bool(getattr(model.cfg, "rotary_adjacent_pairs", False))


@torch.no_grad()
def offset_maps(model, offsets) -> torch.Tensor:
    """``M [len(offsets), d_head, d_head]`` (float64): ``M_d`` with ``RoPE_i(q) . RoPE_{i-d}(k) = q M_d k^T``.

    RoPE's score depends on the positions only through their difference (``R_i^T R_j =
    R_{j-i}``), so the query is rotated by ``d`` and the key left at position 0. Row ``n`` of
    ``M_d`` is the ``n``-th basis vector rotated by the model's own ``cos``/``sin`` at position
    ``d``; ``q M_d`` is then ``RoPE_d(q)`` by linearity. So the token QK circuit at offset ``d``
    is ``W_Q M_d W_K^T`` (``M_0`` is the identity: the position-free form holds only there).
    """
    offsets = torch.as_tensor(list(offsets), dtype=torch.long)
    d_head = int(model.cfg.d_head)
    cos, sin = cos_sin(model, offsets)
    eye = torch.eye(d_head, dtype=torch.float64)
    return torch.stack([apply_rope(eye, cos[n], sin[n], adjacent_pairs(model)) for n in range(len(offsets))])
