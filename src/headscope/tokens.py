"""Tokens as text: one decoding rule, and one convention for showing whitespace.

A token's label is its own decoded text (whitespace kept, no clean-up of spaces); pictures and
pages show whitespace visibly: a space as ``·``, a newline as ``↵``, a tab as ``⇥``, a carriage
return as ``␍``.
"""

from __future__ import annotations

from typing import Any

import torch

_VISIBLE = str.maketrans({" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible_whitespace(text: str) -> str:
    """``"·the↵"`` for ``" the\\n"``.

    >>> visible_whitespace(" a\\tb\\n")
    '·a⇥b↵'
    """
    return text.translate(_VISIBLE)


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text of one token on its own (special tokens keep their literal name)."""
    text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    if text == "":
        text = tokenizer.convert_ids_to_tokens(int(token_id)) or f"<{token_id}>"
    return str(text)


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
