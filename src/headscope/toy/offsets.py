"""Induction against copy distance: is the toy's induction head one at every distance, or only far back?

The scan's induction score reads ``[BOS] + r + r``, where every copy lies exactly
``seq_len`` tokens back, so one number says nothing about other distances. A head trained
only on far copies can score 0.76 at distance 24 and 0.14-0.34 at distances 6-20 (the
previous recipe, measured): an induction head only far back. This module measures the same
score at every distance ``d`` from 3 to the context.

For each distance a batch of ``n_ctx``-token sequences is drawn: ``[BOS]``, random filler,
and a span of ``k = min(block, d, n_ctx - 1 - d)`` tokens copied ``d`` tokens later (the
copy's start uniform over the places that fit). The span's tokens are distinct and the
filler is drawn from the *other* tokens, so each copied token has exactly one earlier
occurrence, ``d`` back. The score is the registry's induction read at that distance: the
mean attention from every token of the copy (query ``q``) to the key right after the earlier
occurrence of its token, ``q - d + 1``, averaged over the copy's ``k`` tokens and the
sequences. 1.0 = a perfect induction head at that distance.

Attention weights come from the Hugging Face model itself (eager attention), as the live
evaluation's do; the test suite checks them against a hand-made pattern and against
TransformerBridge's ``hook_pattern`` on a checkpoint.

>>> import torch
>>> tokens, queries = offset_batch(vocab=16, n_ctx=12, distance=4, batch=2, generator=torch.Generator().manual_seed(0))
>>> tokens.shape, queries.shape   # k = min(8, 4, 12 - 1 - 4) = 4 queries per sequence
(torch.Size([2, 12]), torch.Size([2, 4]))
>>> bool((tokens.gather(1, queries) == tokens.gather(1, queries - 4)).all())
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..results.phase_change import DEFINITION, DISTANCE_BINS, OffsetCurves

__all__ = [
    "DEFINITION",
    "DISTANCE_BINS",
    "OffsetCurves",
    "induction_by_distance",
    "measure_checkpoints",
    "offset_batch",
]

ROWS = 512  # sequences per forward pass: [512, H, 64, 64] float32 attention is 32 MiB a layer for 4 heads


def offset_batch(
    vocab: int, n_ctx: int, distance: int, batch: int, generator: torch.Generator, block: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens [batch, n_ctx]`` (BOS id ``vocab`` first) with a span copied ``distance`` back, and the
    copy's positions ``queries [batch, k]`` (the module docstring says how they are drawn)."""
    k = min(block, distance, n_ctx - 1 - distance)
    if k < 1 or k >= vocab:
        raise ValueError(f"no copy fits at distance {distance} in {n_ctx} tokens with {vocab} tokens to draw from")
    perm = torch.rand(batch, vocab, generator=generator).argsort(dim=1)  # a random order of the vocabulary per row
    span, others = perm[:, :k], perm[:, k:]
    tokens = others.gather(1, torch.randint(vocab - k, (batch, n_ctx), generator=generator))
    tokens[:, 0] = vocab
    room = n_ctx - k - distance  # dst in 1 + distance .. n_ctx - k
    dst = 1 + distance + torch.randint(room, (batch, 1), generator=generator)
    queries = dst + torch.arange(k)[None, :]
    rows = torch.arange(batch)[:, None]
    tokens[rows, queries - distance] = span
    tokens[rows, queries] = span
    return tokens, queries


def stripe_at(patterns: Iterable[torch.Tensor], queries: torch.Tensor, distance: int) -> np.ndarray:
    """``[L, H]``: mean of ``pattern[b, h, q, q - distance + 1]`` over the queries ``[batch, k]`` of each
    sequence, for each layer's pattern ``[batch, H, n, n]``."""
    rows = torch.arange(queries.shape[0])[:, None]
    out = []
    for p in patterns:
        a = p[rows, :, queries, queries - distance + 1]  # [batch, k, H]
        out.append(a.double().mean(dim=(0, 1)))
    return torch.stack(out).numpy()


@torch.no_grad()
def induction_by_distance(
    model, vocab: int, n_ctx: int, distances: Sequence[int], batch: int = 32, seed: int = 0, block: int = 8
) -> np.ndarray:
    """``[L, H, len(distances)]`` induction scores of a Hugging Face GPT-2 (eager attention) at each distance.

    The sequences of several distances go through the model together (about ``ROWS`` at a time)."""
    gen = torch.Generator().manual_seed(seed)
    drawn = [(d, *offset_batch(vocab, n_ctx, d, batch, gen, block)) for d in distances]
    was_training = model.training
    model.eval()
    cols = []
    per = max(1, ROWS // batch)  # distances per forward pass
    for i in range(0, len(drawn), per):
        group = drawn[i : i + per]
        patterns = model(torch.cat([t for _, t, _ in group]), output_attentions=True).attentions
        for j, (d, _, queries) in enumerate(group):
            cols.append(stripe_at((p[j * batch : (j + 1) * batch] for p in patterns), queries, d))
    if was_training:
        model.train()
    return np.stack(cols, axis=-1)


def load_hf(path: str | Path):
    """A checkpoint as a Hugging Face model with eager attention (the weights ``output_attentions`` needs)."""
    from transformers import AutoModelForCausalLM

    from ..models.loading import quiet_progress

    with quiet_progress():
        return AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager")


def measure_checkpoints(
    ckpts: Sequence[tuple[int, Path]],
    vocab: int,
    n_ctx: int,
    *,
    batch: int = 32,
    seed: int = 0,
    recheck_batch: int = 256,
    recheck_seed: int = 1,
) -> OffsetCurves:
    """Every checkpoint at every distance (3 .. ``n_ctx - 3``), and the last one again on a fresh sample."""
    distances = list(range(3, n_ctx - 2))
    scores = {}
    model = None
    for step, path in ckpts:
        model = load_hf(path)
        scores[step] = induction_by_distance(model, vocab, n_ctx, distances, batch, seed)
    recheck = None
    if recheck_batch and model is not None:
        recheck = induction_by_distance(model, vocab, n_ctx, distances, recheck_batch, recheck_seed)
    return OffsetCurves(distances, batch, seed, scores, recheck, recheck_batch, recheck_seed)
