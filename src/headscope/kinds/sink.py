"""Attention sinks: how much of a head's attention lands on the first token.

Gu et al. 2024 ("When Attention Sink Emerges in Language Models: An Empirical View", arXiv
2410.10781; reference code sail-sg/Attention-Sink ``eval_sink_open_source.py``) define, for
key position k (1-based) of one sequence of T tokens,

    alpha_k = 1/(T - k + 1) * sum_{i=k..T} A[i, k]

i.e. the mean over *every* query that can see key k, the key's own query included. For the
first token that is the mean over all T queries, and query 1 (the first token itself) always
puts 1.0 there. A head is a sink head on that sequence when ``alpha_1 > epsilon`` with
epsilon = 0.3; the paper's metric ``Sink_1^epsilon`` is the fraction of (sequence, layer,
head) triples above the threshold (their code thresholds each sequence, then averages), on
T = 64 tokens of natural text. Their tokenizer call adds the model's BOS where it has one
(Llama) and not where it has none (GPT-2), so "first token" is whatever comes first.

headscope takes the role from that setting (issue 19.5): the registry's ``attention_sink``
declaration reads the first-token column of every query (alpha_1) on 100 windows of 64 tokens of
CPython's ``pydoc_data.topics`` (or the user's files), with only the prefix the model's *own*
tokenizer adds (SmolLM2 and GPT-2 add none, so their first token is a text token; Llama adds
BOS). Per head:

* ``alpha`` -- mean over windows of alpha_1: the role's score (``attention_sink``, threshold 0.3);
* ``sink_rate`` -- the fraction of windows on which ``alpha_1 > 0.3``; its mean over heads is the
  paper's ``Sink_1^0.3`` (:attr:`SinkScores.model_sink_rate`), reported beside the role with the
  fraction of heads whose mean alpha_1 exceeds 0.3 (:attr:`SinkScores.sink_head_fraction`);
* ``sink`` -- the mean over the queries *after* the first only (query 0 can only attend to
  itself): ``alpha_1 = (1 + (T-1) * sink) / T`` on each window.

The random-token reading (attention to position 0 of the scan's repeated random tokens, a
special token first) is the registry's ``first_token_random``: no role.

The windows are cut once per model and the scores are kept on disk under
``$HEADSCOPE_CACHE/scores/`` keyed by the weights' sha256, the windows' tokens and the
declaration, so a second ``headscope heads`` on the same model reads them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time

import numpy as np
import torch

from ..models.model import in_eval_mode
from ..results.sink_scores import DEFINITIONS, SinkScores
from ..scores import score as declared
from ..scores.layout import RepeatLayout
from ..scores.reads import Column, column_sum, on_natural_text, reduce_pattern, reduce_qk

__all__ = [
    "DEFINITIONS",
    "SINK_THRESHOLD",
    "SinkScores",
    "first_token_alpha",
    "first_token_sum",
    "paper_windows",
    "sink_rate_sum",
    "sink_scores_on_text",
]

#: Gu et al.'s threshold, declared once in the registry (the attention_sink role).
SINK_THRESHOLD = float(declared("attention_sink").threshold or 0.3)
#: Gu et al.'s setting: windows of 64 tokens, 100 of them.
SINK_TOKENS, SINK_WINDOWS = 64, 100


def first_token_sum(pattern: torch.Tensor, layout=None) -> tuple[torch.Tensor, int]:
    """Per head: sum over batch and queries 1..n-1 of ``pattern[..., q, 0]``, and the count."""
    return column_sum(pattern, 0, 1, pattern.shape[-2])  # the registry's own Column read


def first_token_alpha(pattern: torch.Tensor) -> torch.Tensor:
    """``[batch, head]`` Gu et al.'s alpha_1: mean of ``pattern[..., q, 0]`` over all queries q."""
    return pattern[..., :, 0].float().mean(-1)


