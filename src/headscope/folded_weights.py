"""Per-head weights in the shapes the circuit math wants, with the norms' gains folded in.

TransformerLens names: ``W_Q``/``W_K``/``W_V`` are ``[layer, head, d_model, d_head]``,
``W_O`` is ``[layer, head, d_head, d_model]``, ``W_E`` ``[d_vocab, d_model]``, ``W_U``
``[d_model, d_vocab]``. Two conventions are applied here, once, so no caller repeats them:

* **Norm gains folded.** A head reads ``norm(x) = x_hat * g (+ b)`` where ``x_hat`` is the
  centred (LayerNorm) or plain (RMSNorm) input divided by its scale. We fold ``g`` into the
  reading matrices (``W_Q, W_K, W_V`` by ``ln1``; ``W_U`` by ``ln_final``) and ``b`` into their
  biases, as TransformerLens's ``fold_ln`` does. What is left, division by the
  input-dependent scale, is what "freezing the normalisation scale" refers to elsewhere.
* **Grouped-query attention expanded.** Models such as Llama/SmolLM2 have fewer key/value
  heads than query heads; query head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``
  (Hugging Face's ``repeat_kv``). ``W_K``/``W_V`` are returned repeated to ``n_heads`` so
  every head has its own pair, and :attr:`HeadWeights.kv_head` records the sharing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadWeights:
    W_Q: torch.Tensor  # [L, H, d_model, d_head], ln1 gain folded in
    W_K: torch.Tensor  # [L, H, d_model, d_head], expanded over GQA groups
    W_V: torch.Tensor  # [L, H, d_model, d_head], expanded over GQA groups
    W_O: torch.Tensor  # [L, H, d_head, d_model]
    b_Q: torch.Tensor  # [L, H, d_head] (zeros where the model has no bias)
    b_K: torch.Tensor  # [L, H, d_head]
    b_V: torch.Tensor  # [L, H, d_head]
    b_O: torch.Tensor  # [L, d_model]
    W_E: torch.Tensor  # [d_vocab, d_model]
    W_U: torch.Tensor  # [d_model, d_vocab], ln_final gain folded in
    W_pos: torch.Tensor | None  # [n_ctx, d_model] for learned absolute positions, else None
    kv_head: list[int]  # query head -> key/value head
    norm: str  # "layernorm" or "rmsnorm"

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]


def _norm_params(component) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    module = getattr(component, "original_component", component)
    return getattr(module, "weight", None), getattr(module, "bias", None)


def _expand_kv(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    n_kv = w.shape[1]
    if n_kv == n_heads:
        return w
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot be grouped over {n_kv} key/value heads")
    return w.repeat_interleave(n_heads // n_kv, dim=1)


def _bias(model, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    try:
        b = getattr(model, name)
    except Exception:
        b = None
    if b is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return b.detach().float()


@torch.no_grad()
def norm_kind(cfg) -> str:
    """``"rmsnorm"`` or ``"layernorm"``: the norm a model's heads read through."""
    rms = getattr(cfg, "uses_rms_norm", False) or getattr(cfg, "normalization_type", "") in ("RMS", "RMSPre")
    return "rmsnorm" if rms else "layernorm"


def head_weights(model) -> HeadWeights:
    """Extract float32 per-head weights from a TransformerBridge (norm gains folded, GQA expanded)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    W_Q = model.W_Q.detach().float()
    W_K = model.W_K.detach().float()
    W_V = model.W_V.detach().float()
    W_O = model.W_O.detach().float()
    n_kv = W_K.shape[1]
    d_head = W_Q.shape[-1]
    b_Q = _bias(model, "b_Q", (L, H, d_head), W_Q)
    b_K = _bias(model, "b_K", (L, n_kv, d_head), W_Q)
    b_V = _bias(model, "b_V", (L, n_kv, d_head), W_Q)
    b_O = _bias(model, "b_O", (L, W_O.shape[-1]), W_Q)
    if b_K.dim() == 3 and b_K.shape[1] != H:
        b_K, b_V = _expand_kv(b_K, H), _expand_kv(b_V, H)
    W_K, W_V = _expand_kv(W_K, H), _expand_kv(W_V, H)

    norm = norm_kind(cfg)
    for layer in range(L):
        g, b = _norm_params(model.blocks[layer].ln1)
        if b is not None:  # bias of the norm flows through the reading matrices
            b = b.detach().float()
            b_Q[layer] += torch.einsum("d,hde->he", b, W_Q[layer])
            b_K[layer] += torch.einsum("d,hde->he", b, W_K[layer])
            b_V[layer] += torch.einsum("d,hde->he", b, W_V[layer])
        if g is not None:
            g = g.detach().float()[None, :, None]
            W_Q[layer] = W_Q[layer] * g
            W_K[layer] = W_K[layer] * g
            W_V[layer] = W_V[layer] * g

    W_U = model.W_U.detach().float()
    g, _ = _norm_params(model.ln_final)
    if g is not None:
        W_U = W_U * g.detach().float()[:, None]
    W_pos = None
    if getattr(cfg, "positional_embedding_type", "standard") == "standard":
        try:
            W_pos = model.W_pos.detach().float()
        except Exception:
            W_pos = None
    group = H // n_kv
    return HeadWeights(
        W_Q=W_Q,
        W_K=W_K,
        W_V=W_V,
        W_O=W_O,
        b_Q=b_Q,
        b_K=b_K,
        b_V=b_V,
        b_O=b_O,
        W_E=model.W_E.detach().float(),
        W_U=W_U,
        W_pos=W_pos,
        kv_head=[h // group for h in range(H)],
        norm=norm,
    )
