"""The whole QK analysis for a few heads, as ``headscope qk`` runs it: pick, compute, explain.

:func:`pick_heads` runs a quick induction scan (no ablation) and takes the top induction and
previous-token heads; :func:`analyze_qk` computes every QK view for the chosen heads and
returns a :class:`QKAnalysis`, which writes ``qk.json``, CSVs and PNGs.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import BadInput
from ..folded_weights import head_weights
from ..head_labels import Head, head_label
from ..hooks import act_name
from ..models.inputs import model_vocab, single_tokens
from ..models.model import as_model, in_eval_mode
from ..progress import Progress
from ..results.qk_results import (
    QUICK_SCAN,
    QKAnalysis,
    QKDecomposition,
    TokenQK,
    scan_source,
)
from ..scan.induction_scan import check_scan_of
from ..settings import whole_number
from . import rotary
from .circuits import normalise, positional_qk, token_qk
from .composition import composition_by_offset, composition_scores
from .decompose import (
    DECOMPOSITION_TOLERANCE,
    DecompositionMismatch,
    capture_residual,
    decompose_qk,
    query_index,
)
from .live import as_heads, as_sequences, qk_scores

#: GiB the QK analysis may hold at once (estimated by :func:`qk_memory_bytes` before it starts); ``qk --max-memory``.
DEFAULT_QK_MEMORY_GB = 8.0
#: Rotary models: Q/K-composition into the chosen heads is computed at offsets 0 .. COMPOSITION_OFFSETS - 1.
COMPOSITION_OFFSETS = 64


def qk_memory_bytes(model, lengths: list[int], heads: list[Head] | None = None, top: int = 3) -> int:
    """Estimated peak bytes of :func:`analyze_qk` on texts of ``lengths`` tokens (first token included).

    Counts the large tensors, all growing with the text length T (8 bytes a number: the analysis
    works in float64):

    - kept for every text: the chosen heads' scores and pattern, ``2 x [n_chosen, T, T]``;
    - for one text at a time, the largest of the passes:
      the forward pass itself (logits ``[T, d_vocab]`` and one layer's scores and pattern
      ``2 x [n_heads, T, T]`` in float32), plus the decomposition's captured activations (scores
      and pattern ``2 x [n_heads, T, T]`` per layer of a chosen head; per layer up to the last
      chosen one ``resid_pre``, ``mlp_out`` ``[T, d_model]`` and ``z`` ``[T, n_heads, d_head]``),
      plus its components ``[C, T, d_model]`` (twice while they are stacked) and the query and
      key vectors ``3 x [C, T, d_head]``, with C = 4 + layer x (n_heads + 1).

    ``heads=None`` (picked later by a quick scan) assumes the worst: ``2 * top`` heads, one per
    layer, the last layer among them.
    """
    cfg = model.cfg
    L, H, D = int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_model)
    dh, V = int(cfg.d_head), int(cfg.d_vocab)
    if heads:
        n_chosen, layers, last = len(heads), len({layer for layer, _ in heads}), max(layer for layer, _ in heads)
    else:
        n_chosen, last = 2 * top, L - 1
        layers = min(n_chosen, L)
    C = 4 + last * (H + 1)
    kept = sum(2 * n_chosen * T * T * 8 for T in lengths)
    per_text = []
    for T in lengths:
        forward = T * V * 4 + 2 * H * T * T * 4
        captured = layers * 2 * H * T * T * 8 + (last + 1) * 2 * T * D * 8 + last * (T * H * dh + T * D) * 8
        components = C * T * (2 * D + 3 * dh) * 8
        per_text.append(forward + captured + components)
    return kept + max(per_text, default=0)


def check_qk_memory(model, lengths: list[int], heads: list[Head] | None, top: int, budget_gb: float | None) -> None:
    """Refuse (:class:`BadInput`) an analysis estimated above ``budget_gb``, naming the numbers and what fits."""
    if budget_gb is None:
        return
    need = qk_memory_bytes(model, lengths, heads, top)
    if need <= budget_gb * 2**30:
        return
    longest = max(lengths)
    fits = 0
    lo, hi = 2, longest  # the longest window (in tokens) that fits with the same texts
    while lo <= hi:
        mid = (lo + hi) // 2
        if qk_memory_bytes(model, [min(n, mid) for n in lengths], heads, top) <= budget_gb * 2**30:
            fits, lo = mid, mid + 1
        else:
            hi = mid - 1
    tip = f"lower --max-tokens (about {fits} fits)" if fits >= 2 else "analyse fewer texts or heads"
    raise BadInput(
        f"the QK analysis of {len(lengths)} text(s) of up to {longest} tokens would need about "
        f"{need / 2**30:.2g} GiB, more than the budget of {budget_gb:g} GiB; nothing was run",
        hint=f"{tip}, pass fewer or shorter texts, or raise --max-memory if the machine has the memory",
    )


def quick_scan(model):
    """Induction scan at a small size (:data:`QUICK_SCAN`), no ablation: enough to rank heads.

    Its scores differ from `headscope induction`'s (10 x 50), and every place that shows them says so
    (:func:`~headscope.results.qk_results.scan_source`); the full size made `headscope qk` on SmolLM2
    take 188 s instead of 51 s.
    """
    from ..scan import scan_induction

    return scan_induction(model, **QUICK_SCAN, ablate=False, sample=False, progress=False)


def pick_heads(scan, top: int = 3) -> tuple[list[tuple[int, int]], dict[str, str]]:
    """The ``top`` induction heads then the ``top`` previous-token heads, with the reason for each."""
    heads: list[Head] = []
    why: dict[str, list[str]] = {}
    for score, name in (("induction", "induction"), ("previous_token", "previous-token")):
        for rank, (l, h, v) in enumerate(scan.top_heads(score, top), 1):
            why.setdefault(head_label(l, h), []).append(f"#{rank} {name} score {v:.2f}")
            if (l, h) not in heads:
                heads.append((l, h))
    return heads, {k: "; ".join(v) for k, v in why.items()}


def model_info(model, norm: str) -> dict:
    cfg = model.cfg
    info = {
        "name": as_model(model).name,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        "d_model": cfg.d_model,
        "d_head": cfg.d_head,
        "positions": getattr(cfg, "positional_embedding_type", "standard"),
        "norm": norm,
    }
    if "about" in as_model(model).info():
        info["about"] = as_model(model).info()["about"]
    if rotary.is_rotary(model):
        info["rope_theta"] = rotary.rope_theta(model)
    return info


def token_circuits_at_used_offsets(
    model, heads: list[Head], ids: list[int], w, used: dict[str, tuple[int, float]]
) -> list[TokenQK]:
    """Each head's token QK circuit on ``ids`` at its most-used offset ``used[label] = (offset, share)`` (rotary)."""
    E = normalise(w.W_E, w.norm, float(getattr(model.cfg, "eps", 1e-5))).float()
    return [
        token_qk(
            model,
            lh,
            ids,
            weights=w,
            normalised_embeddings=E,
            offset=used[head_label(*lh)][0],
            offset_reason=f"the offset this head gives the most attention on the analysed texts, "
            f"{used[head_label(*lh)][1]:.0%} of its attention to keys other than the first token",
        )
        for lh in heads
    ]


