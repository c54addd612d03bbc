"""Successor heads from the weights: does a head's OV circuit map each ordinal token to the next?

Gould et al. 2023 ("Successor Heads: Recurring, Interpretable Attention Heads In The Wild",
arXiv 2312.09230) take ordinal token sets -- numbers 1..200, number words one..twenty,
cardinal words first..tenth, days, day prefixes, months, month prefixes, letters A..Z --
and, for each head, the *effective OV circuit* ``W_U W_OV MLP0(W_E)`` (the first MLP's
output on the token embedding as the effective embedding). A token succeeds when, among the
logits of the tokens of *its own set*, its successor's is the largest; the succession score
is the fraction of tokens (over all sets pooled) that succeed.

headscope's conventions:

* Only sets the tokenizer has as single tokens are used. For each set the form with a leading
  space (``" Monday"``, as the word appears mid-sentence) is used when every member is one
  token, else the bare form (``"Monday"``); a set with a member of two or more tokens in both
  forms is skipped, and the reason recorded. For numbers the longest run 1..N of single
  tokens is used (SmolLM2 splits numbers into digits: N = 9). A set needs ``min_size``
  members (default 5).
* Days, months and their prefixes are cyclic (Sunday -> Monday, December -> January); numbers,
  number words, cardinal words and letters are not (their last member has no successor).
* Effective embedding ``"mlp0"`` (Gould et al.), computed by the model's own block 0 on each
  token alone (:mod:`headscope.models.embedding`, handed in through
  :class:`~headscope.scores.weight_score.WeightInputs`: this module runs no model); the OV
  circuit is read through :func:`headscope.scores.ov_factors.ov_factors` (norm centring
  applied, biases left out). :func:`headscope.kinds.successor_scores` runs it on a model.
* Ties count against: a token succeeds only when its successor's logit is strictly the
  largest in the set.
"""

from __future__ import annotations

import string
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..folded_weights import HeadWeights
from .ov_factors import ov_factors
from .weight_score import WeightInputs, WeightScore

#: The registry's definition of the successor score (``scores/registry.py`` declares it with this text).
DEFINITION = (
    "Fraction of ordinal tokens (numbers, number words, cardinal words, days, months and their prefixes, "
    "letters: the sets the tokenizer has as single tokens) whose successor gets the largest logit, among the "
    "tokens of its set, from the head's effective OV circuit W_U W_OV MLP0(W_E) (effective embedding: the "
    'first MLP on the bare embedding, attention 0 off). Source: Gould et al. 2023, "Successor Heads", '
    "arXiv 2312.09230. Threshold 0.5 is headscope's (the paper names none). Not measured (empty, null in "
    "JSON) where the tokenizer has none of the sets as single tokens."
)

_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()

ORDINAL_SETS: dict[str, list[str]] = {
    "numbers": [str(i) for i in range(1, 201)],
    "number_words": _NUMBER_WORDS,
    "cardinal_words": "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
    "days": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "day_prefixes": "Mon Tue Wed Thu Fri Sat Sun".split(),
    "months": ("January February March April May June July August September October November December").split(),
    "month_prefixes": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(),
    "letters": list(string.ascii_uppercase),
}
CYCLIC = frozenset({"days", "day_prefixes", "months", "month_prefixes"})
DEFAULT_MIN_SIZE = 5


@dataclass(frozen=True)
class OrdinalSet:
    """One usable set: ``words`` as tokenized (with their leading space, if any), ``token_ids`` in order."""

    name: str
    words: tuple[str, ...]
    token_ids: tuple[int, ...]
    cyclic: bool

    def pairs(self) -> list[tuple[int, int]]:
        """``[(i, i+1), ...]`` indices into the set; cyclic sets add ``(last, 0)``."""
        n = len(self.token_ids)
        return [(i, i + 1) for i in range(n - 1)] + ([(n - 1, 0)] if self.cyclic else [])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "words": list(self.words),
            "token_ids": list(self.token_ids),
            "cyclic": self.cyclic,
            "n_pairs": len(self.pairs()),
        }


