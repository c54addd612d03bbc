"""Copying scores from the weights alone, computed once per model.

Copying score (Elhage et al. 2021): eigenvalue positivity ``sum(eig) / sum(|eig|)`` of a head's
full OV circuit ``X W_V W_O W_U`` (vocab x vocab, rank at most d_head). Its nonzero eigenvalues
equal those of the cyclic product ``W_O (W_U X) W_V``, which is d_head x d_head, and
``W_U X`` is d_model x d_model and shared by every head: the whole model costs one
d_model x vocab x d_model product and one small eigen-decomposition per head.

Which ``X`` (the token as a head reads it) decides what the score says. Two columns:

* ``copying`` -- ``X`` = the **block-0 effective embedding** ``W_EE`` of McDougall et al. 2023
  ("Copy Suppression", arXiv 2310.04625; their code's ``"W_E (including MLPs)"``): each token
  alone through block 0 (embedding + its attention to itself + MLP0), the embedding the
  copy-suppression score reads, so the two opposite roles come from one convention. The
  norms are applied as TransformerLens's processed weights apply them (``fold_ln``,
  ``center_writing_weights``, ``center_unembed``): gains folded into ``W_V`` and ``W_U``; for
  LayerNorm models ``X`` and ``W_U``'s rows are centred along d_model (what ``ln1`` and
  ``ln_final`` remove) and ``W_O`` writes centred; ``W_U`` is centred over the vocabulary
  (softmax ignores a shared shift). The per-token norm scale is left out, as there.
* ``copying_direct`` -- ``X`` = the bare ``W_E``, gains folded, nothing centred: the direct
  token path only, the reading headscope gave before (no role).
"""

from __future__ import annotations

import torch

from ..folded_weights import HeadWeights
from .weight_score import WeightInputs, WeightScore

#: The registry's definitions (``scores/registry.py`` declares the two scores with these texts).
DEFINITION = (
    "Eigenvalue positivity sum(eig) / sum(|eig|) of the full OV circuit W_EE W_V W_O W_U, with W_EE the block-0 "
    "effective embedding (each token alone through block 0: embedding + its attention to itself + MLP0), as "
    'McDougall et al. 2023 ("Copy Suppression", arXiv 2310.04625) read tokens and as the copy-suppression score '
    "here does; norms as in TransformerLens's processed weights (gains folded; LayerNorm: W_EE, W_O and W_U "
    "centred along d_model; W_U centred over the vocabulary; the per-token norm scale left out). Computed from "
    "the d_head x d_head matrix W_O (W_U W_EE) W_V with the same nonzero eigenvalues. 1.0 = pure copying. "
    "Source: Elhage et al. 2021 (the score), McDougall et al. 2023 (the embedding)."
)
DIRECT_DEFINITION = (
    "The copying score on the direct token path only: eigenvalue positivity of W_E W_V W_O W_U with the bare "
    "embedding W_E (gains folded, nothing centred, norm scale ignored), the reading before the block-0 effective "
    "embedding. No role: a second column beside copying on the page and in the CSV and JSON (the terminal table "
    "leaves it out). Source: Elhage et al. 2021."
)


def eigenvalue_positivity(W_V: torch.Tensor, W_O: torch.Tensor, unembed_embed: torch.Tensor) -> torch.Tensor:
    """``[..]`` of ``sum(eig) / sum(|eig|)`` for ``W_O (W_U X) W_V`` (``unembed_embed`` = ``W_U X``, d_model x d_model)."""
    eig = torch.linalg.eigvals(W_O.double() @ unembed_embed.double() @ W_V.double())
    return (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)).float()


@torch.no_grad()
def copying_direct_scores(w: HeadWeights) -> torch.Tensor:
    """``[n_layers, n_heads]`` eigenvalue positivity with the bare ``W_E`` (the direct token path)."""
    return eigenvalue_positivity(w.W_V, w.W_O, w.W_U @ w.W_E)


@torch.no_grad()
def copying_scores(w: HeadWeights, X: torch.Tensor) -> torch.Tensor:
    """``[n_layers, n_heads]`` eigenvalue positivity with effective embeddings ``X [d_vocab, d_model]``.

    Norms as TransformerLens's processed weights (module doc). ``X`` is one row per token of
    the unembedding's vocabulary, in id order.
    """
    X, W_U, W_O = X.double(), w.W_U.double(), w.W_O
    if w.norm == "layernorm":
        X = X - X.mean(-1, keepdim=True)
        W_U = W_U - W_U.mean(0, keepdim=True)
        W_O = W_O - W_O.mean(-1, keepdim=True)
    W_U = W_U - W_U.mean(1, keepdim=True)  # center_unembed
    return eigenvalue_positivity(w.W_V, W_O, W_U @ X)


def copying_weight_score(w: HeadWeights, inputs: WeightInputs) -> WeightScore:
    """The registry's copying score: every token's block-0 effective embedding, then :func:`copying_scores`."""
    X = inputs.embed(torch.arange(w.W_U.shape[1]), "block0")
    return WeightScore(copying_scores(w, X), {"embedding": "block0", "tokens": int(X.shape[0])})


def copying_direct_weight_score(w: HeadWeights, inputs: WeightInputs) -> WeightScore:
    """The registry's ``copying_direct``: :func:`copying_direct_scores` (reads the weights only)."""
    return WeightScore(copying_direct_scores(w), {"embedding": "embed"})