@torch.no_grad()
def _decompositions(model, chosen, seqs, query, w, step, skipped: list[dict]):
    """Each chosen head's QK decomposition on each sequence, and the normalised residual entering each
    chosen layer (the sample the rotary positional circuit reads). A decomposition that does not
    reproduce the model's scores (:class:`DecompositionMismatch`) is left out and recorded in ``skipped``."""
    decs: list[QKDecomposition] = []
    resid: dict[int, list[torch.Tensor]] = {}
    max_layer = max(layer for layer, _ in chosen)
    for s, seq in enumerate(seqs):
        step("decompositions", s, len(seqs))
        acts = capture_residual(model, seq, max_layer, score_layers={layer for layer, _ in chosen})
        for layer, h in chosen:
            try:
                # where it attends: the induction or previous-token stripe, whichever holds more of its attention
                dec = decompose_qk(model, (layer, h), seq, query=query, weights=w, acts=acts, stripe="attended")
            except DecompositionMismatch as e:
                skipped.append(
                    {
                        "head": head_label(layer, h),
                        "sequence": s,
                        "max_abs_error": e.error,
                        "tolerance": DECOMPOSITION_TOLERANCE,
                        "reason": e.message,
                        "hint": e.hint,
                    }
                )
                continue
            dec.sequence_index = s
            decs.append(dec)
        for layer in {layer for layer, _ in chosen}:  # residual sample for the rotary positional circuit
            x = acts[act_name("resid_pre", layer)][1:]
            resid.setdefault(layer, []).append(normalise(x, w.norm, float(getattr(model.cfg, "eps", 1e-5))))
    return decs, resid


