"""Attention sinks: how much of a head's attention lands on the first token.

Gu et al. 2024 ("When Attention Sink Emerges in Language Models: An Empirical View", arXiv
2410.10781; reference code sail-sg/Attention-Sink ``eval_sink_open_source.py``) define, for
key position k (1-based) of one sequence of T tokens,

    alpha_k = 1/(T - k + 1) * sum_{i=k..T} A[i, k]

i.e. the mean over *every* query that can see key k, the key's own query included. For the
first token that is the mean over all T queries, and query 1 (the first token itself) always
puts 1.0 there. A head is a sink head on that sequence when ``alpha_1 > epsilon`` with
epsilon = 0.3; the paper's metric ``Sink_1^epsilon`` is the fraction of (sequence, layer,
head) triples above the threshold (their code thresholds each sequence, then averages), on
T = 64 tokens of natural text. Their tokenizer call adds the model's BOS where it has one
(Llama) and not where it has none (GPT-2), so "first token" is whatever comes first.

headscope reports per head:

* ``sink`` -- mean attention to the first token over the queries *after* it (query 0, which
  can only attend to itself, is left out), averaged over sequences. This is the score people
  compare across sequence lengths; it differs from the paper's ``alpha_1`` by
  ``alpha_1 = (1 + (T-1) * sink) / T`` on each sequence.
* ``sink_rate`` -- the paper's per-head quantity: the fraction of sequences on which
  ``alpha_1 > 0.3``. Its mean over heads is the paper's ``Sink_1^0.3``.

The two reductions below take the scan's ``pattern [batch, head, query, key]`` and return
per-head sums with counts, like :mod:`headscope.scan.scores`, so they run in the scan's one
pass; ``layout`` is accepted for the same signature and not needed (the first token is
position 0 in every layout).
"""

from __future__ import annotations

import time

import torch

from ..results.sink_scores import DEFINITIONS, SinkScores
from ..scores import score as declared
from ..scores.reads import column_sum

__all__ = [
    "DEFINITIONS",
    "SINK_THRESHOLD",
    "SinkScores",
    "first_token_alpha",
    "first_token_sum",
    "sink_rate_sum",
    "sink_scores_on_text",
]

#: Gu et al.'s threshold, declared once in the registry (the attention_sink role).
SINK_THRESHOLD = float(declared("attention_sink").threshold or 0.3)


def first_token_sum(pattern: torch.Tensor, layout=None) -> tuple[torch.Tensor, int]:
    """Per head: sum over batch and queries 1..n-1 of ``pattern[..., q, 0]``, and the count."""
    return column_sum(pattern, 0, 1, pattern.shape[-2])  # the registry's own Column read


def first_token_alpha(pattern: torch.Tensor) -> torch.Tensor:
    """``[batch, head]`` Gu et al.'s alpha_1: mean of ``pattern[..., q, 0]`` over all queries q."""
    return pattern[..., :, 0].float().mean(-1)


def sink_rate_sum(pattern: torch.Tensor, layout=None, threshold: float = SINK_THRESHOLD) -> tuple[torch.Tensor, int]:
    """Per head: number of sequences with alpha_1 > ``threshold``, and the number of sequences."""
    alpha = first_token_alpha(pattern)
    return (alpha > threshold).float().sum(0), alpha.shape[0]


@torch.no_grad()
def sink_scores_on_text(
    model,
    files=None,
    *,
    n_tokens: int = 64,
    n_sequences: int = 100,
    threshold: float = SINK_THRESHOLD,
    chunk_size: int = 16,
) -> SinkScores:
    """Sink scores of every head on natural text, as Gu et al. measure them.

    ``n_sequences`` windows of ``n_tokens`` tokens in all (BOS included where the model has
    one: the paper's T = 64), spread evenly over ``files`` or, by default, CPython's
    ``pydoc_data.topics`` (see :mod:`headscope.kinds.documents`). One forward pass per chunk;
    each layer's pattern is reduced in its hook.
    """
    from ..models.model import as_model
    from .documents import natural_windows

    t0 = time.perf_counter()
    bos = as_model(model).first_token.id
    windows = natural_windows(model, files, window=n_tokens - (bos is not None), max_windows=n_sequences)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    sums, alpha_sums, rate_sums = torch.zeros(L, H), torch.zeros(L, H), torch.zeros(L, H)
    counts = {"sink": 0, "seq": 0}

    def on_pattern(pattern, hook):
        layer = int(hook.name.split(".")[1])
        s, c = first_token_sum(pattern)
        sums[layer] += s.cpu()
        alpha_sums[layer] += first_token_alpha(pattern).sum(0).cpu()
        r, n = sink_rate_sum(pattern, threshold=threshold)
        rate_sums[layer] += r.cpu()
        if layer == 0:
            counts["sink"] += c
            counts["seq"] += n

    hooks = [(f"blocks.{l}.attn.hook_pattern", on_pattern) for l in range(L)]
    for start in range(0, len(windows.tokens), chunk_size):
        model.run_with_hooks(
            windows.tokens[start : start + chunk_size].to(model.cfg.device), fwd_hooks=hooks, return_type=None
        )
    return SinkScores(
        sink=(sums / counts["sink"]).numpy(),
        alpha=(alpha_sums / counts["seq"]).numpy(),
        sink_rate=(rate_sums / counts["seq"]).numpy(),
        threshold=threshold,
        n_sequences=counts["seq"],
        n_tokens=windows.tokens.shape[1],
        source=windows.describe(),
        timings={"sink_text_s": time.perf_counter() - t0},
    )
