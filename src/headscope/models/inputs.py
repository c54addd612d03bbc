"""The one input path: text to token ids, as every command and analysis feeds a model.

Rules, the same for ``induction --text``, ``qk``, ``report`` and the Python API:

- **First token**: the model's :class:`~headscope.models.model.FirstToken` (BOS, else EOS, else
  nothing) is put before the text's tokens; the text is tokenised without special tokens.
- **Too long**: a text longer than the analysis window (``max_tokens``, never more than the
  model's context) is *cut*, keeping its first tokens, and the cut is recorded in
  :attr:`TokenSequence.notes`, which every output shows. Attention is causal, so every row
  that is kept is exactly what the model computes on the whole text.
- **Labels**: each token's own text, decoded once here (whitespace kept; pictures make it
  visible with :func:`headscope.tokens.visible_whitespace`).
- **Identity**: a sequence is known by its position in the list, never by its text, so two
  identical texts stay two sequences.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInput
from ..head_labels import Head, head_label, parse_heads
from ..tokens import token_text
from .model import HeadscopeModel, as_model

#: Built-in sample texts used when the user gives none: a sentence repeated (an induction
#: head's home ground), a sentence whose names recur, and a little code.
SAMPLE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.",
    "When Mary and John went to the store, John gave a drink to Mary because Mary was thirsty.",
    "def area(width, height):\n    return width * height\n\nprint(area(3, 4), area(5, 6))",
)


@dataclass
class TokenSequence:
    """One text as the model sees it: ``ids`` (first token included), ``labels`` one per id."""

    text: str
    ids: list[int]
    labels: list[str]
    notes: list[str] = field(default_factory=list)  # e.g. "cut from 900 to 64 tokens"
    title: str = ""
    n_text_tokens: int = 0  # tokens the whole text has (first token included), before any cut

    def __len__(self) -> int:
        return len(self.ids)

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[1, n]`` int64."""
        return torch.tensor([self.ids], dtype=torch.long, device=device)


def window(model: HeadscopeModel, max_tokens: int | None) -> int:
    """How many tokens (first token included) a text may keep: ``max_tokens``, never past the context."""
    ctx = model.n_ctx
    if max_tokens is not None and max_tokens < 2:
        raise BadInput(f"max_tokens={max_tokens} leaves no room for a token after the first one", hint="use at least 2")
    return min(ctx, max_tokens) if max_tokens else ctx


def read_text_file(
    path,
    option: str,
    *,
    directory_hint: str,
    missing: str | None = None,
    missing_hint: str = "check the path",
    utf8_hint: str = "convert it first, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`",
) -> str:
    """The whole UTF-8 text of the file an option (``--file``, ``--pairs``) names, or BadInput saying what is wrong.

    A folder, a missing path (``missing``: the message, default "OPTION PATH does not exist or is not a
    file"), bytes that are not UTF-8 (the offset named) and an unreadable file each get their own message.

    >>> read_text_file("/", "--file", directory_hint="name one file")
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: --file / is a directory, not a file
      hint: name one file
    """
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{option} {p} is a directory, not a file", hint=directory_hint)
    if not p.is_file():
        raise BadInput(missing or f"{option} {p} does not exist or is not a file", hint=missing_hint)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BadInput(f"{option} {p} cannot be read ({exc.strerror or exc})", hint="check the path") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(option, p, exc.start, raw, utf8_hint) from None


def not_utf8(option: str, path, position: int, sample: bytes, hint: str) -> BadInput:
    """The error for a file that is not UTF-8 text: where it fails, and whether it looks binary (NUL bytes).

    >>> print(not_utf8("--file", "a.bin", 40, b"\\x7fELF\\x02\\x00", "convert it"))
    --file a.bin is not UTF-8 text (byte 40, counting from 0, cannot be decoded); it holds NUL bytes, as binary files (and UTF-16 text) do
      hint: give a text file; UTF-16 text converts with `iconv -f utf-16 -t utf-8 FILE > FILE.utf8`
    """
    what = f"{option} {path} is not UTF-8 text (byte {position:,}, counting from 0, cannot be decoded)"
    if b"\x00" in sample:
        what += "; it holds NUL bytes, as binary files (and UTF-16 text) do"
        hint = "give a text file; UTF-16 text converts with `iconv -f utf-16 -t utf-8 FILE > FILE.utf8`"
    return BadInput(what, hint=hint)


