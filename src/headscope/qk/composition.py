"""Q-, K- and V-composition scores between every earlier and later head (Elhage et al. 2021).

``score(A, B) = ||A B||_F / (||A||_F ||B||_F)`` with ``A = W_V^a W_O^a`` (the earlier head's
OV circuit, acting on row vectors) and ``B`` the later head's ``W_Q W_K^T`` (Q-composition),
``W_K W_Q^T`` (K-composition: the earlier head writes what the later head's keys read) or
``W_V W_O`` (V-composition) -- TransformerLens's ``all_composition_scores`` convention.

Every matrix here is d_model x d_model but rank d_head, so we never form one. For the left
matrix take ``Y`` (d_model x d_head) with ``Y Y^T = A^T A``, for the right one ``Z`` with
``Z Z^T = B B^T`` (each from a root -- Cholesky -- of a d_head x d_head Gram matrix); then
``||A B||_F = ||Y^T Z||_F``, a d_head x d_head product, and ``||A||_F = ||Y||_F``,
``||B||_F = ||Z||_F``. All pairs are one matmul per earlier layer. For LayerNorm models reading and writing weights are centred along d_model
first (what TransformerLens's ``fold_ln`` + ``center_writing_weights`` give, and what ARENA
uses); norm gains are folded in (:func:`headscope.folded_weights.head_weights`).

The baseline is the mean score of Gaussian random matrices of the same shapes
(``d_model x d_head`` times ``d_head x d_model`` on both sides), as ARENA subtracts.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, head_weights
from ..models.model import as_model, in_eval_mode
from ..results.qk_results import CompositionScores, OffsetComposition
from ..settings import whole_number
from . import rotary
from .live import as_heads

KINDS = ("Q", "K", "V")


def _gram_root(M: torch.Tensor) -> torch.Tensor:
    """``R [..., r, r]`` with ``R R^T = M^T M``: Cholesky, or the symmetric square root where M is rank-deficient."""
    G = M.transpose(-1, -2) @ M
    R, info = torch.linalg.cholesky_ex(G)
    if not bool((info == 0).all()):  # e.g. constructed low-rank weights
        vals, vecs = torch.linalg.eigh(G)
        R = (vecs * vals.clamp(min=0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)
    return R


def left_factor(W_V: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """Y ``[..., d, r]`` with ``Y Y^T = A^T A`` for ``A = W_V W_O``: ``Y = W_O^T R``, ``R R^T = W_V^T W_V``."""
    return W_O.transpose(-1, -2) @ _gram_root(W_V)


def right_factor(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Z ``[..., d, r]`` with ``Z Z^T = B B^T`` for ``B = first second^T``: ``Z = first R``, ``R R^T = second^T second``."""
    return first @ _gram_root(second)


