"""Rotary position embeddings (RoPE), applied exactly as the Hugging Face model applies them.

We take ``cos``/``sin`` from the model's own rotary module (``*RotaryEmbedding`` inside the
wrapped Hugging Face model), so the frequencies are the real ones: SmolLM2's
``rope_theta`` is 100000 although ``model.cfg.rotary_base`` says 10000. RoPE is linear in
its input, which is what lets a score split over residual components: rotate each
component's query (key) vector at its own position and the pieces still add up.

Two layouts, as transformers has them:

- Llama, GPT-NeoX, Phi, Qwen, ...: the module computes ``cos``/``sin`` from its ``inv_freq``
  and dimension ``i`` turns with ``i + r/2`` (``rotate_half``); a partial rotary (NeoX's
  ``rotary_pct``, Phi's ``partial_rotary_factor``) turns the first ``r`` dimensions only;
- GPT-J: ``GPTJRotaryEmbedding`` keeps a ``[sin | cos]`` table (``embed_positions``), returns
  ``(sin, cos)`` in that order, and dimension ``2i`` turns with ``2i + 1``
  (``rotate_every_two``) over the first ``rotary_dim`` dimensions. TransformerLens 4.3's
  bridge leaves ``cfg.rotary_adjacent_pairs`` False for it, so the layout is read from the module.

A rotary module in neither form is refused (:class:`~headscope.errors.BadInput`, naming it)
rather than guessed.
"""

from __future__ import annotations

import torch

from ..errors import BadInput


def is_rotary(model) -> bool:
    return getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"


def _hf_rotary_module(model):
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise ValueError("the model has no wrapped Hugging Face model to take rotary frequencies from")
    for mod in hf.modules():
        name = type(mod).__name__
        if "Rotary" in name and "Bridge" not in name:
            if not (_is_table(mod) or isinstance(getattr(mod, "inv_freq", None), torch.Tensor)):
                raise BadInput(
                    f"{type(hf).__name__}'s rotary module {name} keeps neither inv_freq nor GPT-J's sin/cos "
                    "table; headscope cannot reproduce its rotation",
                    hint="the QK analysis supports Llama-, GPT-NeoX-, Phi- and GPT-J-style rotary models",
                )
            return mod
    raise ValueError(f"no rotary embedding module found in {type(hf).__name__}")


def _is_table(mod) -> bool:
    """GPT-J's form: a ``[positions, rotary_dim]`` table ``[sin | cos]`` and no ``inv_freq``."""
    return not hasattr(mod, "inv_freq") and isinstance(getattr(mod, "embed_positions", None), torch.Tensor)


@torch.no_grad()
def cos_sin(model, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[len(positions), rotary_dim]`` in float64, each frequency in both halves.

    That is transformers' ``rotate_half`` layout (``cos[i] == cos[i + r/2]``);
    :func:`apply_rope` re-pairs it for an interleaved model. GPT-J's table holds each
    frequency once (``[sin | cos]``, ``r/2`` each): its halves are repeated into that layout.
    """
    mod = _hf_rotary_module(model)
    if _is_table(mod):
        table = mod.embed_positions
        sincos = table[positions.to(table.device)].double().cpu()
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    d = int(mod.inv_freq.shape[0]) * 2
    dummy = torch.zeros(1, len(positions), d, dtype=torch.float32, device=mod.inv_freq.device)
    cos, sin = mod(dummy, positions.reshape(1, -1).to(mod.inv_freq.device))
    cos, sin = cos[0].double().cpu(), sin[0].double().cpu()
    half = cos.shape[-1] // 2
    if not (torch.equal(cos[..., :half], cos[..., half:]) and torch.equal(sin[..., :half], sin[..., half:])):
        raise BadInput(  # e.g. Cohere's, which repeats each frequency in place (interleaved) instead
            f"the rotary module {type(mod).__name__} does not lay its frequencies out in halves as "
            "transformers' rotate_half expects; headscope cannot reproduce its rotation",
            hint="the QK analysis supports Llama-, GPT-NeoX-, Phi- and GPT-J-style rotary models",
        )
    return cos, sin


def _inv_freq(mod) -> torch.Tensor:
    """The rotary frequencies ``[r/2]`` (float64): the module's ``inv_freq``, or GPT-J's angles at position 1."""
    if _is_table(mod):
        sin, cos = torch.split(mod.embed_positions[1].double().cpu(), mod.embed_positions.shape[-1] // 2)
        return torch.atan2(sin, cos)  # every angle is below pi at position 1
    return mod.inv_freq.double().cpu()


def rope_theta(model) -> float | None:
    """The base actually used (from the rotary module's frequencies), for the record."""
    try:
        inv = _inv_freq(_hf_rotary_module(model))
    except (ValueError, BadInput):
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
    """Whether dimensions ``2i`` and ``2i + 1`` turn together (GPT-J) rather than ``i`` and ``i + r/2``."""
    if getattr(model.cfg, "rotary_adjacent_pairs", False):
        return True
    try:
        return _is_table(_hf_rotary_module(model))
    except ValueError:
        return False


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