def encode(
    model,
    text: str,
    *,
    max_tokens: int | None = None,
    title: str = "",
    number: int = 1,
    empty_hint: str = "",
    limit_name: str | None = None,
) -> TokenSequence:
    """``text`` as a :class:`TokenSequence` under the rules above.

    Messages name the text by ``title`` (else "text ``number``"); ``empty_hint`` replaces the command
    line's hint for an empty text (the explorer's page has no ``--text``). A cut text's note names the
    limit that applied: the model's context, or ``max_tokens`` as ``limit_name`` calls it (the command
    line: ``"--max-tokens 3"``; default ``"max_tokens=3"``).

    >>> seq = encode(model, "a b a b", max_tokens=3)
    >>> len(seq), seq.n_text_tokens, seq.notes[0].split(";")[0]
    (3, 5, 'text 1 cut from 5 to 3 tokens (first token included) to fit max_tokens=3')
    """
    m = as_model(model)
    if text is None or not str(text).strip():
        raise BadInput(
            f"{title or f'text {number}'} is empty (or only whitespace)",
            hint=empty_hint
            or "give some text, ideally one that repeats itself, e.g. --text 'The cat sat. The cat sat.'",
        )
    limit = window(m, max_tokens)
    tok = m.tokenizer
    ids = [int(i) for i in tok(str(text), add_special_tokens=False)["input_ids"]]
    if m.first_token.id is not None:
        ids = [m.first_token.id] + ids
    check_in_vocab(tok, ids, model_vocab(m), title or f"text {number}", first=m.first_token.id is not None)
    n = len(ids)
    notes = []
    if n > limit:
        why = f"the model's context of {m.n_ctx} tokens" if limit == m.n_ctx else (limit_name or f"max_tokens={limit}")
        notes.append(
            f"{title or f'text {number}'} cut from {n} to {limit} tokens (first token included) to fit {why}; "
            "the first tokens were kept, and attention being causal each kept row is exact"
        )
        ids = ids[:limit]
    return TokenSequence(
        text=str(text),
        ids=ids,
        labels=[token_text(tok, i) for i in ids],
        notes=notes,
        title=title or f"text {number}",
        n_text_tokens=n,
    )


def model_vocab(model) -> int | None:
    """The rows of ``model``'s embedding (``cfg.d_vocab``): the ids it can read; None where it does not say."""
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    return int(d_vocab) if isinstance(d_vocab, numbers.Integral) and int(d_vocab) > 0 else None


def check_in_vocab(tokenizer, ids: Sequence[int], d_vocab: int | None, what: str, *, first: bool = False) -> None:
    """Refuse ``ids`` (of ``what``) that the model's embedding has no row for: a tokenizer bigger than the weights.

    ``first``: ``ids[0]`` is the model's first token, named as such.

    >>> check_in_vocab(model.tokenizer, [464, 20950], 1000, "text 1")
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: text 1 has a token outside the model's vocabulary of 1000 ids (its embedding has 1000 rows; the tokenizer has 50257 tokens): ' elephant' (id 20950)
      hint: the tokenizer and the weights do not belong together: load the model with its own tokenizer (the one its weights were trained with)
    """
    if d_vocab is None:
        return
    bad: dict[int, int] = {}  # each distinct id outside, at its first position
    for i, t in enumerate(ids):
        if not 0 <= int(t) < d_vocab:
            bad.setdefault(int(t), i)
    if not bad:
        return
    shown = [
        f"{token_text(tokenizer, t)!r} (id {t}{', the first token put before every text' if first and i == 0 else ''})"
        for t, i in list(bad.items())[:3]
    ]
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    count = "a token" if len(bad) == 1 else f"{len(bad)} distinct tokens"
    raise BadInput(
        f"{what} has {count} outside the model's vocabulary of {d_vocab} ids (its embedding has {d_vocab} rows; "
        f"the tokenizer has {len(tokenizer)} tokens): " + ", ".join(shown) + more,
        hint="the tokenizer and the weights do not belong together: load the model with its own tokenizer "
        "(the one its weights were trained with)",
    )


def encode_texts(
    model,
    texts: Iterable[str] | str | None,
    *,
    max_tokens: int | None = None,
    titles: Iterable[str] | None = None,
    limit_name: str | None = None,
) -> list[TokenSequence]:
    """Several texts through :func:`encode` (None: the built-in :data:`SAMPLE_TEXTS`)."""
    if texts is None:
        texts, titles = list(SAMPLE_TEXTS), [f"sample text {i}" for i in range(1, len(SAMPLE_TEXTS) + 1)]
    elif isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise BadInput(
            "no text to analyse", hint="pass --text 'some text' or --file notes.txt, or neither for the samples"
        )
    names = list(titles) if titles is not None else [""] * len(texts)
    return [
        encode(
            model,
            t,
            max_tokens=max_tokens,
            title=names[i] if i < len(names) else "",
            number=i + 1,
            limit_name=limit_name,
        )
        for i, t in enumerate(texts)
    ]