def factored_score(Y: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Composition score from factors: ``Y [A, d, r]``, ``Z [B, d, r]`` -> ``[A, B]``.

    ``||A B||_F^2 = tr(A^T A B B^T) = tr(Y Y^T Z Z^T) = ||Y^T Z||_F^2``.
    """
    A, d, r = Y.shape
    B = Z.shape[0]
    # the one big product runs in float32 (relative error ~1e-6, twice the speed of float64)
    inner = Y.transpose(1, 2).reshape(A * r, d).float() @ Z.permute(1, 0, 2).reshape(d, B * r).float()
    num = inner.square_().reshape(A, r, B, r).sum((1, 3)).double().sqrt()
    return num / (Y.flatten(1).norm(dim=1)[:, None] * Z.flatten(1).norm(dim=1)[None, :])


def dense_score(W_A: torch.Tensor, W_B: torch.Tensor) -> float:
    """The definition, on explicit matrices (for checks and small cases)."""
    return float((W_A @ W_B).norm() / (W_A.norm() * W_B.norm()))


def random_baseline(d_model: int, d_head: int, samples: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the score between random ``(d_model x d_head)(d_head x d_model)`` products."""
    g = torch.Generator().manual_seed(seed)

    def rand():
        return torch.randn(samples, d_model, d_head, generator=g, dtype=torch.float64)

    Y = left_factor(rand(), rand().transpose(1, 2))
    Z = right_factor(rand(), rand())
    num = (Y.transpose(1, 2) @ Z).flatten(1).norm(dim=1)
    s = num / (Y.flatten(1).norm(dim=1) * Z.flatten(1).norm(dim=1))
    return float(s.mean()), float(s.std())


def _centred(w: HeadWeights) -> tuple[torch.Tensor, ...]:
    W_Q, W_K, W_V, W_O = (t.double() for t in (w.W_Q, w.W_K, w.W_V, w.W_O))
    if w.norm == "layernorm":  # LN removes the all-ones direction: drop it from reads and writes
        W_Q, W_K, W_V = (t - t.mean(-2, keepdim=True) for t in (W_Q, W_K, W_V))
        W_O = W_O - W_O.mean(-1, keepdim=True)
    return W_Q, W_K, W_V, W_O


def check_kinds(kinds, allowed=KINDS) -> list[str]:
    """``kinds`` as a list of distinct composition kinds, each one of ``allowed``; else :class:`BadInput`.

    >>> check_kinds("K"), check_kinds(("Q", "K", "Q"))
    (['K'], ['Q', 'K'])
    """
    out = list(dict.fromkeys(kinds or ()))  # a string is its letters: "K", "QK"
    bad = [k for k in out if k not in allowed]
    valid = ", ".join(repr(k) for k in allowed)
    if bad or not out:
        raise BadInput(
            f"unknown composition kind {', '.join(map(repr, bad))}" if bad else "no composition kinds given",
            hint=f"pass kinds from {valid} (Q-, K- or V-composition), e.g. kinds=({valid})",
        )
    return out


@in_eval_mode
@torch.no_grad()
def composition_scores(
    model_or_weights,
    kinds=KINDS,
    *,
    weights: HeadWeights | None = None,
    baseline_samples: int = 200,
    seed: int = 0,
    progress=None,
) -> CompositionScores:
    """Q/K/V-composition scores ``[L, H, L, H]`` (earlier layer, head, later layer, head).

    Pairs where the later head is not in a later layer are NaN. Accepts a model or a
    :class:`~headscope.folded_weights.HeadWeights`; ``weights``: the model's head weights where
    already computed. ``kinds``: any of ``"Q"``, ``"K"``, ``"V"``. ``progress(done, total)`` is
    called per layer.

    On a rotary model the Q/K forms ``W_Q W_K^T`` are the score between a query and a key at the
    same position only, so the result says so: ``offset`` 0, ``where`` "Q/K at offset 0"
    (:func:`composition_by_offset` has the other offsets). Without rotary positions ``offset`` is
    None ("position-free"); so it is for bare ``HeadWeights``, which do not say how positions
    enter -- pass the model (and ``weights=``) to have a rotary model labelled.

    >>> composition_scores(model, kinds=("K",), baseline_samples=2).where  # tiny GPT-2: learned positions
    'position-free'
    """
    kinds = check_kinds(kinds)
    if whole_number("baseline_samples", baseline_samples) < 2:
        raise BadInput(
            f"baseline_samples must be at least 2 (got {baseline_samples}): the baseline is a mean and a spread",
            hint="the default is 200",
        )
    given = model_or_weights if isinstance(model_or_weights, HeadWeights) else None
    model = None if given is not None else as_model(model_or_weights)
    w = given or weights or head_weights(model)
    W_Q, W_K, W_V, W_O = _centred(w)
    L, H, d, r = W_Q.shape
    Y = left_factor(W_V, W_O).reshape(L * H, d, r)
    right = {
        "Q": lambda: right_factor(W_Q, W_K),  # W_Q W_K^T
        "K": lambda: right_factor(W_K, W_Q),  # W_K W_Q^T
        "V": lambda: right_factor(W_V, W_O.transpose(-1, -2)),  # W_V W_O
    }
    scores = {}
    steps, done = len(kinds) * max(L - 1, 1), 0
    for kind in kinds:
        Z = right[kind]().reshape(L * H, d, r)
        out = torch.full((L, H, L, H), float("nan"), dtype=torch.float64)
        for la in range(L - 1):
            s = factored_score(Y[la * H : (la + 1) * H], Z[(la + 1) * H :])
            out[la, :, la + 1 :, :] = s.reshape(H, L - la - 1, H)
            done += 1
            if progress:
                progress(done, steps)
        scores[kind] = out.numpy()
    mean, std = random_baseline(d, r, baseline_samples, seed)
    return CompositionScores(
        model_name="weights" if model is None else model.name,
        scores=scores,
        baseline=mean,
        baseline_std=std,
        d_model=d,
        d_head=r,
        offset=0 if model is not None and rotary.is_rotary(model) else None,
    )


@torch.no_grad()
def composition_by_offset(
    model, heads, offsets=range(64), *, weights: HeadWeights | None = None, kinds=("Q", "K"), seed: int = 0
) -> OffsetComposition:
    """Q- and K-composition into each of ``heads`` from every earlier head, at each rotary offset.

    On a rotary model the later head's bilinear form between a query at i and a key at i - d is
    ``W_Q M_d W_K^T`` (:func:`headscope.qk.rotary.offset_maps`), so Q-composition at offset d
    uses ``W_B = W_Q M_d W_K^T`` and K-composition ``W_B = W_K M_d^T W_Q^T``; the position-free
    ``W_Q W_K^T`` of :func:`composition_scores` is offset 0. V-composition has no offset (values
    are not rotated). ``scores[kind][n, la, ha, m]``: earlier head ``la.ha`` into ``heads[n]`` at
    ``offsets[m]``, NaN unless ``la`` is an earlier layer. Only the chosen later heads are
    computed (the whole model at 64 offsets would be 128 full composition passes).
    """
    if not rotary.is_rotary(model):
        raise BadInput(
            "this model has no rotary positions, so its Q/K-composition does not depend on the offset",
            hint="use composition_scores (position-free) for this model",
        )
    kinds = check_kinds(kinds, ("Q", "K"))
    heads = as_heads(model, heads)
    offsets = [int(d) for d in offsets]
    w = weights or head_weights(model)
    W_Q, W_K, W_V, W_O = _centred(w)
    L, H, d, r = W_Q.shape
    Y = left_factor(W_V, W_O).reshape(L * H, d, r)
    maps = rotary.offset_maps(model, offsets)  # [n_off, r, r]
    scores = {kind: np.full((len(heads), L, H, len(offsets)), np.nan) for kind in kinds}
    for n, (layer, h) in enumerate(heads):
        if layer == 0:
            continue
        for kind in kinds:
            if kind == "Q":  # W_Q M_d W_K^T
                Z = right_factor(W_Q[layer, h] @ maps, W_K[layer, h].expand(len(offsets), d, r))
            else:  # K: W_K M_d^T W_Q^T
                Z = right_factor(W_K[layer, h] @ maps.transpose(1, 2), W_Q[layer, h].expand(len(offsets), d, r))
            s = factored_score(Y[: layer * H], Z)  # [layer * H, n_off]
            scores[kind][n, :layer] = s.reshape(layer, H, len(offsets)).numpy()
    mean, std = random_baseline(d, r, seed=seed)
    return OffsetComposition(as_model(model).name, heads, np.array(offsets), scores, mean, std)