def sink_rate_sum(pattern: torch.Tensor, layout=None, threshold: float = SINK_THRESHOLD) -> tuple[torch.Tensor, int]:
    """Per head: number of sequences with alpha_1 > ``threshold``, and the number of sequences."""
    alpha = first_token_alpha(pattern)
    return (alpha > threshold).float().sum(0), alpha.shape[0]


def paper_windows(model, files=None, n_tokens: int = SINK_TOKENS, n_sequences: int = SINK_WINDOWS):
    """Gu et al.'s windows: ``n_tokens`` tokens each, starting with what the model's own tokenizer adds.

    The prefix is the one the tokenizer put before text when the model was loaded (before
    TransformerLens made it prepend BOS): none for GPT-2 and SmolLM2 (the window is 64 text
    tokens), BOS for Llama. Where it was not recorded (a bare bridge), headscope's first-token
    rule stands in, and the description says so. Cut once per model and kept in ``model.cache``.
    Returns ``(TokenWindows, description of the first token)``.
    """
    from ..models.model import as_model
    from .documents import as_files, natural_windows

    m = as_model(model)
    files = as_files(files)  # one path is one file (not its characters); an empty list is refused
    prefix = m.first_token.own_prefix
    if prefix is None:
        bos, said = m.first_token.id, "headscope's first-token rule (the tokenizer's own prefix was not recorded)"
    elif prefix:
        bos, said = prefix[0], f"the tokenizer's own prefix (id {prefix[0]}), as Gu et al.'s code"
    else:
        bos, said = None, "the window's first text token: the tokenizer adds no BOS, and none is prepended (Gu et al.)"
    key = f"sink_windows:{[str(f) for f in files or ()]}:{n_tokens}:{n_sequences}:{bos}"
    windows = m.cache.get(key)
    if windows is None:
        windows = m.cache[key] = natural_windows(
            m, files, window=n_tokens - (bos is not None), max_windows=n_sequences, bos_id=bos
        )
    return windows, said


@in_eval_mode
@torch.no_grad()
def sink_scores_on_text(
    model,
    files=None,
    *,
    n_tokens: int = SINK_TOKENS,
    n_sequences: int = SINK_WINDOWS,
    threshold: float = SINK_THRESHOLD,
    chunk_size: int = 25,
    attention: str = "auto",
) -> SinkScores:
    """Sink scores of every head in Gu et al.'s setting: ``n_sequences`` windows of ``n_tokens`` tokens.

    The windows are :func:`paper_windows` of ``files`` or, by default, CPython's
    ``pydoc_data.topics`` (see :mod:`headscope.kinds.documents`). One forward pass per chunk;
    the registry's ``attention_sink`` read (the first-token column, every query) is taken per
    window in the pass, from the pattern (eager) or from q, k and the row logsumexp (fused).
    Read back from the disk cache when the same weights were scored on the same windows.
    """
    from ..models.model import as_model

    t0 = time.perf_counter()
    m = as_model(model)
    windows, said = paper_windows(m, files, n_tokens, n_sequences)
    cached = _on_disk(m, windows.tokens, threshold)
    if cached is not None and cached.exists():
        try:
            doc = json.loads(cached.read_text())
            arrays = {k: np.asarray(doc[k], dtype=np.float64) for k in ("sink", "alpha", "sink_rate")}
            return SinkScores(
                **arrays,
                threshold=threshold,
                n_sequences=int(doc["n_sequences"]),
                n_tokens=int(doc["n_tokens"]),
                source=windows.describe(),
                timings={"sink_text_s": time.perf_counter() - t0, "sink_text_cached": 1.0},
                first_token=said,
            )
        except (OSError, ValueError, KeyError):
            pass  # a broken cache file: recompute and replace it
    per_window = _alpha_per_window(m, windows.tokens, chunk_size, attention)  # [2, windows, L, H]
    alpha, after = per_window
    T = windows.tokens.shape[1]
    out = SinkScores(
        sink=after.mean(0).numpy().astype(np.float64),
        alpha=alpha.mean(0).numpy().astype(np.float64),
        sink_rate=(alpha > threshold).double().mean(0).numpy(),
        threshold=threshold,
        n_sequences=int(alpha.shape[0]),
        n_tokens=int(T),
        source=windows.describe(),
        timings={"sink_text_s": time.perf_counter() - t0},
        first_token=said,
    )
    if cached is not None:
        _write(cached, out)
    return out


