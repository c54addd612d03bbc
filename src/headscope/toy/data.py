"""Training data for the toy model: random tokens in which one block is copied after a random gap.

A sequence is ``[BOS] x_1 ... x_{n-1}`` of uniformly random ordinary tokens, in which the
``block`` tokens starting at position ``src`` are copied to start at ``dst = src + block +
gap``, with ``gap`` drawn uniformly from ``0 .. n - 1 - 2 block`` (0..15 for the default 64 and 24) and ``src`` uniformly from
the positions that leave room. Nothing else in the data is predictable: the tokens are
uniform, so before induction every target costs about ``ln(vocab)`` nats.

Why a random gap: on ``[r, r]`` (the copy always ``seq_len`` tokens back) a model learns the
repeat through a *positional* shortcut -- a layer-1 head that attends ``seq_len - 1``
positions back by position alone -- and never builds a previous-token head (measured here:
layer-0 previous-token score at most 0.05 when the repeat was learned). When the distance
to the copy changes from sequence to sequence, only a content-based lookup pays: find the
earlier occurrence of the current token and copy what followed it. That needs a
previous-token head in layer 0 whose output a layer-1 head's keys read (K-composition): an
induction head.

Loss masks (targets are token positions ``t``; the logit at ``t - 1`` predicts them):
``later`` marks ``t`` in ``dst + 1 .. dst + block - 1`` (the copy after its first token,
predictable by induction); ``first`` marks the same offsets in the first occurrence,
``src + 1 .. src + block - 1`` (not predictable: the baseline).

>>> import torch
>>> r = CopyRecipe(n_ctx=16, vocab=8, block=4)
>>> b = copy_batch(r, 2, torch.Generator().manual_seed(0))
>>> b.tokens.shape, b.later.shape, int(b.later.sum()), int(b.first.sum())
(torch.Size([2, 16]), torch.Size([2, 15]), 6, 6)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import BadInput


@dataclass(frozen=True)
class CopyRecipe:
    """Sequence shape: ``n_ctx`` tokens (BOS included), ordinary ids ``0 .. vocab - 1``, BOS id ``vocab``."""

    n_ctx: int = 64
    vocab: int = 64
    block: int = 24

    @property
    def bos_id(self) -> int:
        return self.vocab

    @property
    def max_gap(self) -> int:
        return self.n_ctx - 1 - 2 * self.block

    @property
    def min_gap_range(self) -> int:
        """The gap must range over at least half a block (and 4 tokens), or the copy sits too few distinct
        distances back: a handful of positional heads could learn them instead of induction."""
        return max(4, self.block // 2)

    def check(self) -> CopyRecipe:
        if self.vocab < 2:
            raise BadInput(f"--vocab must be at least 2 (got {self.vocab})", hint="the default is 64")
        if self.block < 2:
            raise BadInput(
                f"--block must be at least 2 (got {self.block}): a copy of one token has nothing to predict",
                hint="the default is 24",
            )
        if self.max_gap < self.min_gap_range:
            raise BadInput(
                f"--n-ctx {self.n_ctx} leaves no room for two copies of a {self.block}-token block with gaps "
                f"of 0..{self.min_gap_range} (needs n_ctx >= {2 * self.block + 1 + self.min_gap_range})",
                hint="the gap to the copy must vary over at least a block's length, or a positional shortcut "
                "pays instead of induction: raise --n-ctx or lower --block",
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CopyBatch:
    tokens: torch.Tensor  # [batch, n_ctx] int64, BOS first
    first: torch.Tensor  # [batch, n_ctx - 1] bool: targets t - 1 = index, t in the first copy (after its first token)
    later: torch.Tensor  # [batch, n_ctx - 1] bool: the same offsets in the second copy
    src: torch.Tensor  # [batch] start of the first copy
    dst: torch.Tensor  # [batch] start of the second copy


def copy_batch(recipe: CopyRecipe, batch: int, generator: torch.Generator) -> CopyBatch:
    """``batch`` sequences drawn with ``generator`` (all draws from it, so a seed fixes the data)."""
    n, k, V = recipe.n_ctx, recipe.block, recipe.vocab
    tokens = torch.randint(V, (batch, n), generator=generator)
    tokens[:, 0] = recipe.bos_id
    gap = torch.randint(recipe.max_gap + 1, (batch,), generator=generator)
    # src uniform on 1 .. n - 2k - gap, so that dst + k <= n
    room = n - 2 * k - gap  # number of valid src values, >= 1
    src = 1 + (torch.rand(batch, generator=generator) * room).long().clamp(max=room - 1)
    dst = src + k + gap
    rows = torch.arange(batch)[:, None]
    offs = torch.arange(k)[None, :]
    tokens[rows, dst[:, None] + offs] = tokens[rows, src[:, None] + offs]
    # target position t has its logit at t - 1: mask index = t - 1
    idx = torch.arange(n - 1)[None, :] + 1
    first = (idx > src[:, None]) & (idx < (src + k)[:, None])
    later = (idx > dst[:, None]) & (idx < (dst + k)[:, None])
    return CopyBatch(tokens, first, later, src, dst)
