"""Tokens as text: one decoding rule, and one convention for showing whitespace.

A token's label is its own decoded text (whitespace kept, no clean-up of spaces); pictures and
pages show whitespace visibly: a space as ``·``, a newline as ``↵``, a tab as ``⇥``; any other
control character as its escape (``\\r``, ``\\v``, ``\\f``, ``\\x00``), which every font can draw (the
figure font has no control pictures such as ``␍``: they were boxes).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

_NAMED = {"\r": "\\r", "\v": "\\v", "\f": "\\f"}
_VISIBLE = str.maketrans(
    {
        " ": "·",
        "\n": "↵",
        "\t": "⇥",
        **{
            c: _NAMED.get(c, f"\\x{ord(c):02x}")
            for c in map(chr, [*range(0x20), *range(0x7F, 0xA0)])
            if c not in "\n\t"
        },
    }
)


def visible_whitespace(text: str) -> str:
    """``"·the↵"`` for ``" the\\n"``.

    >>> visible_whitespace(" a\\tb\\n")
    '·a⇥b↵'
    >>> print(visible_whitespace("a\\rb\\x0bc\\x00"))
    a\\rb\\vc\\x00
    """
    return text.translate(_VISIBLE)


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 bytes (GPT-2's ``bytes_to_unicode``), char -> byte.

    Printable Latin-1 bytes stand for themselves; the other 68 take the characters from U+0100 on, in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


def _part_of_a_character(tokenizer: Any, token_id: int) -> str | None:
    """A token that holds part of a character's UTF-8 bytes, as its bytes: ``"\\xf0\\x9f"``.

    Decoded on its own such a token is U+FFFD, the same for every one; its bytes tell them apart.
    Byte-level BPE tokens (GPT-2, SmolLM2, Llama 3) are read through the byte alphabet, byte-fallback
    pieces (``<0xF0>``, SentencePiece) are already their byte. None where the piece is neither.
    """
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str) or not piece:
        return None
    if piece.startswith("<0x") and piece.endswith(">"):
        return piece
    alphabet = _byte_level_alphabet()
    if any(c not in alphabet for c in piece):
        return None
    return bytes(alphabet[c] for c in piece).decode("utf-8", errors="backslashreplace")


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text of one token on its own (special tokens keep their literal name).

    A token that holds only part of a character (an emoji or a Hebrew letter split into bytes) shows
    the bytes it holds, so two such tokens are told apart instead of both showing U+FFFD.
    """
    text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    if text == "":
        text = tokenizer.convert_ids_to_tokens(int(token_id)) or f"<{token_id}>"
    if "\ufffd" in text:
        text = _part_of_a_character(tokenizer, token_id) or text
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
