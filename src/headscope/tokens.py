"""Tokens as text: one decoding rule, and one convention for showing whitespace.

A token's label is its own decoded text (whitespace kept, no clean-up of spaces); pictures and
pages show whitespace visibly: a space as ``·``, a newline as ``↵``, a tab as ``⇥``, a carriage
return as ``␍``.
"""

from __future__ import annotations

from typing import Any

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
