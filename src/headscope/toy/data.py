"""Training data for the toy model: random tokens in which short spans are copied from a few to ~60 tokens back.

A sequence is ``[BOS] x_1 ... x_{n-1}`` of uniformly random ordinary tokens into which
``copies`` spans are written, one after another. Each copy draws

* its **distance** ``d`` (how far back its source lies) uniformly from
  ``min_distance .. max_distance`` (3..61 for the default 64-token context): every distance
  is equally likely, so no distance is special;
* its **length** ``k`` uniformly from ``min_block .. min(block, d, n - 1 - d)`` (2..12 where
  it fits): never longer than ``d``, so a copy never overlaps its own source and the only
  earlier occurrence of a copied token is ``d`` back; near the ends of the range fewer
  lengths fit (``d = 3``: 2 or 3; ``d = 61``: 2);
* its **start** ``dst`` uniformly from the places that fit, ``1 + d .. n - k``; the source
  starts at ``dst - d``.

A later copy may overwrite part of an earlier one; the masks are taken from the finished
tokens, so a target counts only while its copy is intact. Nothing else is predictable: the
tokens are uniform, so before induction every target costs about ``ln(vocab)`` nats.

Why these distances. On ``[r, r]`` (the copy always ``seq_len`` back) a model learns the
repeat through a *positional* shortcut -- a layer-1 head that attends ``seq_len - 1``
positions back by position alone -- and never builds a previous-token head. A 24-token block
copied 24 to 39 tokens back (the previous recipe) forms a real induction head, but one that
only looks far back: 0.76 at distance 24, 0.14-0.34 at distances 6-20. A head is an
induction head at every distance only if it was trained at every distance.

Loss masks (targets are token positions ``t``; the logit at ``t - 1`` predicts them):
``later`` marks ``t`` in ``dst + 1 .. dst + k - 1`` (the copy after its first token,
predictable by induction: ``x_{t-1}`` occurred ``d`` back and ``x_t`` followed it);
``first`` marks the same offsets of the source, ``dst - d + 1 .. dst - d + k - 1`` (nothing
to predict there: the baseline). ``distance[b, t - 1]`` is ``d`` where ``later`` holds, else 0.

>>> import torch
>>> r = CopyRecipe(n_ctx=16, vocab=8, block=4, copies=1)
>>> b = copy_batch(r, 2, torch.Generator().manual_seed(0))
>>> b.tokens.shape, b.later.shape
(torch.Size([2, 16]), torch.Size([2, 15]))
>>> r.distances()
range(3, 14)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import BadInput


@dataclass(frozen=True)
class CopyRecipe:
    """Sequence shape: ``n_ctx`` tokens (BOS included), ordinary ids ``0 .. vocab - 1``, BOS id ``vocab``;
    ``copies`` spans of ``min_block .. block`` tokens copied ``min_distance .. n_ctx - 1 - min_block`` back."""

    n_ctx: int = 64
    vocab: int = 64
    block: int = 12  # longest copy
    copies: int = 4
    min_block: int = 2
    min_distance: int = 3

    @property
    def bos_id(self) -> int:
        return self.vocab

    @property
    def max_distance(self) -> int:
        """The farthest a ``min_block`` copy fits: source at 1, copy ending at the last position."""
        return self.n_ctx - 1 - self.min_block

    def distances(self) -> range:
        """Every distance a copy can have; each is drawn with the same probability."""
        return range(self.min_distance, self.max_distance + 1)

    def lengths(self, d: int) -> range:
        """The copy lengths that fit at distance ``d`` (each equally likely given ``d``)."""
        return range(self.min_block, min(self.block, d, self.n_ctx - 1 - d) + 1)

    def check(self) -> CopyRecipe:
        if self.vocab < 2:
            raise BadInput(f"--vocab must be at least 2 (got {self.vocab})", hint="the default is 64")
        if not 2 <= self.min_block <= self.block:
            raise BadInput(
                f"--block must be at least 2 (got {self.block}): a copy of one token has nothing to predict",
                hint="the default is 12 (copies of 2 to 12 tokens)",
            )
        if self.copies < 1:
            raise BadInput(f"copies must be at least 1 (got {self.copies})", hint="the default is 4")
        if self.min_distance < self.min_block or len(self.distances()) < 8:
            raise BadInput(
                f"--n-ctx {self.n_ctx} leaves "
                + (
                    f"copy distances {self.min_distance}..{self.max_distance} only "
                    if self.max_distance >= self.min_distance
                    else "no copy distance at all "
                )
                + f"(needs at least 8 distinct distances, n_ctx >= {self.min_distance + self.min_block + 8})",
                hint="the distance to a copy must vary, or a positional shortcut pays instead of induction: "
                "raise --n-ctx",
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CopyBatch:
    tokens: torch.Tensor  # [batch, n_ctx] int64, BOS first
    first: torch.Tensor  # [batch, n_ctx - 1] bool: targets t (index t - 1) in a copy's source, after its first token
    later: torch.Tensor  # [batch, n_ctx - 1] bool: targets t in an intact copy, after its first token
    distance: torch.Tensor  # [batch, n_ctx - 1] int64: the copy distance of each `later` target, else 0
    spans: torch.Tensor  # [batch, copies, 3] int64: (dst, distance, length) of each copy, in the order written


def draw_spans(recipe: CopyRecipe, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``[batch, copies, 3]``: (dst, d, k) per copy, drawn as the module docstring says."""
    n, lo = recipe.n_ctx, recipe.min_block
    out = []
    for _ in range(recipe.copies):
        d = torch.randint(recipe.min_distance, recipe.max_distance + 1, (batch,), generator=generator)
        k_max = torch.clamp(torch.clamp(n - 1 - d, max=recipe.block), max=d)
        k = lo + (torch.rand(batch, generator=generator) * (k_max - lo + 1)).long().clamp(max=k_max - lo)
        room = n - k - d  # dst in 1 + d .. n - k
        dst = 1 + d + (torch.rand(batch, generator=generator) * room).long().clamp(max=room - 1)
        out.append(torch.stack([dst, d, k], dim=1))
    return torch.stack(out, dim=1)