def _alpha_per_window(m, tokens: torch.Tensor, chunk_size: int, attention: str) -> torch.Tensor:
    """``[2, windows, L, H]``: each window's alpha_1 (the registry's read) and its mean over queries after the first."""
    from ..hooks import act_name
    from ..scan.fused import fused_attention
    from ..scan.induction_scan import attention_route

    decl = [s for s in _natural_declarations() if s.name == "attention_sink"][0]
    after_read = Column(key=0, start=lambda lay: 1)
    L, H, T = m.n_layers, m.n_heads, tokens.shape[1]
    layout = RepeatLayout(seq_len=T, repeats=1, bos=False)  # one block: n_tokens = T, every query read
    route = attention_route(m, attention, T)
    rows: list[torch.Tensor] = []
    current = torch.zeros(2, 0, L, H)

    def per_window(read_one, layer: int, batch: int) -> None:
        for i, reads in enumerate((decl.reads, after_read)):
            for b in range(batch):
                total, count = read_one(reads, b)
                current[i, b, layer] = total.cpu() / count

    def on_pattern(layer: int):  # the layer asked for, not parsed from hook.name (an alias in compatibility mode)
        def hook(pattern, hook):
            per_window(lambda r, b: reduce_pattern(r, pattern[b : b + 1], layout), layer, pattern.shape[0])

        return hook

    def on_attention(layer, q, k, lse, scale):
        one = lambda r, b: reduce_qk(r, q[b : b + 1], k[b : b + 1], lse[b : b + 1], scale, layout)
        per_window(one, layer, q.shape[0])

    hooks = [(act_name("pattern", layer), on_pattern(layer)) for layer in range(L)] if route == "eager" else []
    for start in range(0, tokens.shape[0], chunk_size):
        chunk = tokens[start : start + chunk_size].to(m.device)
        current = torch.zeros(2, chunk.shape[0], L, H)
        routed = fused_attention(m, on_attention) if route == "fused" else contextlib.nullcontext()
        with routed:
            m.run_with_hooks(chunk, fwd_hooks=hooks, return_type=None, use_cache=False)
        rows.append(current)
    return torch.cat(rows, dim=1)


def _natural_declarations():
    from ..scores import attention_scores

    return [s for s in attention_scores() if on_natural_text(s.reads)]


def _on_disk(m, tokens: torch.Tensor, threshold: float):
    """The cache file for these weights, windows and declaration (None where the weights cannot be hashed)."""
    from ..models.cache import cache_dir
    from ..models.fingerprint import cached_fingerprint

    try:
        weights = cached_fingerprint(m)["sha256"][:24]
    except Exception:
        return None
    recipe = hashlib.sha256(
        json.dumps([[s.name, s.definition] for s in _natural_declarations()] + [threshold]).encode()
        + tokens.numpy().tobytes()
    ).hexdigest()[:12]
    return cache_dir() / "scores" / f"sinks-{weights}-{recipe}.json"


def _write(path, out: SinkScores) -> None:
    from ..atomic import write_atomic

    doc = {k: getattr(out, k).tolist() for k in ("sink", "alpha", "sink_rate")}
    try:
        write_atomic(path, json.dumps({**doc, "n_sequences": out.n_sequences, "n_tokens": out.n_tokens}), parents=True)
    except OSError:
        pass  # an unwritable cache only costs the recomputation next time
