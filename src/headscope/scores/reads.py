"""Attention scores as declarations of *which pattern entries they read*, and their eager reduction.

``pattern`` is ``[batch, head, query, key]`` with rows summing to 1. Every score headscope
defines reads a few entries per query, in one of two shapes:

- :class:`Stripe`: the key at a fixed offset from the query (``A[i, i + offset]``) for queries
  in a range: induction, duplicate-token, previous-token, and the first-token column
  (``offset = -i`` is not a stripe, so the first token has its own :class:`Column`);
- :class:`KeySet`: the total attention to a set of keys chosen by the tokens (prefix matching).

A declaration says *what* is read; :func:`reduce_pattern` reads it from a full pattern (the
eager path), :func:`reduce_qk` from the rotated queries and keys and the row logsumexp a fused
kernel returns (the fused path: no ``n x n`` tensor). An entry of the pattern is

    A[b, h, i, j] = exp(q[b, h, i] . k[b, h, j] * scale - lse[b, h, i])

so both read the same numbers. Each reduction returns the **sum** over batch and scored queries
per head and the number of (sequence, query) terms, so chunks of a batch add up exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

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
    """``A[i, key]`` for queries ``i`` in ``[start, end)``: attention to one fixed position.

    ``text`` says which sequences it is read on: ``"repeated"`` (the scan's repeated random
    tokens) or ``"natural"`` (windows of natural text, read by :mod:`headscope.kinds.sink`
    with a one-repeat layout whose ``n_tokens`` is the window length; the scan skips it).
    """

    key: int
    start: Callable[[RepeatLayout], int]
    end: Callable[[RepeatLayout], int] = lambda lay: lay.n_tokens
    text: str = "repeated"


def on_natural_text(reads: Reads | None) -> bool:
    """Whether a declaration is read on natural-text windows rather than on the scan's repeated tokens."""
    return getattr(reads, "text", "repeated") == "natural"


