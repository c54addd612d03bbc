"""Repeated random token sequences: ``[BOS] + r * repeats``.

``r`` is ``seq_len`` token ids drawn uniformly (seeded) from the model's *ordinary* tokens:
every id of the tokenizer except its special tokens (BOS/EOS/PAD/UNK and added special
tokens such as SmolLM2's ``<|im_start|>`` or ``<repo_name>``). Ids are used as ids, never
decoded and re-tokenised. Models whose tokenizer has no BOS token get no BOS; the layout
records that choice (``bos``), and every score uses the layout's positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BadInput


@dataclass(frozen=True)
class RepeatLayout:
    """Positions of the repeats inside a sequence of ``bos + repeats * seq_len`` tokens."""

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


@dataclass
class RepeatedTokens:
    tokens: torch.Tensor  # [batch, n_tokens] int64
    layout: RepeatLayout
    bos_token_id: int | None
    bos_source: str = "bos"


def ordinary_token_ids(tokenizer, d_vocab: int) -> torch.Tensor:
    """All token ids below ``d_vocab`` that are not special tokens."""
    n = min(d_vocab, len(tokenizer))
    special = set(int(i) for i in (tokenizer.all_special_ids or []))
    for idx, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            special.add(int(idx))
    keep = torch.ones(n, dtype=torch.bool)
    for i in special:
        if 0 <= i < n:
            keep[i] = False
    return keep.nonzero().squeeze(1)


def check_settings(seq_len: int, batch: int, repeats: int, bos: bool, n_ctx: int | None, model_name: str = "the model") -> RepeatLayout:
    if seq_len < 2:
        raise BadInput(f"--seq-len must be at least 2 (got {seq_len})", hint="the default is 50")
    if batch < 1:
        raise BadInput(f"--batch must be at least 1 (got {batch})", hint="the default is 10")
    if repeats < 2:
        raise BadInput(
            f"--repeats must be at least 2 (got {repeats}): induction needs a repeat to look back on",
            hint="use --repeats 2 (ARENA) or 4 (Olsson et al.'s prefix matching)",
        )
    layout = RepeatLayout(seq_len, repeats, bos)
    if n_ctx is not None and layout.n_tokens > n_ctx:
        largest = (n_ctx - layout.offset) // repeats
        raise BadInput(
            f"--seq-len {seq_len} x --repeats {repeats}{' + BOS' if bos else ''} = {layout.n_tokens} tokens, "
            f"beyond {model_name}'s context of {n_ctx} tokens",
            hint=f"the largest --seq-len for --repeats {repeats} is {largest}",
        )
    return layout


def repeated_tokens(model, seq_len: int = 50, batch: int = 10, repeats: int = 2, seed: int = 0) -> RepeatedTokens:
    """Draw ``batch`` sequences ``[BOS] + r * repeats`` for ``model`` (a TransformerBridge).

    >>> rt = repeated_tokens(model, seq_len=5, batch=2, repeats=2)   # doctest: +SKIP
    >>> rt.tokens.shape, rt.layout.n_tokens                        # doctest: +SKIP
    (torch.Size([2, 11]), 11)
    """
    tok = model.tokenizer
    bos_id, bos_source = prepend_token(model)
    layout = check_settings(seq_len, batch, repeats, bos_id is not None, getattr(model.cfg, "n_ctx", None),
                            getattr(getattr(model, "headscope_source", None), "name", "the model"))
    pool = ordinary_token_ids(tok, model.cfg.d_vocab)
    gen = torch.Generator().manual_seed(seed)
    r = pool[torch.randint(len(pool), (batch, seq_len), generator=gen)]
    parts = [r] * repeats
    if bos_id is not None:
        parts = [torch.full((batch, 1), bos_id, dtype=torch.long)] + parts
    return RepeatedTokens(torch.cat(parts, dim=1), layout, bos_id, bos_source)


def prepend_token(model) -> tuple[int | None, str]:
    """(token id or None, where it came from) to start every sequence with; see ``bos_choice``."""
    choice = getattr(model, "headscope_bos", None)
    if choice is not None:
        return choice
    return getattr(model.tokenizer, "bos_token_id", None), "bos"