def single_tokens(
    tokenizer,
    strings: Iterable[str],
    *,
    minimum: int = 2,
    what: str | None = None,
    hint: str | None = None,
    d_vocab: int | None = None,
) -> list[int]:
    """Token ids for ``strings`` asked for by name, each of which must be exactly one token.

    A string that is not one token is refused with how it does tokenise, and the
    leading-space variant suggested where that one is a single token. ``what`` names the one
    token asked for (``"the token to explain"``) where the caller takes a single string, and
    ``hint`` replaces the default hint; without them the message speaks of a token set. With
    ``d_vocab`` (the model's, :func:`model_vocab`), a token the model's embedding has no row for is
    refused as :func:`check_in_vocab` refuses it.

    >>> single_tokens(model.tokenizer, [" supercalifragilistic"], minimum=1, what="the token to explain")
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: the token to explain must be a single token of this model's tokenizer; ' supercalifragilistic' -> 6 tokens [' super', 'cal', 'if', 'rag', 'il', 'istic']
      hint: name a single token (often with a leading space, e.g. ' cat')
    """
    ids, bad = [], []
    for s in strings:
        got = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(got) == 1:
            if got[0] not in ids:
                ids.append(int(got[0]))
            continue
        pieces = [token_text(tokenizer, i) for i in got]
        alt = tokenizer(" " + s, add_special_tokens=False)["input_ids"] if not s.startswith(" ") else []
        tip = f" ({' ' + s!r} is one token)" if len(alt) == 1 else ""
        bad.append(f"{s!r} -> {len(got)} tokens {pieces}{tip}")
    if not bad:
        check_in_vocab(tokenizer, ids, d_vocab, what or "the token set")
    if bad and what:
        raise BadInput(
            f"{what} must be a single token of this model's tokenizer; " + "; ".join(bad),
            hint=hint or "name a single token (often with a leading space, e.g. ' cat')",
        )
    if bad:
        raise BadInput(
            "token set entries must be single tokens; these are not: " + "; ".join(bad),
            hint=hint or "use single-token strings (often with a leading space, e.g. ' cat'), or drop them",
        )
    if len(ids) < minimum:
        raise BadInput(f"a token set needs at least {minimum} distinct tokens, got {len(ids)}", hint="add more tokens")
    return ids


def as_sequences(model, texts, max_tokens: int | None) -> list[TokenSequence]:
    """Texts (a string, strings, or None for the samples) or ready sequences, through the one input path."""
    if isinstance(texts, TokenSequence):
        return [texts]
    if texts is not None and not isinstance(texts, str):
        if not isinstance(texts, Iterable) or isinstance(texts, (bytes, dict)):
            raise BadInput(
                f"text {texts!r} ({type(texts).__name__}) is not a string, a list of strings, a TokenSequence or None",
                hint="pass the text as a str, e.g. 'The cat sat on the mat', or None for the built-in samples",
            )
        texts = list(texts)
        if texts and all(isinstance(t, TokenSequence) for t in texts):
            return texts
        wrong = [t for t in texts if not isinstance(t, str)]
        if wrong:
            raise BadInput(
                f"every text must be a string; got {type(wrong[0]).__name__} {wrong[0]!r}",
                hint="pass a list of str (or of TokenSequence), not token ids or numbers",
            )
    return encode_texts(model, texts, max_tokens=max_tokens)


def one_sequence(model, text, max_tokens: int | None, what: str) -> TokenSequence:
    """The one text a per-text analysis reads (``what`` names it for the error), through :func:`as_sequences`;
    several texts are refused, not silently cut to the first."""
    seqs = as_sequences(model, text, max_tokens)
    if len(seqs) > 1:
        raise BadInput(
            f"{what} reads one text; {len(seqs)} were given and only the first would be analysed",
            hint=f"call {what} once per text (a list comprehension in a notebook)",
        )
    return seqs[0]


def as_heads(model, heads) -> list[Head]:
    """``(layer, head)`` tuples or ``"L5H1"``/``"5.1"`` strings, checked against the model; one head alone too."""
    m = as_model(model)
    if heads is None:
        raise BadInput("no head given", hint="pass heads such as 'L5H1', '5.1' or (5, 1), or a list of them")
    if _is_pair(heads):
        heads = [tuple(int(x) for x in heads)]
    elif isinstance(heads, (str, tuple)) or not isinstance(heads, Iterable):
        heads = [heads]  # one head; a number such as 5.1 is refused by parse_head with the reason
    return parse_heads(heads, m.n_layers, m.n_heads)


def _is_pair(heads) -> bool:
    """``[5, 1]`` (or a numpy pair): one head, since a bare number is never a head."""
    items = list(heads) if isinstance(heads, Sequence) or hasattr(heads, "tolist") else []
    return len(items) == 2 and all(isinstance(x, numbers.Integral) for x in items)


def one_head(model, head, what: str) -> Head:
    """The one head an analysis of a single head reads; several (``"5.1,6.2"``, a list) are refused, not cut to one."""
    heads = as_heads(model, head)
    if len(heads) > 1:
        raise BadInput(
            f"{what} reads one head; {len(heads)} were given ({', '.join(head_label(*lh) for lh in heads)})",
            hint=f"call {what} once per head (a list comprehension in a notebook)",
        )
    return heads[0]
