"""Next-token losses of a pass, and their means over the repeats of a repeated-token sequence.

Its own module so that the scan (:mod:`.induction_scan`) and the causal check
(:mod:`.ablation`) read the same definition without importing each other.
"""

from __future__ import annotations

import torch

from ..scores.layout import RepeatLayout, first_repeat_targets, later_repeat_targets


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
    """Mean of ``[..., n-1]`` per-position losses over the predictable targets in repeats 2..R.

    The targets are :func:`~headscope.scores.layout.later_repeat_targets` (the first token of
    repeat 2, which no context predicts, left out).
    """
    idx = torch.as_tensor(later_repeat_targets(layout), device=per_position.device)
    return per_position.index_select(-1, idx).mean(-1)


def first_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """Mean of ``[..., n-1]`` per-position losses over the targets in repeat 1."""
    idx = torch.as_tensor(first_repeat_targets(layout), device=per_position.device)
    return per_position.index_select(-1, idx).mean(-1)
