"""Next-token losses of a pass, and their means over the repeats of a repeated-token sequence.

Its own module so that the scan (:mod:`.induction_scan`) and the causal check
(:mod:`.ablation`) read the same definition without importing each other.
"""

from __future__ import annotations

import torch

from ..scores.layout import RepeatLayout


def token_losses(logits: torch.Tensor, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``[batch, n-1]`` cross-entropy of predicting token p+1 at position p, in position chunks."""
    # logsumexp - gather over the contiguous vocab axis: 3x faster on CPU than cross_entropy,
    # which wants the classes on axis 1 and so walks a transposed [batch, vocab, pos] view.
    out = []
    for p in range(0, tokens.shape[1] - 1, chunk):
        lg = logits[:, p : min(p + chunk, tokens.shape[1] - 1)].float()
        tg = tokens[:, p + 1 : p + 1 + lg.shape[1]]
        out.append(torch.logsumexp(lg, dim=-1) - lg.gather(-1, tg[..., None])[..., 0])
    return torch.cat(out, dim=1)


def later_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """Mean of ``[..., n-1]`` per-position losses over targets in repeats 2..R."""
    return per_position[..., layout.later_start - 1 :].mean(-1)


def first_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    start = max(layout.offset, 1)
    return per_position[..., start - 1 : layout.later_start - 1].mean(-1)
