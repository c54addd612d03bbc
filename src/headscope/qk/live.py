"""Live QK interactions: each head's pre-softmax scores and pattern on the user's text.

The score of query ``i`` against key ``j`` is ``q_i . k_j / sqrt(d_head)`` with the model's
rotary map already applied to ``q`` and ``k`` where it has one; it is what
``blocks.{l}.attn.hook_attn_scores`` holds. The bridge writes the causal mask into that
tensor as the most negative float; we return masked cells (``j > i``) as NaN so a figure
can show them as masked, never as zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..hooks import act_name
from ..models.inputs import TokenSequence, as_heads, as_sequences
from ..models.model import as_model
from ..results.qk_results import QKScores


@torch.no_grad()
def capture(model, seq: TokenSequence, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """One forward pass keeping only the hooks in ``names`` (batch dim dropped, float64, CPU)."""
    m = as_model(model)
    store: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(t, hook):
            store[name] = t.detach()[0].to("cpu", torch.float64)

        return hook

    m.run_with_hooks(seq.tensor(m.device), fwd_hooks=[(n, keep(n)) for n in dict.fromkeys(names)])
    return store


def masked_scores(raw: torch.Tensor) -> np.ndarray:
    """``[..., query, key]`` scores with the causal upper triangle set to NaN."""
    t = raw.shape[-1]
    out = raw.clone()
    out[..., torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)] = float("nan")
    return out.numpy()


def qk_scores(model, heads, texts=None, *, max_tokens: int | None = None) -> QKScores:
    """Pre-softmax scores and attention patterns of ``heads`` on ``texts``.

    ``texts``: a string, a list of strings (the first token is put before each), or None for the
    built-in samples. ``heads``: ``(layer, head)`` tuples or ``"L5H1"``/``"5.1"`` strings.
    Returns :class:`QKScores` with ``scores[s]`` and ``pattern[s]`` of shape
    ``[n_chosen_heads, query, key]`` for sequence ``s`` (masked scores NaN).

    >>> r = qk_scores(model, ["L1H2"], "a b c a b c")
    >>> r.scores[0].shape, r.to_frame().columns[:3].tolist()
    ((1, 7, 7), ['sequence', 'layer', 'head'])
    """
    m = as_model(model)
    seqs = as_sequences(m, texts, max_tokens)
    heads = as_heads(m, heads)
    layers = sorted({layer for layer, _ in heads})
    scores, patterns = [], []
    for seq in seqs:
        names = [act_name(kind, layer) for layer in layers for kind in ("attn_scores", "pattern")]
        acts = capture(m, seq, names)
        scores.append(np.stack([masked_scores(acts[act_name("attn_scores", l)][h]) for l, h in heads]))
        patterns.append(np.stack([acts[act_name("pattern", l)][h].numpy() for l, h in heads]))
    return QKScores(model_name=m.name, heads=heads, sequences=seqs, scores=scores, patterns=patterns)
