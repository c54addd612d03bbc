"""A head's OV circuit from effective embeddings to logits, kept in its two low-rank factors.

For source tokens with effective embeddings ``X [n, d_model]`` the direct effect of head
(l, h) on the logits, if it attended fully to the token, is

    logits = norm1(X) W_V[l,h] W_O[l,h] norm_final(.) W_U  =  A @ B,
    A = X' W_V[l,h]          [n, d_head]
    B = W_O'[l,h] W_U[:, cols]   [d_head, len(cols)]

never the ``[n, vocab]`` product through ``d_model`` and never vocab x vocab. Conventions
(as in :mod:`headscope.folded_weights`): norm gains are folded into ``W_V`` and ``W_U``; for
LayerNorm models the centring of both norms is applied (``X' = X - mean``; ``W_O'`` has its
rows centred, which centres the head's output); the division by the input-dependent norm
scale is left out, which scales a source token's whole row of logits by one positive
number and so changes no ranking within a row. Biases (``b_V``, ``b_O``, norm biases) are
left out: they add the same logit vector to every row and are not part of the circuit.
"""

from __future__ import annotations

import torch

from ..folded_weights import HeadWeights


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def ov_factors(w: HeadWeights, X: torch.Tensor, layer: int, cols: torch.Tensor | None = None):
    """``(A [H, n, d_head], B [H, d_head, len(cols)])`` for every head of ``layer`` (see module doc)."""
    layernorm = w.norm == "layernorm"
    X = X.to(w.W_V.device, torch.float32)
    if layernorm:
        X = _centred(X)
    A = torch.einsum("nd,hde->hne", X, w.W_V[layer])
    W_O = _centred(w.W_O[layer]) if layernorm else w.W_O[layer]
    W_U = w.W_U if cols is None else w.W_U[:, cols.to(w.W_U.device)]
    return A, W_O @ W_U
