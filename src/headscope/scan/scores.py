"""Attention-pattern scores as pure functions of a pattern and the sequence layout.

``pattern`` is ``[batch, head, query, key]`` with rows summing to 1. Each function returns
the *sum* over batch and scored queries, per head, together with the number of
(sequence, query) terms, so chunks of a batch can be added up exactly.
Definitions (see REFERENCE in the docs, and ``DEFINITIONS`` below for the legend):
"""

from __future__ import annotations

import torch

from .sequences import RepeatLayout

DEFINITIONS: dict[str, str] = {
    "induction": (
        "Mean attention from each query in repeats 2..R to the key right after the previous "
        "occurrence of its token (key = query - seq_len + 1). 1.0 = perfect induction head. "
        "Source: ARENA 1.2 / Nanda, restricted to later-repeat queries (ARENA's diagonal also "
        "takes 2 first-repeat queries, so it reads slightly lower)."
    ),
    "prefix_matching": (
        "Total attention from each query in repeats 2..R to every earlier position whose "
        "preceding token equals the query's token, averaged over queries. "
        "Source: Olsson et al. 2022; reference implementation Bansal et al. 2023 (llm-interpret)."
    ),
    "previous_token": "Mean attention from each query to the key just before it (key = query - 1); the BOS query has none.",
    "duplicate_token": (
        "Mean attention from each query in repeats 2..R to the previous copy of its own token (key = query - seq_len)."
    ),
    "copying": (
        "Eigenvalue positivity of the full OV circuit W_E W_V W_O W_U: sum(eig) / sum(|eig|), from the "
        "d_head x d_head matrix W_O (W_U W_E) W_V with the same nonzero eigenvalues (norm gains folded, "
        "norm scale ignored). 1.0 = pure copying. Source: Elhage et al. 2021."
    ),
}


def _stripe_sum(pattern: torch.Tensor, key_offset: int, q_start: int, q_end: int) -> tuple[torch.Tensor, int]:
    """Sum over batch and queries q in [q_start, q_end) of ``pattern[..., q, q + key_offset]``."""
    # torch.diagonal with a negative offset o: element t is (query t - o, key t).
    diag = pattern.diagonal(offset=key_offset, dim1=-2, dim2=-1)
    stripe = diag[..., q_start + key_offset: q_end + key_offset].float()
    return stripe.sum(dim=(0, -1)), stripe.shape[0] * stripe.shape[-1]


def induction_sum(pattern: torch.Tensor, layout: RepeatLayout):
    return _stripe_sum(pattern, 1 - layout.seq_len, layout.later_start, layout.n_tokens)


def duplicate_token_sum(pattern: torch.Tensor, layout: RepeatLayout):
    return _stripe_sum(pattern, -layout.seq_len, layout.later_start, layout.n_tokens)


def previous_token_sum(pattern: torch.Tensor, layout: RepeatLayout):
    return _stripe_sum(pattern, -1, 1, layout.n_tokens)


def prefix_mask(tokens: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """``[batch, later queries, key]``: key k follows a copy of the query's token (k-1 < query)."""
    q0 = layout.later_start
    n = tokens.shape[1]
    prev = torch.full_like(tokens, -1)
    prev[:, 1:] = tokens[:, :-1]  # prev[k] = token at k-1
    mask = prev[:, None, :] == tokens[:, q0:, None]
    causal = torch.arange(n)[None, :] <= torch.arange(q0, n)[:, None]
    return mask & causal.to(tokens.device)


def prefix_matching_sum(pattern: torch.Tensor, mask: torch.Tensor, layout: RepeatLayout):
    rows = pattern[:, :, layout.later_start:, :].float()
    per_query = torch.einsum("bhqk,bqk->bhq", rows, mask if mask.dtype == rows.dtype else mask.to(rows.dtype))
    return per_query.sum(dim=(0, 2)), per_query.shape[0] * per_query.shape[2]


ATTENTION_SCORES = ("induction", "prefix_matching", "previous_token", "duplicate_token")
