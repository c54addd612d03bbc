"""Natural text with no download: CPython's own documentation, or the user's files.

The default corpus is ``pydoc_data.topics.topics``, the help text that ships with every
CPython (79 topics, about 465 KB of English; 113,030 SmolLM2 tokens). Topics are taken in
sorted order; a topic shorter than the window is joined to the next ones (with a blank line
between) until the piece holds at least ``window`` tokens, so every *document* has at least
``window`` tokens. Each document is cut into consecutive non-overlapping windows of exactly
``window`` tokens (a tail shorter than a window is dropped); the model's BOS (when it has
one) is put in front of every window, so position ``i`` of a window is model position
``i + 1``.

A user's file is streamed (:func:`text_blocks`): read and tokenized in blocks of 128 KiB cut
where a line starts, the token ids kept in a compact array (4 bytes a token) and only the kept
windows turned into a tensor, so a 50 MB file costs tens of MB, not the gigabytes that
tokenizing it as one string took (measured in docs/failure-modes.md). A file shorter than a
block is tokenized whole, exactly as before.
"""

from __future__ import annotations

import codecs
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInput
from ..models.inputs import not_utf8

#: The hint for a --file that names a folder: one option names one file.
FILE_IS_A_DIRECTORY_HINT = "each --file names one text file; repeat --file for several, e.g. --file a.txt --file b.txt"
BLOCK_BYTES = 1 << 17  # 128 KiB: tokenizing a 1 MiB piece at once took 120 MiB, this about none (measured)


def pydoc_topics() -> list[tuple[str, str]]:
    """``[(topic, text), ...]`` of CPython's ``pydoc_data.topics``, sorted by topic name."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip it
        raise BadInput(
            "this Python has no pydoc_data.topics (its documentation text was stripped)",
            hint="pass your own text files with --file",
        ) from exc
    return sorted(topics.items())


def text_blocks(path: Path, block: int = BLOCK_BYTES, errors: str = "replace") -> Iterator[str]:
    """The UTF-8 text of ``path`` in pieces of about ``block`` bytes, each cut where a line starts.

    A cut falls before a run of whitespace that holds a newline and ends where a word starts, so
    no word and no run of blank lines is split; a piece with no such place is carried on.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    carry = ""
    with open(path, "rb") as f:
        while True:
            raw = f.read(block)
            text = carry + decoder.decode(raw, final=not raw)
            if not raw:
                if text:
                    yield text
                return
            cut = _last_line_start(text)
            if cut <= 0:
                carry = text
                continue
            yield text[:cut]
            carry = text[cut:]


def _last_line_start(text: str) -> int:
    """Where the last run of whitespace that holds a newline and ends before a word starts (-1: none).

    Cutting there leaves whole pretokens on both sides for byte-level BPE tokenizers: the piece
    before ends in a word, the piece after starts with the whitespace as the whole text would.
    """
    i = len(text)
    while True:
        i = text.rfind("\n", 0, i)
        if i < 0:
            return -1
        if i + 1 < len(text) and not text[i + 1].isspace():
            j = i
            while j > 0 and text[j - 1].isspace():
                j -= 1
            if j > 0:
                return j


def check_text_file(path: Path) -> None:
    """Check that ``path`` is a non-empty UTF-8 text file, reading it in blocks (never whole)."""
    if path.is_dir():
        raise BadInput(f"--file {path} is a directory, not a file", hint=FILE_IS_A_DIRECTORY_HINT)
    if not path.is_file():
        raise BadInput(f"--file {path} does not exist or is not a file", hint="check the path")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, blank = 0, True
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(BLOCK_BYTES)
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as exc:
                    raise not_utf8(
                        "--file",
                        path,
                        offset
                        + len(raw)
                        - len(exc.object)
                        + exc.start,  # the decoder may hold bytes of the block before
                        raw,
                        "convert it first, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`",
                    ) from None
                blank = blank and not text.strip()
                offset += len(raw)
                if not raw:
                    break
    except OSError as exc:
        raise BadInput(f"--file {path} cannot be read ({exc.strerror or exc})", hint="check the path") from None
    if blank:
        raise BadInput(f"--file {path} is empty", hint="give a file with some text in it")


def as_files(files) -> list[Path] | None:
    """``files`` as a list of paths: None stays None (the default corpus), one ``str``/``PathLike`` is one file.

    An empty list is refused, not read as "the default corpus"; so is anything that is not a path.

    >>> as_files("notes.txt"), as_files(None)
    ([PosixPath('notes.txt')], None)
    >>> as_files([])
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: files (--file) is empty: no files were given
      hint: pass at least one text file, or files=None for the default corpus (CPython's pydoc_data.topics)
    """
    if files is None:
        return None
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    try:
        paths = list(files)
    except TypeError:
        raise BadInput(
            f"files (--file) must be a path or a list of paths, got {type(files).__name__}",
            hint="e.g. files=['notes.txt']",
        ) from None
    if not paths:
        raise BadInput(
            "files (--file) is empty: no files were given",
            hint="pass at least one text file, or files=None for the default corpus (CPython's pydoc_data.topics)",
        )
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise BadInput(
                f"files (--file) must hold paths, got {p!r} ({type(p).__name__})", hint="e.g. files=['notes.txt']"
            )
    return [Path(p).expanduser() for p in paths]


def file_documents(paths) -> list[tuple[str, Iterable[str]]]:
    """``[(file name, its text in blocks), ...]`` of UTF-8 text files, in the order given (read when iterated).

    ``paths``: one path or a list of them (:func:`as_files`); every one must be a file, and at least one given.
    """
    docs: list[tuple[str, Iterable[str]]] = []
    for path in as_files(paths) or []:
        if not path.is_file():
            raise BadInput(f"{path} is not a file", hint="pass text files with --file")
        docs.append((path.name, _Blocks(path)))
    if not docs:
        raise BadInput("no files were given", hint="pass at least one text file, or none for the default corpus")
    return docs