def _single_token(tokenizer, text: str, d_vocab: int) -> tuple[int | None, str]:
    """``text``'s one token id, or None and why it cannot be used (the reason a skipped set gives)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return None, f"{text!r} is more than one token" if ids else f"{text!r} is no token"
    if not 0 <= ids[0] < d_vocab:
        return None, f"{text!r} is token {ids[0]}, outside the model's vocabulary of {d_vocab}"
    if ids[0] == getattr(tokenizer, "unk_token_id", None):
        return None, f"{text!r} is the unknown token"
    return int(ids[0]), ""


def usable_ordinal_sets(
    tokenizer, d_vocab: int, min_size: int = DEFAULT_MIN_SIZE, sets: dict[str, list[str]] | None = None
) -> tuple[list[OrdinalSet], dict[str, str]]:
    """The ordinal sets ``tokenizer`` has as single tokens, and why each other set was skipped."""
    used, skipped = [], {}
    for name, members in (sets or ORDINAL_SETS).items():
        best: tuple[list[str], list[int]] = ([], [])
        problem = ""
        for prefix in (" ", ""):
            words, ids = [], []
            for m in members:
                tid, why = _single_token(tokenizer, prefix + m, d_vocab)
                if tid is None:
                    problem = problem or why
                    break
                words.append(prefix + m)
                ids.append(tid)
            run_is_enough = name == "numbers"  # numbers: the longest run 1..N counts
            if (len(ids) == len(members) or run_is_enough) and len(ids) > len(best[1]):
                best = (words, ids)
        words, ids = best
        if len(set(ids)) != len(ids):
            skipped[name] = "two members share a token"
        elif len(ids) < min_size:
            skipped[name] = problem if not ids else f"only {len(ids)} single-token members (need {min_size})"
        else:
            used.append(OrdinalSet(name, tuple(words), tuple(ids), name in CYCLIC))
    return used, skipped


@torch.no_grad()
def successor_counts(w: HeadWeights, X: torch.Tensor, token_ids: torch.Tensor, sets: list[OrdinalSet]):
    """Per set, ``[n_layers, n_heads]`` number of pairs whose successor wins (core of the score).

    ``X [n, d_model]`` are the effective embeddings of ``token_ids [n]`` (every token of every set).
    """
    where = {int(t): i for i, t in enumerate(token_ids.tolist())}
    L, H = w.n_layers, w.n_heads
    counts = {s.name: torch.zeros(L, H) for s in sets}
    for layer in range(L):
        A, B = ov_factors(w, X, layer, token_ids)
        logits = (A @ B).cpu()  # [H, n, n]: row = source token, column = candidate output
        for s in sets:
            idx = torch.tensor([where[t] for t in s.token_ids])
            sub = logits[:, idx][:, :, idx]  # [H, |s|, |s|] restricted to the set
            src, dst = map(torch.tensor, zip(*s.pairs()))
            target = sub[:, src, dst]  # [H, pairs]
            others = sub[:, src].clone()
            others[:, torch.arange(len(src)), dst] = -torch.inf
            counts[s.name][layer] = (target > others.max(-1).values).float().sum(-1)  # ties count against
    return counts


@dataclass
class SuccessorScores:
    """``scores`` ``[n_layers, n_heads]`` pooled over ``sets``; ``per_set[name]`` the same per set."""

    scores: np.ndarray
    per_set: dict[str, np.ndarray]
    sets: list[OrdinalSet]
    skipped: dict[str, str]
    convention: str
    timings: dict[str, float] = field(default_factory=dict)

    def top_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        order = np.argsort(-self.scores, axis=None, kind="stable")[:k]
        H = self.scores.shape[1]
        return [(int(i // H), int(i % H), float(self.scores.flat[i])) for i in order]

    def to_dict(self) -> dict:
        return {
            "definition": DEFINITION,
            "convention": self.convention,
            "scores": self.scores.tolist(),
            "per_set": {k: v.tolist() for k, v in self.per_set.items()},
            "sets": [s.to_dict() for s in self.sets],
            "skipped": self.skipped,
            "timings": self.timings,
        }

    def to_json(self, **kw) -> str:
        from ..jsonsafe import dumps

        return dumps(self.to_dict(), **{"indent": None, **kw})  # strict JSON: NaN/Infinity -> null

    def to_frame(self):
        import pandas as pd

        L, H = self.scores.shape
        cols = {"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L), "successor": self.scores.ravel()}
        cols.update({f"successor_{k}": v.ravel() for k, v in self.per_set.items()})
        return pd.DataFrame(cols)


def score_successors(
    w: HeadWeights, inputs: WeightInputs, *, convention: str = "mlp0", min_size: int = DEFAULT_MIN_SIZE
) -> SuccessorScores:
    """Successor score of every head from its weights ``w`` and ``inputs`` (tokenizer, effective embeddings).

    Raises nothing when no set is usable: the scores are then NaN (not measured, never 0) and
    ``skipped`` says why.
    :func:`headscope.kinds.successor_scores` runs it on a model.
    """
    t0 = time.perf_counter()
    sets, skipped = usable_ordinal_sets(inputs.tokenizer, inputs.d_vocab, min_size)
    L, H = w.n_layers, w.n_heads
    if not sets:
        nothing = np.full((L, H), np.nan)  # not measured: a 0 would read as "measured, no successor head"
        return SuccessorScores(nothing, {}, [], skipped, convention, {"successor_s": time.perf_counter() - t0})
    token_ids = torch.tensor(sorted({t for s in sets for t in s.token_ids}))
    X = inputs.embed(token_ids, convention)
    counts = successor_counts(w, X, token_ids, sets)
    n_pairs = {s.name: len(s.pairs()) for s in sets}
    total = sum(counts.values())
    return SuccessorScores(
        scores=(total / sum(n_pairs.values())).numpy().astype(np.float64),
        per_set={k: (v / n_pairs[k]).numpy().astype(np.float64) for k, v in counts.items()},
        sets=sets,
        skipped=skipped,
        convention=convention,
        timings={"successor_s": time.perf_counter() - t0},
    )


def successor_weight_score(w: HeadWeights, inputs: WeightInputs) -> WeightScore:
    """The registry's successor score: ``[L, H]``, and which ordinal sets the model could use."""
    r = score_successors(w, inputs)
    return WeightScore(
        torch.from_numpy(r.scores),
        {"convention": r.convention, "sets": [st.name for st in r.sets], "skipped": r.skipped},
    )


def describe_sets(notes: dict) -> str:
    """One sentence on which ordinal sets the score used and why the others were skipped."""
    skipped = "; ".join(f"{k}: {v}" for k, v in notes.get("skipped", {}).items())
    return (
        f"Successor score's ordinal sets: {', '.join(notes.get('sets', [])) or 'none'}"
        + (f" (skipped: {skipped})" if skipped else "")
        + "."
    )
