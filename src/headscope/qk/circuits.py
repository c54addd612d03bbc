"""QK circuits from the weights alone: positional (learned, rotary or ALiBi) and token.

Inputs to a head are normalised: we apply the head's own norm with the scale frozen at each
input vector's own value (so a token embedding ``e`` enters as ``norm(e)``: centred for
LayerNorm, divided by its RMS/std, gain folded into ``W_Q``/``W_K``). Biases are left out:
these are the bilinear forms ``x_q^T W_Q W_K^T x_k / sqrt(d_head)`` only.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, head_weights
from ..models.inputs import one_head
from ..models.model import as_model, in_eval_mode
from ..results.qk_results import PositionalQK, TokenQK
from ..settings import whole_number
from ..tokens import token_text
from . import rotary
from .live import as_heads


def normalise(x: torch.Tensor, norm: str, eps: float = 1e-5) -> torch.Tensor:
    """Apply the (gain-free) norm to each row of ``x [..., d_model]``."""
    x = x.double()
    if norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


@in_eval_mode
@torch.no_grad()
def positional_qk(
    model,
    heads,
    *,
    n_positions: int = 64,
    residuals: dict[int, torch.Tensor] | None = None,
    weights: HeadWeights | None = None,
) -> PositionalQK:
    """How each head's score depends on position alone.

    Learned positions (GPT-2): ``P W_Q W_K^T P^T / sqrt(d_head)`` with P the first
    ``n_positions`` rows of ``W_pos``, normalised; the offset curve is its mean along each
    diagonal. Rotary (Llama, SmolLM2): the expected score between a query at position i and
    a key at i - d whose inputs are drawn independently from a sample of normalised
    residual vectors, ``qbar^T RoPE(d) kbar / sqrt(d_head)`` with qbar, kbar the mean query
    and key (exact, by linearity). The sample is ``residuals[layer]`` (``[N, d_model]``,
    already normalised) where given, else the normalised token embeddings of the vocabulary.
    ALiBi (Bloom): the bias the model adds to the score at offset d, relative to offset 0
    (``-slope_h d``): a fixed penalty on distance, not a read of any weight or input.
    """
    heads = as_heads(model, heads)
    if whole_number("n_positions", n_positions) < 1:
        raise BadInput(f"n_positions must be at least 1 (got {n_positions})", hint="the default is 64")
    w = weights or head_weights(model)
    eps = float(getattr(model.cfg, "eps", 1e-5))
    offsets = np.arange(n_positions)
    curves, mats = [], []
    if rotary.is_rotary(model):
        cos, sin = rotary.cos_sin(model, torch.arange(n_positions))
        emb_mean = normalise(w.W_E, w.norm, eps).mean(0)
        for layer, h in heads:
            x_mean = residuals[layer].double().mean(0) if residuals and layer in residuals else emb_mean
            q = x_mean @ w.W_Q[layer, h].double()
            k = x_mean @ w.W_K[layer, h].double()
            q_at = rotary.apply_rope(q.expand(n_positions, -1), cos, sin, rotary.adjacent_pairs(model))
            curves.append((q_at @ k).numpy() * w.score_scale(layer))  # query at position d, key at 0 == offset d
        src = (
            "residual vectors from the given texts at each head's layer (BOS excluded)"
            if residuals
            else "the normalised token embeddings of the whole vocabulary"
        )
        method = (
            f"rotary: expected score between a query at i and a key at i - offset, inputs drawn independently "
            f"from {src}; = qbar^T RoPE(offset) kbar / sqrt(d_head), qbar/kbar the mean query/key "
            f"(biases and the content-dependent part left out)"
        )
        return PositionalQK(
            as_model(model).name, heads, offsets, np.stack(curves), None, method, rotary.rope_theta(model)
        )
    if w.W_pos is None:
        alibi = _alibi_offsets(model, n_positions)
        if alibi is None:
            raise BadInput(
                f"{getattr(model.cfg, 'architecture', None) or 'this model'} has neither learned, rotary nor "
                "ALiBi positions headscope can read; there is no positional QK circuit to show",
                hint="headscope qk needs one; headscope induction and headscope heads still analyse this model",
            )
        method = (
            "ALiBi: the model adds slope x (key position) to each head's scores, the same in every layer and "
            "independent of the weights and the text; shown relative to offset 0 (the softmax ignores a constant per "
            "query), that is -slope x offset, read from the model's own build_alibi_tensor"
        )
        return PositionalQK(as_model(model).name, heads, offsets, np.stack([alibi[h] for _, h in heads]), None, method)
    n = min(n_positions, w.W_pos.shape[0])
    P = normalise(w.W_pos[:n], w.norm, eps)
    for layer, h in heads:
        m = (P @ w.W_Q[layer, h].double()) @ (P @ w.W_K[layer, h].double()).T * w.score_scale(layer)
        m = torch.tril(m) + torch.triu(torch.full_like(m, float("nan")), 1)
        mats.append(m.numpy())
        curves.append(np.array([np.nanmean(np.diagonal(mats[-1], -d)) for d in range(n)]))
    method = (
        "learned positions: W_pos W_Q W_K^T W_pos^T / sqrt(d_head) on the first "
        f"{n} positions, each W_pos row normalised by the head's norm (scale = its own); "
        "offset curve = mean along each diagonal"
    )
    return PositionalQK(as_model(model).name, heads, offsets[:n], np.stack(curves), np.stack(mats), method)


@torch.no_grad()
def _alibi_offsets(model, n_positions: int) -> np.ndarray | None:
    """``[n_heads, n_positions]``: the ALiBi bias a head adds at offset d, minus the one at offset 0 (None: no ALiBi).

    Read from the Hugging Face model's own ``build_alibi_tensor`` (Bloom's), for one unpadded
    sequence: ``alibi[h, j] = slope_h * j``; a query at ``n - 1`` sees the key ``d`` back at
    ``alibi[h, n - 1 - d]``.
    """
    hf = getattr(as_model(model).bridge, "original_model", None)
    owner = next((mod for mod in (hf.modules() if hf is not None else ()) if hasattr(mod, "build_alibi_tensor")), None)
    if owner is None:
        return None
    n_heads = int(model.cfg.n_heads)
    alibi = owner.build_alibi_tensor(torch.ones(1, n_positions, dtype=torch.long), n_heads, torch.float64)
    alibi = alibi.reshape(n_heads, n_positions).double().cpu().numpy()
    last = n_positions - 1
    return alibi[:, last - np.arange(n_positions)] - alibi[:, [last]]


def check_token_ids(token_ids, d_vocab: int) -> list[int]:
    """``token_ids`` as distinct ints in first-seen order, each in ``0..d_vocab - 1``; else :class:`BadInput`.

    >>> check_token_ids([7, 5, 7], 10)
    [7, 5]
    """
    hint = "pass one or more token ids, e.g. model.tokenizer.encode(' cat dog') (one id per token)"
    try:
        if isinstance(token_ids, (str, bytes)):
            raise TypeError
        ids = list(dict.fromkeys(operator.index(t) for t in token_ids))  # each token once, first-seen order
    except TypeError:
        raise BadInput(f"token ids must be a list of integers, got {token_ids!r:.80}", hint=hint) from None
    if not ids:
        raise BadInput("no tokens for the token QK circuit", hint=hint)
    for t in ids:
        if not 0 <= t < d_vocab:
            raise BadInput(f"token id {t} is outside the vocabulary (0..{d_vocab - 1})", hint="use an id below d_vocab")
    return ids


def _top_tokens(vec: torch.Tensor, labels_of, k: int, sign: int) -> list[str]:
    idx = torch.topk(sign * vec, k).indices.tolist()
    return labels_of(idx)


@in_eval_mode
@torch.no_grad()
def token_qk(
    model,
    head,
    token_ids: list[int],
    *,
    directions: int = 3,
    per_direction: int = 6,
    weights: HeadWeights | None = None,
    normalised_embeddings: torch.Tensor | None = None,
    offset: int = 0,
    offset_reason: str = "",
) -> TokenQK:
    """Head ``head``'s token QK circuit on ``token_ids`` and the top of its full-vocab SVD.

    The full circuit ``E W_Q M_d W_K^T E^T / sqrt(d_head)`` (E the normalised embeddings, vocab x d_model) has
    rank d_head; we take its SVD from the factors ``A = E W_Q M_d``, ``B = E W_K`` via ``A = Qa Ra``,
    ``B = Qb Rb``, ``svd(Ra Rb^T)`` (d_head x d_head), never forming vocab x vocab. On a rotary model ``M_d``
    is the model's own RoPE between a query at i and a key at i - ``offset``
    (:func:`headscope.qk.rotary.offset_maps`); at offset 0 it is the identity, which is the only place
    ``W_Q W_K^T`` alone is the score. Without rotary positions there is no ``M_d`` and the result's ``offset`` is None.

    >>> token_qk(model, "1.2", [5, 6, 7]).offset is None  # tiny GPT-2: learned positions
    True
    """
    layer, h = one_head(model, head, "token_qk")
    d_head = int(model.cfg.d_head)
    if not 0 <= whole_number("directions", directions) <= d_head:
        raise BadInput(
            f"directions must be 0..{d_head} (got {directions}): the circuit has rank d_head = {d_head}",
            hint="the default is 3",
        )
    if whole_number("per_direction", per_direction) < 0:
        raise BadInput(f"per_direction must be 0 or more (got {per_direction})", hint="the default is 6")
    w = weights or head_weights(model)
    token_ids = check_token_ids(token_ids, int(w.W_E.shape[0]))
    eps = float(getattr(model.cfg, "eps", 1e-5))
    E = normalised_embeddings if normalised_embeddings is not None else normalise(w.W_E, w.norm, eps).float()
    scale = w.score_scale(layer)
    W_Q, W_K = w.W_Q[layer, h].float(), w.W_K[layer, h].float()
    at: int | None = None
    if rotary.is_rotary(model):
        if offset < 0:
            raise BadInput(f"offset {offset} is negative", hint="an offset is i - j for a key j at or before query i")
        at = int(offset)
        W_Q = (W_Q.double() @ rotary.offset_maps(model, [at])[0]).float()
    ids = torch.tensor(token_ids, dtype=torch.long)
    sub = (E[ids] @ W_Q) @ (E[ids] @ W_K).T * scale
    A, B = E @ W_Q * scale, E @ W_K
    Qa, Ra = torch.linalg.qr(A)
    Qb, Rb = torch.linalg.qr(B)
    U, S, Vh = torch.linalg.svd((Ra @ Rb.T).double())
    tok = model.tokenizer

    def labels_of(idx):
        return [token_text(tok, i) for i in idx]

    dirs = []
    for n in range(directions):
        u = Qa @ U[:, n].float()
        v = Qb @ Vh[n].float()
        dirs.append(
            {
                "singular_value": round(float(S[n]), 4),
                "queries_plus": _top_tokens(u, labels_of, per_direction, 1),
                "keys_plus": _top_tokens(v, labels_of, per_direction, 1),
                "queries_minus": _top_tokens(u, labels_of, per_direction, -1),
                "keys_minus": _top_tokens(v, labels_of, per_direction, -1),
            }
        )
    where = (
        f"rotary: the query at position i, the key at i - {at} (offset {at}), W_Q M_{at} W_K^T with M_{at} the "
        f"model's own RoPE map{' (' + offset_reason + ')' if offset_reason else ''}; biases left out"
        if at is not None
        else "learned or no positions: position embeddings and biases left out"
    )
    method = (
        "x_t W_Q W_K^T x_s^T / sqrt(d_head), x = the token's embedding normalised by the head's norm "
        f"(its own scale); {where}; SVD of the full circuit from its rank-d_head factors. "
        "A direction pairs queries_plus with keys_plus (and queries_minus with keys_minus) to raise the score"
    )
    return TokenQK(
        as_model(model).name,
        layer,
        h,
        list(map(int, token_ids)),
        labels_of(list(token_ids)),
        sub.double().numpy(),
        S[:directions].numpy(),
        dirs,
        method,
        at,
    )
