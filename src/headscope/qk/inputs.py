"""What the QK analysis reads: texts turned into token sequences, head specs, token sets.

Every check here raises :class:`~headscope.errors.BadInput` with a message that names the
offending value and a hint saying what would work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import BadInput

#: Built-in sample sequences used when the user gives no text: a sentence repeated (an
#: induction head's home ground), a sentence whose names recur, and a little code.
SAMPLE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.",
    "When Mary and John went to the store, John gave a drink to Mary because Mary was thirsty.",
    "def area(width, height):\n    return width * height\n\nprint(area(3, 4), area(5, 6))",
)


@dataclass
class TokenSequence:
    """One text as the model sees it: ``ids[0]`` is the BOS token we prepend."""

    text: str
    ids: list[int]
    labels: list[str]  # each token decoded on its own (raw text, whitespace kept)
    notes: list[str] = field(default_factory=list)  # e.g. "truncated from 900 to 128 tokens"

    def __len__(self) -> int:
        return len(self.ids)

    def tensor(self, device=None) -> torch.Tensor:
        return torch.tensor([self.ids], dtype=torch.long, device=device)


def bos_id(tokenizer) -> int | None:
    """The token prepended to every sequence (BOS, else EOS as GPT-2 does), or None."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Each token decoded on its own; special tokens keep their literal name."""
    return [tokenizer.decode([i]) for i in ids]


def context_length(model) -> int:
    return int(getattr(model.cfg, "n_ctx", 0) or 2048)


def prepare_texts(model, texts: list[str], max_tokens: int | None = None) -> list[TokenSequence]:
    """Tokenize ``texts`` (BOS prepended), truncating to the context or ``max_tokens``.

    Truncation keeps the first tokens and is recorded in :attr:`TokenSequence.notes`, never
    silent. Empty (or whitespace-only) texts are refused.
    """
    if not texts:
        raise BadInput("no text to analyse", hint="pass --text 'some text' or --file notes.txt, or neither for the samples")
    tok = model.tokenizer
    bos = bos_id(tok)
    ctx = context_length(model)
    limit = min(ctx, max_tokens) if max_tokens else ctx
    if limit < 2:
        raise BadInput(f"max_tokens={max_tokens} leaves no room for a token after BOS", hint="use at least 2")
    out = []
    for n, text in enumerate(texts, 1):
        if not text or not text.strip():
            raise BadInput(f"text {n} is empty (or only whitespace)", hint="give some words to analyse")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = ([bos] if bos is not None else []) + list(ids)
        notes = []
        if len(ids) > limit:
            why = f"the model's context of {ctx} tokens" if limit == ctx else f"max_tokens={limit}"
            notes.append(f"text {n} truncated from {len(ids)} to {limit} tokens (BOS included) to fit {why}; "
                         "the first tokens were kept")
            ids = ids[:limit]
        out.append(TokenSequence(text=text, ids=ids, labels=token_labels(tok, ids), notes=notes))
    return out


_HEAD_RE = re.compile(r"^\s*L?(\d+)\s*[.:]\s*H?(\d+)\s*$", re.IGNORECASE)


def parse_head(spec: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    """``"5.1"`` (or ``L5H1``-style ``"L5.H1"``, ``"5:1"``) -> ``(5, 1)``, range-checked."""
    m = _HEAD_RE.match(str(spec))
    if not m:
        raise BadInput(f"malformed head {spec!r}: expected LAYER.HEAD, e.g. 5.1",
                       hint=f"layers are 0..{n_layers - 1}, heads 0..{n_heads - 1}")
    layer, head = int(m.group(1)), int(m.group(2))
    if not 0 <= layer < n_layers:
        raise BadInput(f"head {spec}: layer {layer} does not exist; this model has {n_layers} layers (0..{n_layers - 1})",
                       hint=f"use a layer from 0 to {n_layers - 1}")
    if not 0 <= head < n_heads:
        raise BadInput(f"head {spec}: head {head} does not exist; each layer has {n_heads} heads (0..{n_heads - 1})",
                       hint=f"use a head from 0 to {n_heads - 1}")
    return layer, head


def parse_heads(specs: list[str], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Parse and de-duplicate head specs, keeping their order. Comma-separated lists work too."""
    heads: list[tuple[int, int]] = []
    for spec in specs:
        for part in str(spec).split(","):
            if part.strip():
                lh = parse_head(part, n_layers, n_heads)
                if lh not in heads:
                    heads.append(lh)
    if not heads:
        raise BadInput("no head given", hint="use LAYER.HEAD, e.g. --head 5.1")
    return heads


def token_set(tokenizer, strings: list[str], min_count: int = 2) -> list[int]:
    """Token ids for ``strings``, each of which must be exactly one token (at least ``min_count`` distinct).

    A string that is not one token is refused with how it does tokenise, and the
    leading-space variant suggested where that one is a single token.
    """
    ids, bad = [], []
    for s in strings:
        got = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(got) == 1:
            if got[0] not in ids:
                ids.append(int(got[0]))
            continue
        pieces = [tokenizer.decode([i]) for i in got]
        alt = tokenizer(" " + s, add_special_tokens=False)["input_ids"] if not s.startswith(" ") else []
        tip = f" ({' ' + s!r} is one token)" if len(alt) == 1 else ""
        bad.append(f"{s!r} -> {len(got)} tokens {pieces}{tip}")
    if bad:
        raise BadInput("token set entries must be single tokens; these are not: " + "; ".join(bad),
                       hint="use single-token strings (often with a leading space, e.g. ' cat'), or drop them")
    if len(ids) < min_count:
        raise BadInput(f"a token set needs at least {min_count} distinct tokens, got {len(ids)}", hint="add more tokens")
    return ids
