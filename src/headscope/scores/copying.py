"""Scores from the weights alone, computed once per model.

Copying score: eigenvalue positivity of each head's full OV circuit. ``W_E W_V W_O W_U`` is
vocab x vocab (2.5e9 entries for GPT-2) but has rank at most d_head; its nonzero eigenvalues
equal those of the cyclic product ``W_O (W_U W_E) W_V``, which is d_head x d_head. ``W_U W_E``
is d_model x d_model and shared by every head, so the whole model costs one
d_model x vocab x d_model product and one small eigen-decomposition per head (Elhage et al. 2021).
"""

from __future__ import annotations

import torch

from ..folded_weights import HeadWeights


@torch.no_grad()
def copying_scores(w: HeadWeights) -> torch.Tensor:
    """``[n_layers, n_heads]`` of ``sum(eig) / sum(|eig|)`` for each head's OV circuit."""
    unembed_embed = w.W_U @ w.W_E  # [d_model, d_model]
    small = w.W_O @ unembed_embed @ w.W_V  # [L, H, d_head, d_head]
    eig = torch.linalg.eigvals(small.double())
    return (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)).float()
