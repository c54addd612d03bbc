"""Patching tasks: a clean and a corrupted input per example, and the metric read on the logits.

Every causal number of :mod:`headscope.circuits` is measured on a :class:`CircuitTask`: ``n``
examples, each a clean token sequence and a corrupted one *of the same length*, and at chosen
positions the right next token (``answer``) and a wrong one (``wrong``). Patching moves
activations between the two runs; the metric says how much of the clean behaviour is left.

Two metrics, both per example (the mean over that example's counted positions):

- ``logit_diff``: ``logit[answer] - logit[wrong]`` at each counted position (Wang et al. 2022;
  Heimersheim & Nanda 2024 recommend it: linear in the logits, so effects add up);
- ``loss``: the cross-entropy of ``answer`` (the later-repeat loss on the induction task).

:func:`normalised` maps a metric to 1 = the clean run's value, 0 = the corrupted run's.

The induction task (:func:`induction_task`): clean ``[BOS] r r``; corrupted ``[BOS] r' r``, the
first repeat replaced by fresh random tokens (``r'[j] != r[j]`` everywhere), so the second repeat
is the same tokens at the same positions but a copy of nothing. The counted positions are the
later-repeat targets (:func:`~headscope.scores.layout.later_repeat_targets`); the answer is the
copied token ``r[j+1]``, the wrong token ``r'[j+1]`` (what copying would give in the corrupted run).

The user's task (:func:`load_pairs`): JSON Lines, one pair a line,
``{"clean": "...", "corrupt": "...", "answer": " Mary", "wrong": " John"}``; clean and corrupt
must tokenise to the same number of tokens, answer and wrong to one token each; the metric is
read at the last position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..models.inputs import encode, read_text_file
from ..models.model import as_model
from ..scan.sequences import repeated_tokens
from ..scores.layout import RepeatLayout, later_repeat_targets
from ..settings import whole_number
from ..stats import bootstrap_interval, bootstrap_ratio_interval, signed
from ..tokens import ordinary_token_ids

METRICS = ("logit_diff", "loss")

#: What each metric means, for legends and ``--help``.
METRIC_DEFINITIONS = {
    "logit_diff": "logit of the right next token minus logit of the wrong one, mean over the counted positions",
    "loss": "cross-entropy (nats) of the right next token, mean over the counted positions",
}

PAIRS_FORMAT = (
    'JSON Lines, one pair a line: {"clean": "...", "corrupt": "...", "answer": " Mary", "wrong": " John"}; '
    "clean and corrupt must have the same number of tokens; answer and wrong must be one token each; "
    "the metric is read at the last position"
)


@dataclass
class CircuitTask:
    """Clean/corrupted examples and where the metric reads them. Tensors are CPU int64.

    ``positions``, ``answer``, ``wrong`` and ``counted`` are ``[n_examples, P]``: position ``p``
    predicts token ``p + 1``; ``counted`` is False for padding entries (examples with fewer positions).
    """

    name: str
    clean: torch.Tensor  # [n_examples, n_tokens]
    corrupt: torch.Tensor  # [n_examples, n_tokens]
    positions: torch.Tensor  # [n_examples, P]
    answer: torch.Tensor  # [n_examples, P]
    wrong: torch.Tensor  # [n_examples, P]
    counted: torch.Tensor  # [n_examples, P] bool
    metric: str = "logit_diff"
    corruption: str = ""  # the rule, in words (legends)
    seed: int | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise BadInput(f"unknown metric {self.metric!r}", hint=f"use one of {', '.join(METRICS)}")
        if self.clean.shape != self.corrupt.shape:
            raise BadInput(f"clean {tuple(self.clean.shape)} and corrupt {tuple(self.corrupt.shape)} differ in shape")

    @property
    def n_examples(self) -> int:
        return int(self.clean.shape[0])

    def subset(self, idx) -> CircuitTask:
        """The examples ``idx`` (a list or tensor of indices), same metric."""
        i = torch.as_tensor(idx, dtype=torch.long)
        return CircuitTask(
            self.name, self.clean[i], self.corrupt[i], self.positions[i], self.answer[i], self.wrong[i],
            self.counted[i], self.metric, self.corruption, self.seed, list(self.notes),
        )  # fmt: skip

    def with_metric(self, metric: str) -> CircuitTask:
        """The same examples read with another metric."""
        t = self.subset(range(self.n_examples))
        t.metric = metric
        t.__post_init__()
        return t


def task_metric(logits: torch.Tensor, task: CircuitTask) -> torch.Tensor:
    """The task's metric per example, ``[n_examples]`` float32, from logits ``[n_examples, n, vocab]``.

    Only the counted positions' logits are read (so a caller may pass logits of just those rows
    via :func:`metric_at`).
    """
    pos = task.positions.to(logits.device)
    rows = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))  # [n, P, vocab]
    return metric_at(rows, task)


def metric_at(rows: torch.Tensor, task: CircuitTask) -> torch.Tensor:
    """The metric per example from the logits at the counted positions only, ``rows`` ``[n_examples, P, vocab]``."""
    rows = rows.float()
    ans = task.answer.to(rows.device)[..., None]
    cnt = task.counted.to(rows.device).float()
    if task.metric == "logit_diff":
        per = rows.gather(-1, ans)[..., 0] - rows.gather(-1, task.wrong.to(rows.device)[..., None])[..., 0]
    else:
        per = torch.logsumexp(rows, dim=-1) - rows.gather(-1, ans)[..., 0]
    return (per * cnt).sum(-1) / cnt.sum(-1).clamp_min(1)


def normalised(value, clean, corrupt):
    """``(value - corrupt) / (clean - corrupt)``: 1 = clean behaviour, 0 = corrupted (works for either sign).

    >>> normalised(2.0, clean=4.0, corrupt=0.0), normalised(3.0, clean=2.0, corrupt=4.0)
    (0.5, 0.5)
    """
    return (value - corrupt) / (clean - corrupt)


def normalised_rows(raw, clean, corrupt, seed: int = 0):
    """Each row of per-example metrics ``raw`` ``[rows, n_examples]`` normalised (1 = clean, 0 = corrupted),
    with its 95% interval: ``(means, low, high)``, each ``[rows]``.

    A row's value is ``mean(raw - corrupt) / mean(clean - corrupt)``; its interval resamples the
    examples together with their own gap (:func:`headscope.stats.bootstrap_ratio_interval`).

    >>> m, lo, hi = normalised_rows([[1.0, 1.0], [2.0, 2.0]], clean=[2.0, 2.0], corrupt=[0.0, 0.0])
    >>> m.tolist(), lo.tolist(), hi.tolist()
    ([0.5, 1.0], [0.5, 1.0], [0.5, 1.0])
    """
    raw = np.asarray(raw, dtype=np.float64)
    cl, co = np.asarray(clean, dtype=np.float64), np.asarray(corrupt, dtype=np.float64)
    gap = cl - co
    means = (raw - co).mean(-1) / gap.mean()
    iv = np.array([bootstrap_ratio_interval(r - co, gap, seed=seed) for r in raw]).reshape(-1, 2)
    return means, iv[:, 0], iv[:, 1]


def raw_rows(raw, base, seed: int = 0):
    """Each row of per-example metrics ``raw`` ``[rows, n_examples]`` as the change from the unpatched run ``base``
    (``raw - base``, in the metric's own units): ``(means, low, high)``, each ``[rows]``, with 95% bootstrap intervals.

    >>> m, lo, hi = raw_rows([[1.0, 1.0], [2.0, 2.0]], base=[0.5, 0.5])
    >>> m.tolist(), lo.tolist()
    ([0.5, 1.5], [0.5, 1.5])
    """
    d = np.asarray(raw, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    iv = np.array([bootstrap_interval(r, seed=seed) for r in d]).reshape(-1, 2)
    return d.mean(-1), iv[:, 0], iv[:, 1]


#: The sign the clean - corrupted gap has when the model does the task: the clean prompt favours the answer
#: (a higher logit difference, a lower loss).
GAP_SIGN = {"logit_diff": 1.0, "loss": -1.0}


def clean_corrupt_gap(clean, corrupt, metric: str, seed: int = 0) -> dict:
    """The clean - corrupted gap every normalised number divides by: its mean over the examples, its 95% bootstrap
    interval, and whether it is a gap at all. ``meaningful`` is False when the interval includes 0 (the model
    barely tells the two prompts apart) or the mean has the wrong sign (the corrupted prompt favours the answer
    more than the clean one); ``problem`` then says so in a sentence, and normalised effects are not meaningful.

    >>> clean_corrupt_gap([2.0, 2.1, 1.9], [0.0, 0.1, -0.1], "logit_diff")["meaningful"]
    True
    >>> print(clean_corrupt_gap([0.1, -0.1, 0.05], [0.0, 0.0, 0.0], "logit_diff")["problem"])
    the clean - corrupted gap in logit_diff is +0.017, 95% interval [-0.100, +0.100], which includes 0: the model barely tells the clean prompts from the corrupted ones, so normalised effects (shares of that gap) are not meaningful; changes in logit_diff are shown instead
    >>> print(clean_corrupt_gap([0.5], [1.0], "logit_diff")["problem"])  # one example (the explorer's): no interval
    the clean - corrupted gap in logit_diff is -0.500, one example, so no interval: the clean run scores lower than the corrupted one (clean 0.500, corrupted 1.000), the wrong way round for this task: the model does not do it, so normalised effects (shares of that gap) are not meaningful; changes in logit_diff are shown instead
    """
    cl, co = np.asarray(clean, dtype=np.float64), np.asarray(corrupt, dtype=np.float64)
    gap = cl - co
    mean = float(gap.mean())
    lo, hi = bootstrap_interval(gap, seed=seed) if gap.size > 1 else (mean, mean)
    sign = GAP_SIGN.get(metric, 1.0)
    stated = f"the clean - corrupted gap in {metric} is {signed(mean)}, " + (
        f"95% interval [{signed(lo)}, {signed(hi)}]" if gap.size > 1 else "one example, so no interval"
    )
    after = "so normalised effects (shares of that gap) are not meaningful; changes in " + metric + " are shown instead"
    problem = None
    if sign * mean <= 0:
        worse = "lower" if sign > 0 else "higher"
        problem = (
            f"{stated}: the clean run scores {worse} than the corrupted one (clean {cl.mean():.3f}, corrupted "
            f"{co.mean():.3f}), the wrong way round for this task: the model does not do it, {after}"
        )
    elif lo <= 0 <= hi:
        problem = (
            f"{stated}, which includes 0: the model barely tells the clean prompts from the corrupted ones, {after}"
        )
    return {
        "mean": mean,
        "low": float(lo),
        "high": float(hi),
        "expected": "clean > corrupted" if sign > 0 else "clean < corrupted",
        "meaningful": problem is None,
        "problem": problem,
    }


def induction_task(model, n_examples: int = 10, seq_len: int = 50, seed: int = 0, metric: str = "logit_diff"):
    """The built-in induction task: clean ``[BOS] r r``, corrupted ``[BOS] r' r`` (see the module docstring).

    >>> t = induction_task(model, n_examples=3, seq_len=6)
    >>> t.clean.shape, bool((t.clean[:, 7:] == t.corrupt[:, 7:]).all()), bool((t.clean[:, 1:7] != t.corrupt[:, 1:7]).all())
    (torch.Size([3, 13]), True, True)
    >>> t.positions[0].tolist(), bool((t.answer == t.clean.gather(1, t.positions + 1)).all())
    ([7, 8, 9, 10, 11], True)
    """
    m = as_model(model)
    if whole_number("n_examples", n_examples) < 1:
        raise BadInput(f"n_examples (--examples) must be at least 1 (got {n_examples})", hint="the default is 10")
    rt = repeated_tokens(m, seq_len=seq_len, batch=n_examples, repeats=2, seed=seed)
    lay: RepeatLayout = rt.layout
    clean = rt.tokens
    pool = ordinary_token_ids(m.tokenizer, m.cfg.d_vocab)
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    first = slice(lay.repeat_start(1), lay.repeat_start(2))
    fresh = pool[torch.randint(len(pool), (n_examples, seq_len), generator=gen)]
    same = fresh == clean[:, first]
    while same.any():  # r'[j] != r[j] everywhere (a coincidence would leave a copy in place)
        fresh[same] = pool[torch.randint(len(pool), (int(same.sum()),), generator=gen)]
        same = fresh == clean[:, first]
    corrupt = clean.clone()
    corrupt[:, first] = fresh
    pos = torch.as_tensor(later_repeat_targets(lay), dtype=torch.long).expand(n_examples, -1).clone()
    return CircuitTask(
        name="induction",
        clean=clean,
        corrupt=corrupt,
        positions=pos,
        answer=clean.gather(1, pos + 1),
        wrong=corrupt.gather(1, pos + 1 - seq_len),
        counted=torch.ones_like(pos, dtype=torch.bool),
        metric=metric,
        corruption="the first repeat replaced by fresh random tokens (each differs from the clean one): "
        "the second repeat is a copy of nothing",
        seed=seed,
        notes=[f"{n_examples} sequences of [first token] + 2 x {seq_len} random tokens, seed {seed}"],
    )


def _one_token(tok, text: str, what: str, line: int) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        alt = tok(" " + text, add_special_tokens=False)["input_ids"] if not text.startswith(" ") else []
        tip = f"; {' ' + text!r} is one token" if len(alt) == 1 else ""
        raise BadInput(
            f"line {line}: {what} {text!r} is {len(ids)} tokens, not one{tip}",
            hint="answer and wrong must each be a single token of the model's tokenizer",
        )
    return int(ids[0])


def _parse_pair(raw: str, line: int) -> dict:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"line {line} is not JSON ({exc.msg})", hint=PAIRS_FORMAT) from None
    missing = [k for k in ("clean", "corrupt", "answer", "wrong") if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise BadInput(f"line {line} lacks {', '.join(missing)}", hint=PAIRS_FORMAT)
    return obj


def read_pairs(path: str | Path) -> list[tuple[int, dict]]:
    """The pairs of a JSON Lines file as ``[(line number, pair)]``, checked without a model: the file
    is read, UTF-8, JSON, holds two pairs or more (each interval is a bootstrap over the pairs), and every
    pair has its four keys (``headscope circuit`` runs this before the model loads; :func:`load_pairs`
    runs it again and tokenizes).

    >>> read_pairs("/")
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: --pairs / is a directory, not a file
      hint: JSON Lines, one pair a line: {"clean": "...", "corrupt": "...", "answer": " Mary", "wrong": " John"}; clean and corrupt must have the same number of tokens; answer and wrong must be one token each; the metric is read at the last position
    """
    p = Path(path)
    text = read_text_file(
        p,
        "--pairs",
        directory_hint=PAIRS_FORMAT,
        missing=f"no pairs file at {p}",
        missing_hint=PAIRS_FORMAT,
        utf8_hint="give a JSON Lines file saved as UTF-8 (JSON is UTF-8 by definition)",
    )
    rows = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not rows:
        raise BadInput(f"{p} holds no pairs", hint=PAIRS_FORMAT)
    pairs = [(line, _parse_pair(raw, line)) for line, raw in rows]
    if len(pairs) < 2:
        raise BadInput(
            f"{p} holds 1 pair: every number's 95% interval is a bootstrap over the pairs, and one pair gives "
            "none (a zero-width interval from a single sample)",
            hint="intervals need at least 2 examples: add pairs to the file",
        )
    return pairs


def _read_pair(m, obj: dict, line: int) -> tuple[list[int], list[int], int, int]:
    clean = encode(m, str(obj["clean"]), number=line).ids
    corrupt = encode(m, str(obj["corrupt"]), number=line).ids
    if len(clean) != len(corrupt):
        raise BadInput(
            f"line {line}: clean is {len(clean)} tokens and corrupt {len(corrupt)}; patching needs them aligned",
            hint="reword one so both tokenise to the same number of tokens (e.g. swap a name for a one-token name)",
        )
    tok = m.tokenizer
    return (
        clean,
        corrupt,
        _one_token(tok, str(obj["answer"]), "answer", line),
        _one_token(tok, str(obj["wrong"]), "wrong", line),
    )


def load_pairs(model, path: str | Path, metric: str = "logit_diff") -> CircuitTask:
    """A task from a JSON Lines file of clean/corrupted prompt pairs (format: :data:`PAIRS_FORMAT`).

    All pairs must have the same token count (one batch); the metric is read at the last position.
    """
    m = as_model(model)
    p = Path(path)
    rows = read_pairs(p)
    pairs = [_read_pair(m, obj, line) for line, obj in rows]
    lengths = {len(c) for c, _, _, _ in pairs}
    if len(lengths) > 1:
        first = len(pairs[0][0])
        odd = [line for (line, _), (c, _, _, _) in zip(rows, pairs) if len(c) != first]
        raise BadInput(
            f"pairs differ in token count ({sorted(lengths)}); line(s) {odd[:5]} differ from line {rows[0][0]}",
            hint="every pair must tokenise to the same number of tokens so the examples share positions",
        )
    clean = torch.tensor([c for c, _, _, _ in pairs], dtype=torch.long)
    corrupt = torch.tensor([c for _, c, _, _ in pairs], dtype=torch.long)
    n = clean.shape[1]
    pos = torch.full((len(pairs), 1), n - 1, dtype=torch.long)
    return CircuitTask(
        name=p.stem,
        clean=clean,
        corrupt=corrupt,
        positions=pos,
        answer=torch.tensor([[a] for _, _, a, _ in pairs]),
        wrong=torch.tensor([[w] for _, _, _, w in pairs]),
        counted=torch.ones_like(pos, dtype=torch.bool),
        metric=metric,
        corruption=f"the user's corrupted prompts ({p.name})",
        notes=[f"{len(pairs)} pairs from {p.name}, {n} tokens each"],
    )