def _skipped_note(model, skipped: list[dict], total: int) -> list[str]:
    """The one note saying which decompositions were left out (they did not reproduce the model's scores)."""
    if not skipped:
        return []
    worst = max(skipped, key=lambda d: d["max_abs_error"])
    heads_left = sorted({d["head"] for d in skipped}, key=lambda x: [int(n) for n in x[1:].split("H")])
    return [
        f"{model.cfg.architecture}: QK decompositions not shown for {len(skipped)} of {total} (head, text) pairs "
        f"({', '.join(heads_left)}): they do not reproduce the model's own scores (largest difference "
        f"{worst['max_abs_error']:.3g}); {worst['hint']}"
    ]


@in_eval_mode
def analyze_qk(
    model,
    texts=None,
    heads=None,
    *,
    top: int = 3,
    tokens: list[str] | None = None,
    query: int | None = None,
    max_tokens: int | None = 64,
    scan=None,
    progress: Progress | None = None,
    max_memory_gb: float | None = DEFAULT_QK_MEMORY_GB,
) -> QKAnalysis:
    """Run every QK view for ``heads`` (or the top ``top`` induction + previous-token heads).

    ``texts``: strings (None: the built-in samples). ``tokens``: the token set for the token
    circuit (each a single token; default: the distinct tokens of the first text, at most 40).
    ``query``: explain this query position (default: the induction stripe). ``scan``: an
    existing :class:`~headscope.InductionResult` to pick heads from, else a quick scan runs.
    ``max_memory_gb``: refuse (:class:`~headscope.errors.BadInput`) before any forward pass when
    :func:`qk_memory_bytes` estimates more (None: no limit).
    """
    model = as_model(model)
    step = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    seqs = as_sequences(model, texts, max_tokens)
    if query is not None:  # checked on every text now, not after the scan and the live scores
        query = whole_number("query", query)
        for s in seqs:
            query_index(query, len(s))
    chosen = as_heads(model, heads) if heads else None
    token_ids = single_tokens(model.tokenizer, tokens, d_vocab=model_vocab(model)) if tokens else None
    check_qk_memory(model, [len(s) for s in seqs], chosen, top, max_memory_gb)
    notes = [n for s in seqs for n in s.notes]
    step("quick induction scan", 0, 1)
    given_scan = scan is not None
    scan = check_scan_of(model, scan) if given_scan else quick_scan(model)
    timings["scan_s"] = time.perf_counter() - t
    scan_from = scan_source(scan.settings) if given_scan else scan_source()
    if chosen is None:
        chosen, reasons = pick_heads(scan, top)
        notes.append(f"heads picked by {scan_from}: the top {top} induction and top {top} previous-token heads")
    else:
        reasons = {}
    w = head_weights(model)
    t = time.perf_counter()
    step("live scores", 0, len(seqs))
    live = qk_scores(model, chosen, seqs)
    timings["live_s"] = time.perf_counter() - t
    t = time.perf_counter()
    skipped: list[dict] = []
    decs, resid = _decompositions(model, chosen, seqs, query, w, step, skipped)
    notes += _skipped_note(model, skipped, len(chosen) * len(seqs))
    timings["decompose_s"] = time.perf_counter() - t
    t = time.perf_counter()
    step("weights: positional and token circuits", 0, 1)
    positional = positional_qk(model, chosen, weights=w, residuals={k: torch.cat(v) for k, v in resid.items()})
    first = 1 if model.first_token.id is not None else 0
    ids = token_ids or list(dict.fromkeys(seqs[0].ids[first:]))[:40]
    used = {head_label(*lh): live.used_offset(lh, skip_first=first == 1) for lh in chosen}
    circuits = token_circuits_at_used_offsets(model, chosen, ids, w, used)
    timings["circuits_s"] = time.perf_counter() - t
    t = time.perf_counter()
    comp = composition_scores(model, weights=w, progress=lambda d, n: step("composition scores", d, n))
    by_offset = (
        composition_by_offset(model, chosen, range(COMPOSITION_OFFSETS), weights=w) if comp.offset == 0 else None
    )
    timings["composition_s"] = time.perf_counter() - t
    return QKAnalysis(
        model=model_info(model, w.norm),
        heads=chosen,
        reasons=reasons,
        live=live,
        decompositions=decs,
        skipped_decompositions=skipped,
        positional=positional,
        token_circuits=circuits,
        composition=comp,
        composition_by_offset=by_offset,
        used_offsets=used if rotary.is_rotary(model) else {},
        scan_scores={k: np.asarray(v) for k, v in scan.scores.items()},
        scan_from=scan_from,
        notes=notes,
        timings=timings,
    )
