"""Where the repeats sit inside a repeated-token sequence ``[BOS] + r * repeats``, and which targets count.

Every number read "on the first repeat" or "on later repeats" (the loss, each ablation's change
in it, the direct logit effects) takes its targets from :func:`first_repeat_targets` and
:func:`later_repeat_targets`, declared here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RepeatLayout:
    """Positions of the repeats inside a sequence of ``bos + repeats * seq_len`` tokens.

    >>> lay = RepeatLayout(seq_len=5, repeats=2, bos=True)
    >>> lay.n_tokens, lay.later_start
    (11, 6)
    """

    seq_len: int
    repeats: int
    bos: bool

    @property
    def offset(self) -> int:
        """Position of the first token of the first repeat (1 with BOS, else 0)."""
        return int(self.bos)

    @property
    def n_tokens(self) -> int:
        return self.offset + self.repeats * self.seq_len

    def repeat_start(self, k: int) -> int:
        """Position of the first token of repeat ``k`` (1-based)."""
        return self.offset + (k - 1) * self.seq_len

    @property
    def later_start(self) -> int:
        """First position of repeat 2: queries from here on have seen their token before."""
        return self.repeat_start(2)


def first_repeat_targets(layout: RepeatLayout) -> np.ndarray:
    """Scored positions ``p`` (``p`` predicts token ``p + 1``) whose target lies in repeat 1.

    Every target of repeat 1 that has a position before it (the first token has none without BOS).

    >>> first_repeat_targets(RepeatLayout(seq_len=3, repeats=2, bos=True)).tolist()
    [0, 1, 2]
    """
    return np.arange(max(layout.offset, 1) - 1, layout.later_start - 1, dtype=np.int64)


def later_repeat_targets(layout: RepeatLayout) -> np.ndarray:
    """Scored positions ``p`` whose target token ``p + 1`` lies in repeats 2..R *and can be predicted*.

    A target can be predicted from context when the pair (previous token, target) occurred
    earlier in the sequence. Every target of repeats 2..R passes but one: the first token of
    repeat 2, which follows the end of repeat 1, a pair seen nowhere before (no context, and no
    induction head, can predict it). The first token of repeat 3 onwards follows the same pair
    seen at the end of repeat 1, so it counts. The later-repeat loss, every ablation's change in
    it and the direct logit effect on later repeats all read these positions.

    >>> lay = RepeatLayout(seq_len=3, repeats=3, bos=True)  # B a b c | a b c | a b c
    >>> later_repeat_targets(lay).tolist()  # targets 5..9: not 4, the a after the first c
    [4, 5, 6, 7, 8]
    """
    return np.arange(layout.later_start, layout.n_tokens - 1, dtype=np.int64)