@dataclass(frozen=True)
class KeySet:
    """``sum_k A[i, k]`` over the keys ``mask(tokens, layout)[b, i - start, k]`` marks, queries from ``start``.

    ``pairs(tokens, layout)``, if given, lists the same keys sparsely as ``(sequence, query,
    key)`` index tensors without forming the mask: the fused path uses it. Without it the
    fused path builds the pairs from ``mask`` one sequence at a time (one sequence's
    ``[queries, n]`` boolean mask alive at once), which is correct but quadratic in ``n``.
    """

    mask: Callable[[torch.Tensor, RepeatLayout], torch.Tensor]
    start: Callable[[RepeatLayout], int]
    pairs: Callable[[torch.Tensor, RepeatLayout], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


Reads = Union[Stripe, Column, KeySet]


def stripe_sum(pattern: torch.Tensor, key_offset: int, q_start: int, q_end: int) -> tuple[torch.Tensor, int]:
    """Sum over batch and queries q in [q_start, q_end) of ``pattern[..., q, q + key_offset]``."""
    # torch.diagonal with a negative offset o: element t is (query t - o, key t).
    diag = pattern.diagonal(offset=key_offset, dim1=-2, dim2=-1)
    stripe = diag[..., q_start + key_offset : q_end + key_offset].float()
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


def prefix_pairs(tokens: torch.Tensor, layout: RepeatLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The keys :func:`prefix_mask` marks, as ``(sequence, query, key)`` int64 tensors ``[pairs]``, no n x n mask.

    Query ``i`` in repeats 2..R, key ``k`` with ``tokens[k-1] == tokens[i]`` and ``k-1 < i``.
    Keys are sorted by (sequence, previous token, position) into one int64 code; each query
    finds its run of matching keys by binary search. Memory: O(batch x n + pairs).
    """
    batch, n = tokens.shape
    q0 = layout.later_start
    dev = tokens.device
    tok = tokens.long()
    span = int(tok.max().item()) + 2 if tok.numel() else 2
    # key k (1..n-1) is identified by (b, tokens[b, k-1]); sort (b, id, k) into one int64 code
    kb = torch.arange(batch, device=dev)[:, None].expand(batch, n - 1)
    kpos = torch.arange(1, n, device=dev)[None, :].expand(batch, n - 1)
    kcode = ((kb * span + tok[:, :-1]) * (n + 1) + kpos).reshape(-1)
    kcode, order = torch.sort(kcode)
    ksorted = kpos.reshape(-1)[order]
    # query i (q0..n-1) wants keys with the same (b, id) and position k <= i
    qb = torch.arange(batch, device=dev)[:, None].expand(batch, n - q0)
    qpos = torch.arange(q0, n, device=dev)[None, :].expand(batch, n - q0)
    base = (qb * span + tok[:, q0:]) * (n + 1)
    lo = torch.searchsorted(kcode, base.reshape(-1))
    hi = torch.searchsorted(kcode, (base + qpos).reshape(-1), right=True)
    counts = hi - lo
    total = int(counts.sum().item())
    rep = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts)
    within = torch.arange(total, device=dev) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    keys = ksorted[lo[rep] + within]
    return qb.reshape(-1)[rep], qpos.reshape(-1)[rep], keys


def mask_pairs(
    reads: KeySet, tokens: torch.Tensor, layout: RepeatLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A KeySet's ``(sequence, query, key)`` pairs from its mask, one sequence at a time (no ``pairs`` declared)."""
    start = reads.start(layout)
    found = []
    for b in range(tokens.shape[0]):
        nz = reads.mask(tokens[b : b + 1], layout).nonzero()  # [pairs, 3]: (0, query - start, key)
        found.append(torch.stack((nz[:, 0] + b, nz[:, 1] + start, nz[:, 2])))
    b_idx, q_idx, k_idx = torch.cat(found, dim=1) if found else torch.zeros(3, 0, dtype=torch.long)
    return b_idx, q_idx, k_idx


def prepare(reads: Reads, tokens: torch.Tensor, layout: RepeatLayout, fused: bool = False):
    """What a declaration needs per batch chunk before any layer runs.

    Eager (``fused=False``): a KeySet's mask ``[batch, queries, n]`` as float (cast once per chunk,
    not per layer). Fused: a KeySet's ``(sequence, query, key)`` pairs (:attr:`KeySet.pairs`,
    else :func:`mask_pairs`). ``None`` for stripes and columns.
    """
    if not isinstance(reads, KeySet):
        return None
    if not fused:
        return reads.mask(tokens, layout).float()
    return reads.pairs(tokens, layout) if reads.pairs is not None else mask_pairs(reads, tokens, layout)


def reduce_pattern(
    reads: Reads, pattern: torch.Tensor, layout: RepeatLayout, prepared: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Read a declaration's entries from a full pattern ``[batch, head, query, key]``: (sum [head], count)."""
    if isinstance(reads, Stripe):
        return stripe_sum(pattern, reads.offset(layout), reads.start(layout), reads.end(layout))
    if isinstance(reads, Column):
        return column_sum(pattern, reads.key, reads.start(layout), reads.end(layout))
    assert prepared is not None, "a KeySet needs prepare() first"
    return keyset_sum(pattern, prepared, reads.start(layout))


# --- the same entries from q, k and the row logsumexp (the fused path) -----------------------


def _entries(
    q_rows: torch.Tensor, k_rows: torch.Tensor, lse_rows: torch.Tensor, scale: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``exp(q . k * scale - lse)`` row by row, in float32: ``[..., m, d]`` x2, ``[..., m]`` -> ``[..., m]`` (into ``out``)."""
    dots = (q_rows.float() * k_rows.float()).sum(-1)  # elementwise: cheaper than einsum's batched 1 x d products
    return torch.exp(dots.mul_(scale).sub_(lse_rows.float()), out=out)


def _check_causal(key_offset: int, q_start: int) -> None:
    """A stripe reads keys at or before its query, and none before position 0."""
    if key_offset > 0 or q_start + key_offset < 0:
        raise ValueError(f"key offset {key_offset} from query {q_start} leaves the causal past")


def stripe_sum_qk(
    q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float, key_offset: int, q_start: int, q_end: int
) -> tuple[torch.Tensor, int]:
    """:func:`stripe_sum` from ``q``, ``k`` ``[batch, head, n, d]`` and ``lse`` ``[batch, head, n]``."""
    _check_causal(key_offset, q_start)
    qs = slice(q_start, q_end)
    ks = slice(q_start + key_offset, q_end + key_offset)
    a = _entries(q[:, :, qs], k[:, :, ks], lse[:, :, qs], scale)  # [batch, head, m]
    return a.sum(dim=(0, 2)), a.shape[0] * a.shape[2]


def column_sum_qk(
    q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float, key: int, q_start: int, q_end: int
) -> tuple[torch.Tensor, int]:
    """:func:`column_sum` from ``q``, ``k`` and ``lse``; queries before ``key`` count with 0 (causal pattern)."""
    n_q = len(range(q.shape[2])[q_start:q_end])  # the queries the eager slice takes
    qs = slice(max(q_start, key), q_end)
    rows = q[:, :, qs]
    a = _entries(rows, k[:, :, key : key + 1].expand(-1, -1, rows.shape[2], -1), lse[:, :, qs], scale)  # [b, h, m]
    return a.sum(dim=(0, 2)), a.shape[0] * n_q


def keyset_sum_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    q_start: int,
    chunk: int = 1 << 16,
) -> tuple[torch.Tensor, int]:
    """:func:`keyset_sum` from ``q``, ``k``, ``lse`` and ``(sequence, query, key)`` pairs; memory pairs x head x d."""
    b_idx, q_idx, k_idx = pairs
    total = torch.zeros(q.shape[1], dtype=torch.float32, device=q.device)
    for s in range(0, b_idx.numel(), chunk):
        b, i, j = (t[s : s + chunk].to(q.device) for t in (b_idx, q_idx, k_idx))
        total += _entries(q[b, :, i], k[b, :, j], lse[b, :, i], scale).sum(0)  # [pairs, head] -> [head]
    return total, q.shape[0] * (q.shape[2] - q_start)


@dataclass(frozen=True)
class PairPlan:
    """Every declaration's pattern entries of one batch chunk as one list of ``(sequence, query, key)`` pairs.

    The pairs of declaration ``s`` are ``bounds[s]:bounds[s + 1]``; ``counts[s]`` is its number of
    (sequence, query) terms, as :func:`reduce_qk` returns it. Built once per chunk
    (:func:`pair_plan`) and read at every layer by :func:`plan_entries`: three gathers and one
    exponential per layer for all the scores, not a handful of small operations per score (on a
    GPU each is a kernel launch, and at short sequences launches are what the scan waits for).
    """

    seq: torch.Tensor  # the pair's sequence in the chunk
    query: torch.Tensor  # its query position
    key: torch.Tensor  # its key position
    bounds: tuple[int, ...]
    counts: tuple[int, ...]


def declaration_pairs(
    reads: Reads, tokens: torch.Tensor, layout: RepeatLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(sequence, query, key, count)``: the entries :func:`reduce_qk` reads for ``reads``, as index tensors.

    >>> from headscope.scores.layout import RepeatLayout
    >>> lay = RepeatLayout(seq_len=3, repeats=2, bos=True)            # 7 tokens: BOS + 3 + 3
    >>> b, i, j, count = declaration_pairs(Stripe(offset=lambda l: -1, start=lambda l: 5), torch.zeros(2, 7), lay)
    >>> list(zip(b.tolist(), i.tolist(), j.tolist())), count
    ([(0, 5, 4), (0, 6, 5), (1, 5, 4), (1, 6, 5)], 4)
    """
    batch, n = tokens.shape[0], tokens.shape[1]
    dev = tokens.device
    if isinstance(reads, KeySet):
        b, i, j = reads.pairs(tokens, layout) if reads.pairs is not None else mask_pairs(reads, tokens, layout)
        return b.to(dev), i.to(dev), j.to(dev), batch * (n - reads.start(layout))
    if isinstance(reads, Stripe):
        offset, q_start, q_end = reads.offset(layout), reads.start(layout), reads.end(layout)
        _check_causal(offset, q_start)
        queries = torch.arange(n, device=dev)[q_start:q_end]
        keys, n_terms = queries + offset, len(queries)
    else:
        q_start, q_end = reads.start(layout), reads.end(layout)
        n_terms = len(range(n)[q_start:q_end])  # queries before the key count, with 0 (causal pattern)
        queries = torch.arange(n, device=dev)[max(q_start, reads.key) : q_end]
        keys = torch.full_like(queries, reads.key)
    b = torch.arange(batch, device=dev).repeat_interleave(len(queries))
    return b, queries.repeat(batch), keys.repeat(batch), batch * n_terms


def pair_plan(declarations: list[Reads], tokens: torch.Tensor, layout: RepeatLayout) -> PairPlan:
    """The :class:`PairPlan` of ``declarations`` on one chunk's ``tokens`` ``[batch, n]``."""
    parts = [declaration_pairs(r, tokens, layout) for r in declarations]
    bounds = [0]
    for b, _, _, _ in parts:
        bounds.append(bounds[-1] + b.numel())
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=tokens.device)
        return PairPlan(empty, empty, empty, (0,), ())
    seq, query, key, counts = zip(*parts)
    return PairPlan(torch.cat(seq), torch.cat(query), torch.cat(key), tuple(bounds), tuple(counts))


def plan_entries(
    plan: PairPlan,
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """``[pairs, head]``: every pair's pattern entry ``exp(q . k * scale - lse)``, in float32, into ``out``.

    ``q``, ``k`` ``[batch, head, n, d]`` (k expanded to the query heads), ``lse`` ``[batch, head, n]``.
    Rows are gathered straight from those layouts (no transposed copy) ``chunk`` pairs at a time
    (default: 2M gathered numbers, 8 MB, per operand; 3,640 pairs of SmolLM2's 9 x 64, so 10 x 101
    tokens take one gather): eight operations per chunk for every declaration at once. The
    product is elementwise, never a matmul, so a device's reduced-precision matmul setting
    (TF32) cannot touch it.
    """
    pairs, heads, d = plan.seq.numel(), q.shape[1], q.shape[-1]
    chunk = chunk or max(1, (1 << 21) // (heads * d))
    out = q.new_empty(pairs, heads, dtype=torch.float32) if out is None else out
    for a in range(0, pairs, chunk):
        b, i, j = (t[a : a + chunk] for t in (plan.seq, plan.query, plan.key))
        _entries(q[b, :, i], k[b, :, j], lse[b, :, i], scale, out=out[a : a + chunk])  # [m, head]
    return out


def plan_sums(entries: torch.Tensor, plan: PairPlan) -> torch.Tensor:
    """``[..., declarations, head]``: each declaration's entries summed over its own contiguous run of pairs.

    ``entries`` ``[..., pairs, head]`` from :func:`plan_entries` (a leading layer axis sums every
    layer at once). In order, slice by slice, so the sums do not depend on a device's atomics.
    """
    edge = plan.bounds
    return torch.stack([entries[..., edge[s] : edge[s + 1], :].sum(-2) for s in range(len(plan.counts))], dim=-2)


def reduce_qk_plan(
    plan: PairPlan, q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float, chunk: int | None = None
) -> torch.Tensor:
    """``[declarations, head]`` sums of every declaration's entries: :func:`reduce_qk` for all of them at once.

    :func:`plan_entries` then :func:`plan_sums` (the scan keeps every layer's entries of a chunk
    and sums them once, after the pass)."""
    if not plan.counts:
        return q.new_zeros(0, q.shape[1], dtype=torch.float32)
    return plan_sums(plan_entries(plan, q, k, lse, scale, chunk=chunk), plan)


def reduce_qk(
    reads: Reads, q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float, layout: RepeatLayout, prepared=None
) -> tuple[torch.Tensor, int]:
    """Read a declaration's entries from ``q``, ``k`` ``[batch, head, n, d]`` (k expanded to the query
    heads) and the row logsumexp ``lse`` ``[batch, head, n]``: the same (sum [head], count) as
    :func:`reduce_pattern` on the pattern they make, without forming it."""
    if isinstance(reads, Stripe):
        return stripe_sum_qk(q, k, lse, scale, reads.offset(layout), reads.start(layout), reads.end(layout))
    if isinstance(reads, Column):
        return column_sum_qk(q, k, lse, scale, reads.key, reads.start(layout), reads.end(layout))
    assert prepared is not None, "a KeySet needs prepare(..., fused=True) first"
    return keyset_sum_qk(q, k, lse, scale, prepared, reads.start(layout))
