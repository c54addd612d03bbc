"""Copy suppression from the weights: does a head's OV circuit push down the token it attends to?

McDougall et al. 2023 ("Copy Suppression: Comprehensively Understanding an Attention Head",
arXiv 2310.04625) read head L10H7 of GPT-2 small through its full OV circuit
``W_U W_OV W_EE`` with an *effective embedding* ``W_EE`` (the token passed through block 0:
their code's ``"W_E (including MLPs)"``), and count the tokens for which the token itself is
among the most suppressed outputs (the lowest logits of its own row; they quote the
fraction within the bottom 10 over the whole vocabulary). That is the negative counterpart
of a copying head, whose own token is among its most promoted outputs.

headscope's score, per head:

* ``copy_suppression`` -- fraction of sampled tokens t for which t is among the ``k`` (10)
  lowest logits of row t, over the full vocabulary;
* ``copying_topk`` -- the same for the ``k`` highest logits (a rank-based copying score,
  beside the eigenvalue one of :mod:`headscope.scan.copying`).

Conventions: effective embedding ``"block0"`` (McDougall et al.), computed by the model's
own block 0 on each token alone (:mod:`headscope.models.embedding`, handed in through
:class:`~headscope.scores.weight_score.WeightInputs`: this module runs no model); the OV
circuit is read through :func:`headscope.scores.ov_factors.ov_factors` (norm centring applied,
biases left out). :func:`headscope.kinds.copy_suppression_scores` runs it on a model.
Tokens are ``n_tokens`` ordinary tokens (no special tokens) drawn without replacement
(seeded), not the whole vocabulary, to bound the cost: each head costs
``n_tokens x d_head x vocab`` multiply-adds, in batches of tokens, never vocab x vocab.
Ties count against: t is in the bottom k only when fewer than k other tokens have a logit
lower than *or equal to* its own (a head that sends every token to the same logits suppresses
nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..folded_weights import HeadWeights
from ..tokens import ordinary_token_ids
from .ov_factors import ov_factors
from .weight_score import WeightInputs, WeightScore

#: The registry's definition of the copy-suppression score (``scores/registry.py`` declares it with this text).
DEFINITION = (
    "Fraction of 512 sampled ordinary tokens that are among the 10 most suppressed outputs (lowest logits over "
    "the whole vocabulary) of the head's OV circuit W_U W_OV W_EE applied to themselves; effective embedding "
    "W_EE = the token through block 0 alone (embedding + its attention to itself + MLP0), as McDougall et al. "
    '2023 ("Copy Suppression", arXiv 2310.04625) use. The negative counterpart of copying. Threshold 0.5 '
    "is headscope's (the paper names none)."
)

DEFAULT_K = 10
DEFAULT_N_TOKENS = 512


@torch.no_grad()
def self_rank_fractions(
    w: HeadWeights, X: torch.Tensor, token_ids: torch.Tensor, k: int = DEFAULT_K, max_logits: int = 2**25
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(suppressed, promoted)``, each ``[n_layers, n_heads]``: fraction of ``token_ids`` in their own bottom/top k.

    ``X [n, d_model]`` are the effective embeddings of ``token_ids [n]``; logits run over all
    ``w.W_U`` columns, ``max_logits`` floats at a time (128 MiB by default).
    """
    L, H = w.n_layers, w.n_heads
    batch = max(1, max_logits // (H * w.W_U.shape[1]))
    low, high = torch.zeros(L, H), torch.zeros(L, H)
    ids = token_ids.to(w.W_U.device)
    for layer in range(L):
        A, B = ov_factors(w, X, layer)  # [H, n, d_head], [H, d_head, vocab]
        for start in range(0, len(ids), batch):
            logits = A[:, start : start + batch] @ B  # [H, b, vocab]
            own = logits.gather(-1, ids[start : start + batch].expand(H, -1)[..., None])[..., 0]  # [H, b]
            # Fewer than k *other* tokens at or below its logit <=> it lies strictly below the
            # (k+1)-th smallest value of its row. topk is several times faster than comparing
            # and counting a whole row on CPU.
            low[layer] += (own < logits.topk(k + 1, dim=-1, largest=False).values[..., k]).sum(-1).cpu()
            high[layer] += (own > logits.topk(k + 1, dim=-1).values[..., k]).sum(-1).cpu()
    return low / len(ids), high / len(ids)


@dataclass
class CopySuppressionScores:
    """``copy_suppression`` and ``copying_topk`` are ``[n_layers, n_heads]``."""

    copy_suppression: np.ndarray
    copying_topk: np.ndarray
    k: int
    n_tokens: int
    seed: int
    convention: str
    timings: dict[str, float] = field(default_factory=dict)

    def top_heads(self, score: str = "copy_suppression", k: int = 5) -> list[tuple[int, int, float]]:
        a = getattr(self, score)
        order = np.argsort(-a, axis=None, kind="stable")[:k]
        return [(int(i // a.shape[1]), int(i % a.shape[1]), float(a.flat[i])) for i in order]

    def to_dict(self) -> dict:
        return {
            "definition": DEFINITION,
            "k": self.k,
            "n_tokens": self.n_tokens,
            "seed": self.seed,
            "convention": self.convention,
            "copy_suppression": self.copy_suppression.tolist(),
            "copying_topk": self.copying_topk.tolist(),
            "timings": self.timings,
        }

    def to_json(self, **kw) -> str:
        from ..jsonsafe import dumps

        return dumps(self.to_dict(), **{"indent": None, **kw})  # strict JSON: NaN/Infinity -> null

    def to_frame(self):
        import pandas as pd

        L, H = self.copy_suppression.shape
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(L), H),
                "head": np.tile(np.arange(H), L),
                "copy_suppression": self.copy_suppression.ravel(),
                "copying_topk": self.copying_topk.ravel(),
            }
        )


def sample_tokens(tokenizer, d_vocab: int, n_tokens: int, seed: int = 0) -> torch.Tensor:
    """``n_tokens`` ordinary token ids (no special tokens) drawn without replacement, sorted."""
    pool = ordinary_token_ids(tokenizer, d_vocab)
    if n_tokens >= len(pool):
        return pool
    gen = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(len(pool), generator=gen)[:n_tokens]].sort().values


def score_copy_suppression(
    w: HeadWeights,
    inputs: WeightInputs,
    *,
    k: int = DEFAULT_K,
    n_tokens: int = DEFAULT_N_TOKENS,
    seed: int = 0,
    convention: str = "block0",
) -> CopySuppressionScores:
    """Copy-suppression (and rank-copying) score of every head from its weights ``w`` and ``inputs``.

    :func:`headscope.kinds.copy_suppression_scores` runs it on a model.
    """
    t0 = time.perf_counter()
    ids = sample_tokens(inputs.tokenizer, inputs.d_vocab, n_tokens, seed)
    X = inputs.embed(ids, convention)
    low, high = self_rank_fractions(w, X, ids, k)
    return CopySuppressionScores(
        low.numpy().astype(np.float64),
        high.numpy().astype(np.float64),
        k,
        len(ids),
        seed,
        convention,
        {"copy_suppression_s": time.perf_counter() - t0},
    )


def copy_suppression_weight_score(w: HeadWeights, inputs: WeightInputs) -> WeightScore:
    """The registry's copy-suppression score: ``[L, H]``, and the sample it was measured on."""
    r = score_copy_suppression(w, inputs)
    return WeightScore(
        torch.from_numpy(r.copy_suppression),
        {"k": r.k, "n_tokens": r.n_tokens, "seed": r.seed, "convention": r.convention},
    )
