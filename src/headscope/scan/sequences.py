"""Repeated random token sequences: ``[BOS] + r * repeats``.

``r`` is ``seq_len`` token ids drawn uniformly (seeded) from the model's *ordinary* tokens:
every id of the tokenizer except its special tokens (BOS/EOS/PAD/UNK and added special
tokens such as SmolLM2's ``<|im_start|>`` or ``<repo_name>``). Ids are used as ids, never
decoded and re-tokenised. The first token follows the model's one rule (:class:`~headscope.models.model.FirstToken`):
BOS, else EOS, else none; the layout records whether there is one (``bos``), and every score
uses the layout's positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BadInput
from ..models.inputs import check_in_vocab
from ..models.model import as_model
from ..scores.layout import RepeatLayout
from ..settings import whole_number
from ..tokens import ordinary_token_ids


@dataclass
class RepeatedTokens:
    tokens: torch.Tensor  # [batch, n_tokens] int64
    layout: RepeatLayout
    bos_token_id: int | None
    bos_source: str = "bos"


def check_settings(
    seq_len: int, batch: int, repeats: int, bos: bool, n_ctx: int | None, model_name: str = "the model"
) -> RepeatLayout:
    for name, value in (("seq_len", seq_len), ("batch", batch), ("repeats", repeats)):
        whole_number(name, value)
    if seq_len < 2:
        raise BadInput(f"seq_len (--seq-len) must be at least 2 (got {seq_len})", hint="the default is 50")
    if batch < 1:
        raise BadInput(f"batch (--batch) must be at least 1 (got {batch})", hint="the default is 10")
    if repeats < 2:
        raise BadInput(
            f"repeats (--repeats) must be at least 2 (got {repeats}): induction needs a repeat to look back on",
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
    """Draw ``batch`` sequences ``[first token] + r * repeats`` for ``model``.

    >>> rt = repeated_tokens(model, seq_len=5, batch=2, repeats=2)
    >>> rt.tokens.shape, rt.layout.n_tokens, rt.bos_source
    (torch.Size([2, 11]), 11, 'bos')
    """
    m = as_model(model)
    first = m.first_token
    layout = check_settings(seq_len, batch, repeats, first.id is not None, m.n_ctx, m.name)
    if first.id is not None:  # random tokens are drawn below d_vocab; the first token may lie past it
        check_in_vocab(m.tokenizer, [first.id], m.cfg.d_vocab, "the repeated-token sequences", first=True)
    pool = ordinary_token_ids(m.tokenizer, m.cfg.d_vocab)
    gen = torch.Generator().manual_seed(seed)
    r = pool[torch.randint(len(pool), (batch, seq_len), generator=gen)]
    parts = [r] * repeats
    if first.id is not None:
        parts = [torch.full((batch, 1), first.id, dtype=torch.long)] + parts
    return RepeatedTokens(torch.cat(parts, dim=1), layout, first.id, first.source)
