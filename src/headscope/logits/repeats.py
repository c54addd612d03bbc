"""Direct logit effects on repeated random tokens: does a head raise the copied token's logit itself?

On ``[BOS] + r * repeats`` (the induction scan's sequences, :mod:`headscope.scan.sequences`)
every position is scored on its actual next token. Targets in repeat 1 are unpredictable;
targets in repeats 2..R (but the first token of repeat 2, which follows the end of repeat 1,
a pair seen nowhere before) are copies an induction mechanism can predict. A head whose mean
direct effect rises from the first to the later repeats writes the copied token's logit
*directly*; an induction head with a small direct effect (but a large ablation cost) works
through heads after it. Targets are grouped as the scan's loss groups them
(:func:`headscope.scores.layout.first_repeat_targets` / ``later_repeat_targets``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..folded_weights import head_weights
from ..models.model import as_model
from ..results.logit_results import RepeatLogitEffects
from ..scan.direct import DirectPass, target_groups, unembedding
from ..scan.induction_scan import DEFAULT_MEMORY_GB, chunk_size_for
from ..scan.sequences import RepeatedTokens, repeated_tokens


@torch.no_grad()
def repeat_logit_effects(
    model,
    *,
    seq_len: int = 50,
    batch: int = 10,
    repeats: int = 2,
    seed: int = 0,
    tokens: RepeatedTokens | None = None,
    chunk_size: int | None = None,
    max_memory_gb: float | None = None,
) -> RepeatLogitEffects:
    """Every head's mean direct effect on first-repeat and later-repeat targets, one pass per chunk.

    ``tokens``: sequences from :func:`headscope.scan.sequences.repeated_tokens` (pass the
    scan's own to score the same sequences); otherwise drawn here with the same arguments,
    which (same seed) gives the scan's sequences. Returns ``first``/``later`` ``[L, H]``.

    >>> import headscope
    >>> res = headscope.logits.repeat_logit_effects(model, seq_len=8, batch=2)
    >>> res.first.shape == res.later.shape == (model.cfg.n_layers, model.cfg.n_heads)
    True
    >>> res.max_abs_error < 1e-4
    True
    """
    rt = tokens or repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=repeats, seed=seed)
    layout = rt.layout
    cfg = model.cfg
    n_seq = rt.tokens.shape[0]
    budget = DEFAULT_MEMORY_GB if max_memory_gb is None else max_memory_gb
    chunk = chunk_size or chunk_size_for(layout.n_tokens, cfg.n_heads, cfg.d_vocab, n_seq, budget)
    w = head_weights(model)
    ue = unembedding(model, w)
    first, later = target_groups(layout)
    sums: dict[str, dict] = {"first": {}, "later": {}}
    max_err = 0.0
    t0 = time.perf_counter()
    for start in range(0, n_seq, chunk):
        run = DirectPass(model, rt.tokens[start : start + chunk], w, ue)
        d = run.finish(model.run_with_hooks(run.tokens, fwd_hooks=run.hooks))
        max_err = max(max_err, float(np.abs(d.logit - d.model_logit).max()))
        for group, sl in (("first", first), ("later", later)):
            s = sums[group]
            s["heads"] = s.get("heads", 0) + d.heads[:, sl].sum((0, 1))
            s["logit"] = s.get("logit", 0) + d.model_logit[:, sl].sum()
            for name, v in d.components.items():
                s[name] = s.get(name, 0) + v[:, sl].sum()
    n_first = n_seq * len(first)
    n_later = n_seq * len(later)
    comps = [k for k in sums["first"] if k not in ("heads", "logit")]
    return RepeatLogitEffects(
        model_name=as_model(model).name,
        settings={
            "seq_len": layout.seq_len,
            "batch": n_seq,
            "repeats": layout.repeats,
            "seed": seed if tokens is None else None,
            "bos": layout.bos,
            "n_tokens": layout.n_tokens,
            "chunk_size": chunk,
        },
        first=sums["first"]["heads"] / n_first,
        later=sums["later"]["heads"] / n_later,
        components_first={k: float(sums["first"][k] / n_first) for k in comps},
        components_later={k: float(sums["later"][k] / n_later) for k in comps},
        logit_first=float(sums["first"]["logit"] / n_first),
        logit_later=float(sums["later"]["logit"] / n_later),
        n_first=n_first,
        n_later=n_later,
        max_abs_error=max_err,
        timings={"pass_s": time.perf_counter() - t0},
    )
