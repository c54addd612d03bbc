"""Attention of chosen heads on one sequence, for pictures: token labels and patterns.

Only the layers of the chosen heads are kept, and only those heads' rows; nothing else is
cached.
"""

from __future__ import annotations

import numpy as np
import torch

from ..head_labels import Head
from ..models.inputs import TokenSequence
from ..models.model import as_model
from ..results.attention import AttentionSample
from ..tokens import token_text

__all__ = ["AttentionSample", "attention_patterns", "attention_sample"]


@torch.no_grad()
def attention_patterns(model, tokens: torch.Tensor, heads: list[Head]) -> np.ndarray:
    """``[len(heads), n, n]`` float32 patterns of ``heads`` on one sequence ``tokens`` ([1, n])."""
    m = as_model(model)
    layers = sorted({layer for layer, _ in heads})
    kept: dict[int, torch.Tensor] = {}

    def keeper(layer: int):
        wanted = [h for l_, h in heads if l_ == layer]

        def keep(pattern, hook):
            kept[layer] = pattern[0, wanted].float().cpu()

        return keep

    m.run_with_hooks(
        tokens.to(m.device), fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", keeper(layer)) for layer in layers]
    )
    out = []
    for layer, head in heads:
        wanted = [h for l_, h in heads if l_ == layer]
        out.append(kept[layer][wanted.index(head)])
    return torch.stack(out).numpy()


def attention_sample(
    model, seq: TokenSequence | torch.Tensor, heads: list[Head], title: str, max_tokens: int = 96, note: str = ""
) -> AttentionSample:
    """Patterns of ``heads`` on ``seq`` (a :class:`TokenSequence`, or ids ``[1, n]``); cut to ``max_tokens`` (noted).

    Attention is causal, so the rows kept after a cut are exactly those of the whole sequence.
    """
    m = as_model(model)
    if isinstance(seq, TokenSequence):
        ids, notes, text = list(seq.ids), list(seq.notes), seq.text
    else:
        ids, notes, text = seq[0].tolist(), [], None
    notes = ([note] if note else []) + notes
    if len(ids) > max_tokens:
        notes.append(f"showing the first {max_tokens} of {len(ids)} tokens")
        ids = ids[:max_tokens]
    tokens = torch.tensor([ids], dtype=torch.long)
    return AttentionSample(
        title,
        [token_text(m.tokenizer, i) for i in ids],
        list(heads),
        attention_patterns(m, tokens, heads),
        "; ".join(notes),
        ids,
        text,
    )
