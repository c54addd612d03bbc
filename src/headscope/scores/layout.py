"""Where the repeats sit inside a repeated-token sequence ``[BOS] + r * repeats``."""

from __future__ import annotations

from dataclasses import dataclass


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
