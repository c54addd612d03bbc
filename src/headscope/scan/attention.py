"""Attention of chosen heads on one sequence, for pictures: token labels and patterns.

Only the layers of the chosen heads are kept, and only those heads' rows; nothing else is
cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadInput
from ..tokens import visible_whitespace


@dataclass
class AttentionSample:
    """Attention patterns of a few heads on one sequence.

    ``patterns`` is ``[len(heads), query, key]`` (queries down, keys across);
    ``tokens`` are display labels of the sequence's tokens.
    """

    title: str
    tokens: list[str]
    heads: list[tuple[int, int]]
    patterns: np.ndarray
    note: str = ""
    token_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"title": self.title, "tokens": self.tokens, "heads": [list(h) for h in self.heads], "note": self.note,
                "patterns": np.round(self.patterns, 4).tolist()}


def token_label(tokenizer, token_id: int) -> str:
    """A readable label for one token, whitespace made visible (see :mod:`headscope.tokens`)."""
    text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    if text == "":
        text = tokenizer.convert_ids_to_tokens(int(token_id)) or f"<{token_id}>"
    return visible_whitespace(text)


def token_labels(tokenizer, ids) -> list[str]:
    return [token_label(tokenizer, i) for i in ids]


def encode_text(model, text: str) -> torch.Tensor:
    """Token ids of ``text`` with the model's BOS prepended (when it has one): ``[1, n]``."""
    if text is None or not text.strip():
        raise BadInput("the text is empty", hint="pass some text that repeats, e.g. --text 'The cat sat. The cat sat.'")
    from .sequences import prepend_token

    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    bos, _ = prepend_token(model)
    if bos is not None:
        ids = [bos] + ids
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and len(ids) > n_ctx:
        raise BadInput(
            f"the text is {len(ids)} tokens long, beyond the model's context of {n_ctx} tokens; nothing was truncated",
            hint=f"shorten the text to at most {n_ctx - 1} tokens",
        )
    return torch.tensor([ids], dtype=torch.long)


@torch.no_grad()
def attention_patterns(model, tokens: torch.Tensor, heads: list[tuple[int, int]]) -> np.ndarray:
    """``[len(heads), n, n]`` float32 patterns of ``heads`` on one sequence ``tokens`` ([1, n])."""
    layers = sorted({layer for layer, _ in heads})
    kept: dict[int, torch.Tensor] = {}

    def keep(pattern, hook):
        layer = int(hook.name.split(".")[1])
        wanted = [h for l_, h in heads if l_ == layer]
        kept[layer] = pattern[0, wanted].float().cpu()

    hooks = [(f"blocks.{layer}.attn.hook_pattern", keep) for layer in layers]
    model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=hooks)
    out = []
    for layer, head in heads:
        wanted = [h for l_, h in heads if l_ == layer]
        out.append(kept[layer][wanted.index(head)])
    return torch.stack(out).numpy()


def attention_sample(model, tokens: torch.Tensor, heads: list[tuple[int, int]], title: str,
                     max_tokens: int = 96, note: str = "") -> AttentionSample:
    """Patterns of ``heads`` on ``tokens`` ([1, n]); longer sequences are cut to ``max_tokens`` (noted)."""
    n = tokens.shape[1]
    if n > max_tokens:
        tokens = tokens[:, :max_tokens]
        note = (note + " " if note else "") + f"showing the first {max_tokens} of {n} tokens"
    ids = tokens[0].tolist()
    return AttentionSample(title, token_labels(model.tokenizer, ids), list(heads),
                           attention_patterns(model, tokens, heads), note, ids)
