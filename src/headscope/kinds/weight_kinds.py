"""Successor and copy-suppression heads of a loaded model: the registry's maths, run on it.

The scores themselves are maths on the head weights (:mod:`headscope.scores.successor`,
:mod:`headscope.scores.copy_suppression`); these two functions hand them the model's weights
and its effective embeddings (:func:`headscope.models.embedding.weight_inputs`), and keep the
full results (per set, the sample, the rank-copying twin) that the registry's ``[L, H]`` drops.
"""

from __future__ import annotations

from ..folded_weights import HeadWeights, head_weights
from ..models.embedding import weight_inputs
from ..models.model import in_eval_mode
from ..scores.copy_suppression import DEFAULT_K, DEFAULT_N_TOKENS, CopySuppressionScores, score_copy_suppression
from ..scores.successor import DEFAULT_MIN_SIZE, SuccessorScores, score_successors


@in_eval_mode
def successor_scores(
    model, w: HeadWeights | None = None, *, convention: str = "mlp0", min_size: int = DEFAULT_MIN_SIZE
) -> SuccessorScores:
    """Successor score of every head of ``model`` from its weights (``w``: pass it when you have it).

    >>> s = successor_scores(model)
    >>> s.scores.shape == (model.cfg.n_layers, model.cfg.n_heads), s.convention
    (True, 'mlp0')
    """
    return score_successors(w or head_weights(model), weight_inputs(model), convention=convention, min_size=min_size)


@in_eval_mode
def copy_suppression_scores(
    model,
    w: HeadWeights | None = None,
    *,
    k: int = DEFAULT_K,
    n_tokens: int = DEFAULT_N_TOKENS,
    seed: int = 0,
    convention: str = "block0",
) -> CopySuppressionScores:
    """Copy-suppression (and rank-copying) score of every head of ``model`` from its weights.

    >>> cs = copy_suppression_scores(model, n_tokens=8)
    >>> cs.n_tokens, cs.copy_suppression.shape == (model.cfg.n_layers, model.cfg.n_heads)
    (8, True)
    """
    return score_copy_suppression(
        w or head_weights(model), weight_inputs(model), k=k, n_tokens=n_tokens, seed=seed, convention=convention
    )
