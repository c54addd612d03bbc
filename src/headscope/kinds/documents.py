"""Natural text with no download: CPython's own documentation, or the user's files.

The default corpus is ``pydoc_data.topics.topics``, the help text that ships with every
CPython (79 topics, about 465 KB of English; 113,030 SmolLM2 tokens). Topics are taken in
sorted order; a topic shorter than the window is joined to the next ones (with a blank line
between) until the piece holds at least ``window`` tokens, so every *document* has at least
``window`` tokens. Each document is cut into consecutive non-overlapping windows of exactly
``window`` tokens (a tail shorter than a window is dropped); the model's BOS (when it has
one) is put in front of every window, so position ``i`` of a window is model position
``i + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInput


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


def file_documents(paths) -> list[tuple[str, str]]:
    """``[(file name, text), ...]`` of UTF-8 text files, in the order given."""
    docs = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise BadInput(f"{path} is not a file", hint="pass text files with --file")
        docs.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
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


def token_windows(
    tokenizer,
    docs: list[tuple[str, str]],
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
    pieces: list[tuple[list[str], list[int]]] = []
    names: list[str] = []
    ids: list[int] = []
    total = 0
    for name, text in docs:
        new = tokenizer(text, add_special_tokens=False)["input_ids"]
        total += len(new)
        if ids:
            ids += tokenizer("\n\n", add_special_tokens=False)["input_ids"]
        names.append(name)
        ids = ids + list(new)
        if len(ids) >= window:
            pieces.append((names, ids))
            names, ids = [], []
    dropped = names  # a last group that never reached a window
    rows, sources = [], []
    for names, ids in pieces:
        for start in range(0, len(ids) - window + 1, window):
            rows.append(ids[start : start + window])
            sources.append("+".join(names) if len(names) <= 3 else f"{names[0]}+...+{names[-1]} ({len(names)})")
    if not rows:
        raise BadInput(
            f"the text holds {total} tokens, fewer than one window of {window}",
            hint="pass longer text (or more files)",
        )
    if max_windows is not None and len(rows) > max_windows:
        keep = torch.linspace(0, len(rows) - 1, max_windows).round().long().unique().tolist()
        rows, sources = [rows[i] for i in keep], [sources[i] for i in keep]
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

    docs = file_documents(files) if files else pydoc_topics()
    corpus = f"{len(docs)} files" if files else f"pydoc_data.topics ({len(docs)} topics, CPython's documentation)"
    bos = as_model(model).first_token.id if bos_id is _RULE else bos_id
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and window + (bos is not None) > n_ctx:
        raise BadInput(
            f"a window of {window} tokens does not fit the model's context of {n_ctx}",
            hint=f"use a window of at most {n_ctx - (bos is not None)} tokens",
        )
    return token_windows(model.tokenizer, docs, window, bos, max_windows, corpus)  # type: ignore[arg-type]