def copy_batch(recipe: CopyRecipe, batch: int, generator: torch.Generator) -> CopyBatch:
    """``batch`` sequences drawn with ``generator`` (all draws from it, so a seed fixes the data)."""
    n, V = recipe.n_ctx, recipe.vocab
    tokens = torch.randint(V, (batch, n), generator=generator)
    tokens[:, 0] = recipe.bos_id
    spans = draw_spans(recipe, batch, generator)
    rows = torch.arange(batch)[:, None]
    offs = torch.arange(recipe.block)[None, :]
    for c in range(recipe.copies):
        dst, d, k = spans[:, c, 0:1], spans[:, c, 1:2], spans[:, c, 2:3]
        pos = torch.where(offs < k, dst + offs, dst)  # past the copy's end: rewrite its first token (a no-op)
        src = torch.where(offs < k, pos - d, dst - d)
        tokens[rows, pos] = tokens[rows, src]  # k <= d: the source is never inside its own copy
    idx = torch.arange(1, n)[None, :]  # target positions t = 1 .. n - 1 (mask index t - 1)
    first = torch.zeros(batch, n - 1, dtype=torch.bool)
    later = torch.zeros(batch, n - 1, dtype=torch.bool)
    distance = torch.zeros(batch, n - 1, dtype=torch.long)
    for c in range(recipe.copies):
        dst, d, k = spans[:, c, 0:1], spans[:, c, 1:2], spans[:, c, 2:3]
        inside = (idx > dst) & (idx < dst + k)
        back = (idx - d).clamp(min=1)
        intact = (tokens[:, 1:] == tokens.gather(1, back)) & (tokens[:, :-1] == tokens.gather(1, back - 1))
        hit = inside & intact
        later |= hit
        distance = torch.where(hit, d.expand_as(distance), distance)
        first |= (idx > dst - d) & (idx < dst - d + k)
    return CopyBatch(tokens, first, later, distance, spans)
