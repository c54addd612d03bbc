"""Live QK interactions: each head's pre-softmax scores and pattern on the user's text.

The score of query ``i`` against key ``j`` is ``q_i . k_j / sqrt(d_head)`` with the model's
rotary map already applied to ``q`` and ``k`` where it has one; it is what
``blocks.{l}.attn.hook_attn_scores`` holds. The bridge writes the causal mask into that
tensor as the most negative float; we return masked cells (``j > i``) as NaN so a figure
can show them as masked, never as zeros.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .inputs import SAMPLE_TEXTS, TokenSequence, parse_heads, prepare_texts
from .results import QKScores

Head = tuple[int, int]


@torch.no_grad()
def capture(model, seq: TokenSequence, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """One forward pass keeping only the hooks in ``names`` (batch dim dropped, float64, CPU)."""
    store: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(t, hook):
            store[name] = t.detach()[0].to("cpu", torch.float64)

        return hook

    device = next(model.parameters()).device
    model.run_with_hooks(seq.tensor(device), fwd_hooks=[(n, keep(n)) for n in dict.fromkeys(names)])
    return store


def as_sequences(model, texts, max_tokens: int | None) -> list[TokenSequence]:
    if texts is None:
        texts = list(SAMPLE_TEXTS)
    elif isinstance(texts, (str, TokenSequence)):
        texts = [texts]
    if all(isinstance(t, TokenSequence) for t in texts):
        return list(texts)
    return prepare_texts(model, [str(t) for t in texts], max_tokens=max_tokens)


def as_heads(model, heads) -> list[Head]:
    if isinstance(heads, (str, tuple)):
        heads = [heads]
    specs = [f"{h[0]}.{h[1]}" if isinstance(h, tuple) else str(h) for h in heads]
    return parse_heads(specs, model.cfg.n_layers, model.cfg.n_heads)


def masked_scores(raw: torch.Tensor) -> np.ndarray:
    """``[..., query, key]`` scores with the causal upper triangle set to NaN."""
    t = raw.shape[-1]
    out = raw.clone()
    out[..., torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)] = float("nan")
    return out.numpy()


def qk_scores(model, heads, texts=None, *, max_tokens: int | None = None) -> QKScores:
    """Pre-softmax scores and attention patterns of ``heads`` on ``texts``.

    ``texts``: a string, a list of strings (BOS is prepended to each), or None for the
    built-in samples. ``heads``: ``(layer, head)`` tuples or ``"L.H"`` strings.
    Returns :class:`QKScores` with ``scores[s]`` and ``pattern[s]`` of shape
    ``[n_chosen_heads, query, key]`` for sequence ``s`` (masked scores NaN).

    >>> r = qk_scores(model, ["1.2"], "a b c a b c")   # doctest: +SKIP
    >>> r.to_frame().head()                                    # doctest: +SKIP
    """
    seqs = as_sequences(model, texts, max_tokens)
    heads = as_heads(model, heads)
    layers = sorted({layer for layer, _ in heads})
    scores, patterns = [], []
    for seq in seqs:
        names = [f"blocks.{layer}.attn.{h}" for layer in layers for h in ("hook_attn_scores", "hook_pattern")]
        acts = capture(model, seq, names)
        scores.append(np.stack([masked_scores(acts[f"blocks.{l}.attn.hook_attn_scores"][h]) for l, h in heads]))
        patterns.append(np.stack([acts[f"blocks.{l}.attn.hook_pattern"][h].numpy() for l, h in heads]))
    return QKScores(model_name=model_name(model), heads=heads, sequences=seqs, scores=scores, patterns=patterns)


def model_name(model) -> str:
    src = getattr(model, "headscope_source", None)
    return getattr(src, "name", None) or getattr(model.cfg, "model_name", "model")