@dataclass
class TokenWindows:
    """``tokens`` is ``[n_windows, bos + window]``; ``sources[i]`` names the topics/files of window i."""

    tokens: torch.Tensor
    window: int
    bos: bool
    sources: list[str]
    corpus: str
    n_documents: int
    n_corpus_tokens: int
    dropped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{len(self.sources)} windows of {self.window} tokens{' (+BOS)' if self.bos else ''} from "
            f"{self.n_documents} documents of {self.corpus} ({self.n_corpus_tokens} tokens)"
        )


def unknown_share(tokenizer, windows: TokenWindows) -> float:
    """The fraction of the windows' text tokens (the prefix left out) that are the tokenizer's unknown token.

    A word-level tokenizer (the toy's) reads natural English as nothing but ``<unk>``: what is measured on
    such windows says nothing about text. 0.0 for a tokenizer without an unknown token.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    text = windows.tokens[:, int(windows.bos) :]
    if unk is None or text.numel() == 0:
        return 0.0
    return float((text == unk).double().mean())


class _Blocks:
    """A file's text, re-readable in blocks (each iteration reads the file again)."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[str]:
        return text_blocks(self.path)


def check_holds_a_window(tokenizer, docs: list[tuple[str, Iterable[str]]], window: int) -> None:
    """Refuse, before any forward pass, text that :func:`token_windows` would find shorter than one window.

    Tokenizes only until ``window`` tokens are counted (the first block of a large file), with the
    separators :func:`token_windows` puts between documents, so it refuses exactly what that refuses.
    """
    sep = len(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    total = with_separators = 0
    for k, (_, text) in enumerate(docs):
        with_separators += sep if k else 0
        for block in [text] if isinstance(text, str) else text:
            n = len(tokenizer(block, add_special_tokens=False)["input_ids"])
            total, with_separators = total + n, with_separators + n
            if with_separators >= window:
                return
    raise BadInput(
        f"the text holds {total} tokens, fewer than one window of {window}",
        hint="pass longer text (or more files), or leave out what reads natural text (--no-icl, --no-natural-sinks)",
    )


def token_windows(
    tokenizer,
    docs: list[tuple[str, str]] | list[tuple[str, Iterable[str]]],
    window: int,
    bos_id: int | None,
    max_windows: int | None = None,
    corpus: str = "text",
) -> TokenWindows:
    """Cut ``docs`` into windows of ``window`` tokens (see the module docstring).

    ``max_windows`` keeps that many windows spread evenly over the corpus (not the first
    ones, which would all come from the alphabetically first topics).
    """
    if window < 2:
        raise BadInput(f"the window must hold at least 2 tokens (got {window})")
    pieces: list[tuple[list[str], array]] = []
    names: list[str] = []
    ids = array("i")
    total = 0
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    for name, text in docs:
        if ids:
            ids.extend(sep)
        names.append(name)
        for block in [text] if isinstance(text, str) else text:
            new = tokenizer(block, add_special_tokens=False)["input_ids"]
            total += len(new)
            ids.extend(new)
        if len(ids) >= window:
            pieces.append((names, ids))
            names, ids = [], array("i")
    dropped = names  # a last group that never reached a window
    where: list[tuple[int, int]] = []  # (piece, start) of every window
    for k, (_, piece_ids) in enumerate(pieces):
        where += [(k, start) for start in range(0, len(piece_ids) - window + 1, window)]
    if not where:
        raise BadInput(
            f"the text holds {total} tokens, fewer than one window of {window}",
            hint="pass longer text (or more files), or leave out what reads natural text (--no-icl, --no-natural-sinks)",
        )
    if max_windows is not None and len(where) > max_windows:
        keep = torch.linspace(0, len(where) - 1, max_windows).round().long().unique().tolist()
        where = [where[i] for i in keep]
    rows, sources = [], []
    for k, start in where:
        piece_names, piece_ids = pieces[k]
        rows.append(piece_ids[start : start + window].tolist())
        sources.append(
            "+".join(piece_names)
            if len(piece_names) <= 3
            else f"{piece_names[0]}+...+{piece_names[-1]} ({len(piece_names)})"
        )
    tokens = torch.tensor(rows, dtype=torch.long)
    if bos_id is not None:
        tokens = torch.cat([torch.full((len(rows), 1), bos_id, dtype=torch.long), tokens], dim=1)
    return TokenWindows(tokens, window, bos_id is not None, sources, corpus, len(pieces), total, dropped)


_RULE = object()


def natural_windows(
    model, files=None, window: int = 512, max_windows: int | None = None, bos_id: int | None | object = _RULE
) -> TokenWindows:
    """Windows of the user's ``files``, or of ``pydoc_data.topics`` when none are given.

    Each window starts with the model's first token (:class:`~headscope.models.model.FirstToken`)
    unless ``bos_id`` names another (an id, or None for no prefix).
    """
    from ..models.model import as_model

    docs = file_documents(files) if files is not None else pydoc_topics()
    corpus = (
        f"{len(docs)} files"
        if files is not None
        else f"pydoc_data.topics ({len(docs)} topics, CPython's documentation)"
    )
    bos = as_model(model).first_token.id if bos_id is _RULE else bos_id
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and window + (bos is not None) > n_ctx:
        raise BadInput(
            f"a window of {window} tokens does not fit the model's context of {n_ctx}",
            hint=f"use a window of at most {n_ctx - (bos is not None)} tokens",
        )
    return token_windows(model.tokenizer, docs, window, bos, max_windows, corpus)  # type: ignore[arg-type]
