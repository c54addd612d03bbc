"""Attention scores as declarations of *which pattern entries they read*, and their eager reduction.

``pattern`` is ``[batch, head, query, key]`` with rows summing to 1. Every score headscope
defines reads a few entries per query, in one of two shapes:

- :class:`Stripe`: the key at a fixed offset from the query (``A[i, i + offset]``) for queries
  in a range: induction, duplicate-token, previous-token, and the first-token column
  (``offset = -i`` is not a stripe, so the first token has its own :class:`Column`);
- :class:`KeySet`: the total attention to a set of keys chosen by the tokens (prefix matching).

A declaration says *what* is read; :func:`reduce_pattern` reads it from a full pattern (the
eager path). Each reduction returns the **sum** over batch and scored queries per head and the
number of (sequence, query) terms, so chunks of a batch add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from .layout import RepeatLayout


@dataclass(frozen=True)
class Stripe:
    """``A[i, i + offset]`` for queries ``i`` in ``[start, end)``; each a function of the layout."""

    offset: Callable[[RepeatLayout], int]
    start: Callable[[RepeatLayout], int]
    end: Callable[[RepeatLayout], int] = lambda lay: lay.n_tokens


@dataclass(frozen=True)
class Column:
    """``A[i, key]`` for queries ``i`` in ``[start, end)``: attention to one fixed position."""

    key: int
    start: Callable[[RepeatLayout], int]
    end: Callable[[RepeatLayout], int] = lambda lay: lay.n_tokens


@dataclass(frozen=True)
class KeySet:
    """``sum_k A[i, k]`` over the keys ``mask(tokens, layout)[b, i - start, k]`` marks, queries from ``start``."""

    mask: Callable[[torch.Tensor, RepeatLayout], torch.Tensor]
    start: Callable[[RepeatLayout], int]


Reads = Union[Stripe, Column, KeySet]


def stripe_sum(pattern: torch.Tensor, key_offset: int, q_start: int, q_end: int) -> tuple[torch.Tensor, int]:
    """Sum over batch and queries q in [q_start, q_end) of ``pattern[..., q, q + key_offset]``."""
    # torch.diagonal with a negative offset o: element t is (query t - o, key t).
    diag = pattern.diagonal(offset=key_offset, dim1=-2, dim2=-1)
    stripe = diag[..., q_start + key_offset: q_end + key_offset].float()
    return stripe.sum(dim=(0, -1)), stripe.shape[0] * stripe.shape[-1]


def column_sum(pattern: torch.Tensor, key: int, q_start: int, q_end: int) -> tuple[torch.Tensor, int]:
    """Sum over batch and queries q in [q_start, q_end) of ``pattern[..., q, key]``."""
    col = pattern[:, :, q_start:q_end, key].float()
    return col.sum(dim=(0, -1)), col.shape[0] * col.shape[-1]


def keyset_sum(pattern: torch.Tensor, mask: torch.Tensor, q_start: int) -> tuple[torch.Tensor, int]:
    """Sum over batch and queries from ``q_start`` of the attention on the keys ``mask [b, q, k]`` marks."""
    rows = pattern[:, :, q_start:, :].float()
    per_query = torch.einsum("bhqk,bqk->bhq", rows, mask if mask.dtype == rows.dtype else mask.to(rows.dtype))
    return per_query.sum(dim=(0, 2)), per_query.shape[0] * per_query.shape[2]


def prefix_mask(tokens: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """``[batch, later queries, key]``: key k follows a copy of the query's token (k - 1 < query)."""
    q0 = layout.later_start
    n = tokens.shape[1]
    prev = torch.full_like(tokens, -1)
    prev[:, 1:] = tokens[:, :-1]  # prev[k] = token at k-1
    mask = prev[:, None, :] == tokens[:, q0:, None]
    causal = torch.arange(n)[None, :] <= torch.arange(q0, n)[:, None]
    return mask & causal.to(tokens.device)


def prepare(reads: Reads, tokens: torch.Tensor, layout: RepeatLayout) -> torch.Tensor | None:
    """What a declaration needs per batch chunk before any layer runs (a KeySet's mask, as float)."""
    if isinstance(reads, KeySet):
        return reads.mask(tokens, layout).float()  # cast once per chunk, not per layer
    return None


def reduce_pattern(reads: Reads, pattern: torch.Tensor, layout: RepeatLayout,
                   prepared: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Read a declaration's entries from a full pattern ``[batch, head, query, key]``: (sum [head], count)."""
    if isinstance(reads, Stripe):
        return stripe_sum(pattern, reads.offset(layout), reads.start(layout), reads.end(layout))
    if isinstance(reads, Column):
        return column_sum(pattern, reads.key, reads.start(layout), reads.end(layout))
    assert prepared is not None, "a KeySet needs prepare() first"
    return keyset_sum(pattern, prepared, reads.start(layout))
