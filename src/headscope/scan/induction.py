"""The induction scan: every head scored in one forward pass per batch chunk, then checked causally.

Hooks on ``blocks.{l}.attn.hook_pattern`` reduce each layer's pattern to per-head sums the
moment it is computed, one reduction per attention score of the registry
(:mod:`headscope.scores`), so no activation cache is kept and only one layer's pattern is
alive at a time. The per-position loss comes from the same pass's logits. Weight scores
(copying) come from the weights, once per model. The causal check mean- (or zero-) ablates
the top induction heads' ``hook_z`` and measures the rise in the later-repeat loss.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ..errors import BadInput
from ..heads import Head
from ..heads import top_k as top_k_heads
from ..hooks import act_name
from ..models.inputs import TokenSequence
from ..models.model import HeadscopeModel, as_model
from ..scores import attention_scores, default_thresholds, pass_scores, prepare, reduce_pattern, weight_scores
from ..scores.layout import RepeatLayout
from ..tokens import token_text
from ..weights import head_weights
from ._progress import Progress
from .attention import attention_sample
from .direct import DirectPass, target_groups, unembedding
from .result import InductionResult
from .sequences import RepeatedTokens, repeated_tokens

DEFAULT_MEMORY_GB = 2.0


def chunk_size_for(n_tokens: int, n_heads: int, d_vocab: int, batch: int, max_memory_gb: float) -> int:
    """Sequences per forward pass so that one layer's attention and the logits fit the budget.

    Per sequence: eager attention holds scores and pattern (plus softmax scratch), about
    3 x heads x n^2 floats for the layer being computed, and the logits n x vocab floats.
    """
    per_seq = 4 * (3 * n_heads * n_tokens**2 + 2 * n_tokens * d_vocab)
    return max(1, min(batch, int(max_memory_gb * 2**30 // per_seq)))


def token_losses(logits: torch.Tensor, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``[batch, n-1]`` cross-entropy of predicting token p+1 at position p, in position chunks."""
    # logsumexp - gather over the contiguous vocab axis: 3x faster on CPU than cross_entropy,
    # which wants the classes on axis 1 and so walks a transposed [batch, vocab, pos] view.
    out = []
    for p in range(0, tokens.shape[1] - 1, chunk):
        lg = logits[:, p: min(p + chunk, tokens.shape[1] - 1)].float()
        tg = tokens[:, p + 1: p + 1 + lg.shape[1]]
        out.append(torch.logsumexp(lg, dim=-1) - lg.gather(-1, tg[..., None])[..., 0])
    return torch.cat(out, dim=1)


def later_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    """Mean of ``[..., n-1]`` per-position losses over targets in repeats 2..R."""
    return per_position[..., layout.later_start - 1:].mean(-1)


def first_repeat_mean(per_position: torch.Tensor, layout: RepeatLayout) -> torch.Tensor:
    start = max(layout.offset, 1)
    return per_position[..., start - 1: layout.later_start - 1].mean(-1)


def weight_score_arrays(model: HeadscopeModel) -> dict[str, np.ndarray]:
    """Every weight-based score of the registry, ``[n_layers, n_heads]`` each; computed once per model.

    Cached on the model, and on disk under ``$HEADSCOPE_CACHE/scores/`` keyed by a sha256 of the
    weights and of the registry's weight scores, so a second run on the same weights (another
    command, another day) reads them back instead of recomputing. What a score says about how it
    was computed (successor: which ordinal sets the tokenizer has) is in ``model.cache["weight_notes"]``.
    """
    cached = model.cache.get("weight_scores")
    if cached is None:
        cached, notes = _weight_scores_on_disk(model)
        model.cache["weight_scores"], model.cache["weight_notes"] = cached, notes
    return {k: v.copy() for k, v in cached.items()}


def _weight_scores_on_disk(model: HeadscopeModel) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    import hashlib
    import json

    from ..models.cache import cache_dir, write_text_atomic
    from ..models.fingerprint import weights_fingerprint

    decls = weight_scores()
    recipe = hashlib.sha256(json.dumps([[s.name, s.definition] for s in decls]).encode()).hexdigest()[:12]
    try:
        key = weights_fingerprint(model)["sha256"][:24]
    except Exception:  # a model whose weights cannot be walked: compute, do not cache on disk
        key = None
    path = cache_dir() / "scores" / f"{key}-{recipe}.json" if key else None
    if path is not None and path.is_file():
        try:
            doc = json.loads(path.read_text())
            return {k: np.asarray(v, dtype=np.float64) for k, v in doc["scores"].items()}, doc.get("notes", {})
        except (OSError, ValueError, KeyError):
            pass  # a broken cache file: recompute and replace it
    w = head_weights(model)
    scores: dict[str, np.ndarray] = {}
    notes: dict[str, dict] = {}
    for decl in decls:
        assert decl.from_weights is not None
        out = decl.from_weights(w, model)
        tensor, meta = out if isinstance(out, tuple) else (out, {})
        scores[decl.name] = tensor.detach().cpu().numpy().astype(np.float64)
        if meta:
            notes[decl.name] = meta
    if path is not None:
        try:
            write_text_atomic(path, json.dumps({"scores": {k: v.tolist() for k, v in scores.items()},
                                                "notes": notes, "model": model.name}))
        except OSError:
            pass  # an unwritable cache only costs the recomputation next time
    return scores, notes


@torch.no_grad()
def score_pass(model, rt: RepeatedTokens, chunk: int, progress: Progress | None = None, keep_z_mean: bool = False):
    """One forward pass per chunk; returns (attention score means ``{name: [L, H]}``, per-position loss [n-1], z mean)."""
    m = as_model(model)
    L, H = m.n_layers, m.n_heads
    layout = rt.layout
    scores = attention_scores()
    sums = {s.name: torch.zeros(L, H) for s in scores}
    counts = dict.fromkeys(sums, 0)
    # direct logit effects (scores with from_pass): reduced in the same pass by DirectPass's hooks
    direct = {s.from_pass for s in pass_scores()}
    if direct:
        w = head_weights(m)
        ue = unembedding(m, w)
        groups = dict(zip(("direct_logit_first", "direct_logit_later"), target_groups(layout)))
        direct_sums = {k: np.zeros((L, H)) for k in groups if k in direct}
        direct_counts = dict.fromkeys(direct_sums, 0)
    loss_sum = torch.zeros(layout.n_tokens - 1)
    z_sum: torch.Tensor | None = None
    z_count = 0
    prepared: dict[str, torch.Tensor | None] = {}

    def on_pattern(layer: int) -> Callable:
        def hook(pattern, hook):
            for s in scores:
                total, count = reduce_pattern(s.reads, pattern, layout, prepared[s.name])
                sums[s.name][layer] += total.cpu()
                if layer == 0:
                    counts[s.name] += count
        return hook

    def on_z(layer: int) -> Callable:
        def hook(z, hook):
            nonlocal z_sum
            if z_sum is None:
                z_sum = torch.zeros(L, H, z.shape[-1])
            z_sum[layer] += z.float().sum(dim=(0, 1)).cpu()
        return hook

    hooks = [(act_name("pattern", layer), on_pattern(layer)) for layer in range(L)]
    if keep_z_mean:
        hooks += [(act_name("z", layer), on_z(layer)) for layer in range(L)]
    for start in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[start: start + chunk].to(m.device)
        for s in scores:
            prepared[s.name] = prepare(s.reads, tokens, layout) if s.reads is not None else None
        run = DirectPass(m, tokens, w, ue, head_dtype=torch.float32) if direct else None
        logits = m.run_with_hooks(tokens, fwd_hooks=hooks + (run.hooks if run else []))
        loss_sum += token_losses(logits, tokens).sum(0).cpu()
        if run is not None:
            heads = run.finish(logits).heads  # [B, P, L, H]
            for name in direct_sums:
                sel = heads[:, groups[name]]
                direct_sums[name] += sel.sum((0, 1))
                direct_counts[name] += sel.shape[0] * sel.shape[1]
        z_count += tokens.shape[0] * tokens.shape[1]
        del logits
        if progress:
            progress.advance("scoring", tokens.shape[0])
    means = {name: (sums[name] / counts[name]).numpy() for name in sums}
    if direct:
        means.update({name: direct_sums[name] / max(direct_counts[name], 1) for name in direct_sums})
    z_mean = None if z_sum is None else z_sum / z_count
    return means, loss_sum / rt.tokens.shape[0], z_mean


@torch.no_grad()
def ablated_later_loss(model, rt: RepeatedTokens, heads: list[Head], chunk: int,
                       z_mean: torch.Tensor | None) -> float:
    """Later-repeat loss with ``heads``' outputs replaced by their mean (or zero if ``z_mean`` is None)."""
    m = as_model(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(layer: int) -> Callable:
        def hook(z, hook):
            z = z.clone()
            for head in by_layer[layer]:
                z[:, :, head, :] = 0.0 if z_mean is None else z_mean[layer, head].to(z.device, z.dtype)
            return z
        return hook

    hooks = [(act_name("z", layer), ablate(layer)) for layer in by_layer]
    total = 0.0
    for start in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[start: start + chunk].to(m.device)
        logits = m.run_with_hooks(tokens, fwd_hooks=hooks)
        total += later_repeat_mean(token_losses(logits, tokens), rt.layout).sum().item()
        del logits
    return total / rt.tokens.shape[0]


def control_heads(n_layers: int, n_heads: int, top: list[Head], seed: int) -> list[Head]:
    """As many heads as ``top``, drawn at random (seeded) from the others: the ablation's control."""
    others = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in top]
    gen = np.random.default_rng(seed)
    return [others[i] for i in sorted(gen.choice(len(others), size=min(len(top), len(others)), replace=False))]


def clamp_top(top_k: int, n_heads_total: int, ablate: bool) -> tuple[int, list[str]]:
    """``top_k`` cut to what the model has, and a note saying so if it was cut.

    With the causal check at least one head is left out of the top set, so the random control
    (drawn from the other heads) is never empty.
    """
    most = n_heads_total - 1 if ablate and n_heads_total > 1 else n_heads_total
    if top_k <= most:
        return top_k, []
    why = " (one left over for the random control of the causal check)" if most < n_heads_total else ""
    return most, [f"--top {top_k} is more than this model's {n_heads_total} heads: using the top {most}{why}"]


def scan_induction(
    model,
    *,
    seq_len: int = 50,
    batch: int = 10,
    repeats: int = 2,
    seed: int = 0,
    top_k: int = 5,
    ablate: bool = True,
    ablation: str = "mean",
    thresholds: dict[str, float] | None = None,
    max_memory_gb: float | None = None,
    chunk_size: int | None = None,
    sample: bool = True,
    progress: bool | None = None,
) -> InductionResult:
    """Score every head of ``model`` as an induction head on repeated random tokens.

    Runs ``batch`` sequences ``[BOS] + r * repeats`` (``r``: ``seq_len`` random ordinary
    tokens, seeded) through the model in chunks, one forward pass each, reducing every
    layer's attention pattern in a hook. Returns an :class:`InductionResult` with every score
    of the registry (``[n_layers, n_heads]`` each; definitions in ``headscope.scores.SCORES``),
    the per-position loss, and, if ``ablate``, the causal check: the rise in later-repeat
    loss when each of the ``top_k`` induction heads, then all of them, then ``top_k`` other
    heads at random (a control) are ``ablation``-ablated ("mean": the head's ``hook_z``
    replaced by its mean over all sequences and positions of the clean run; "zero").

    >>> res = scan_induction(model, seq_len=8, batch=2, top_k=2, sample=False, progress=False)
    >>> len(res.top_heads("induction", 2)), list(res.scores)[:2], len(res.ablation)
    (2, ['induction', 'prefix_matching'], 4)
    """
    m = as_model(model)
    if ablation not in ("mean", "zero"):
        raise BadInput(f"unknown ablation {ablation!r}", hint="use 'mean' or 'zero'")
    if top_k < 1:
        raise BadInput(f"--top must be at least 1 (got {top_k})")
    cfg = m.cfg
    rt = repeated_tokens(m, seq_len=seq_len, batch=batch, repeats=repeats, seed=seed)
    layout = rt.layout
    budget = DEFAULT_MEMORY_GB if max_memory_gb is None else max_memory_gb
    chunk = chunk_size or chunk_size_for(layout.n_tokens, cfg.n_heads, cfg.d_vocab, batch, budget)
    top_k, notes = clamp_top(top_k, m.n_layers * m.n_heads, ablate)
    timings: dict[str, float] = {}
    prog = Progress(progress)
    with prog.running():
        prog.task("scoring", batch)
        t0 = time.perf_counter()
        means, per_pos, z_mean = score_pass(m, rt, chunk, prog, keep_z_mean=ablate and ablation == "mean")
        timings["scan_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        means.update(weight_score_arrays(m))
        timings["copying_s"] = time.perf_counter() - t0
        result_scores = {k: np.asarray(v, dtype=np.float64) for k, v in means.items()}
        top = [(l, h) for l, h, _ in top_k_heads(result_scores["induction"], top_k)]
        clean_later = float(later_repeat_mean(per_pos, layout))
        ablations: list[dict] = []
        if ablate:
            plan = [("head", [h]) for h in top] + [("all_top", top),
                                                   ("control", control_heads(m.n_layers, m.n_heads, top, seed))]
            prog.task("ablating", len(plan))
            t0 = time.perf_counter()
            zm = z_mean if ablation == "mean" else None
            for kind, heads in plan:
                loss = ablated_later_loss(m, rt, heads, chunk, zm)
                entry = {"kind": kind, "heads": [list(h) for h in heads], "loss": loss, "loss_increase": loss - clean_later}
                if kind == "head":
                    entry.update(layer=heads[0][0], head=heads[0][1])
                else:
                    entry.update(layer=None, head=None)
                ablations.append(entry)
                prog.advance("ablating")
            timings["ablation_s"] = time.perf_counter() - t0
        samples = []
        if sample:
            samples.append(repeated_sample(m, rt, top[: min(top_k, 6)]))

    return InductionResult(
        model=m.info(),
        settings={"seq_len": seq_len, "batch": batch, "repeats": repeats, "seed": seed, "top_k": top_k,
                  "bos": layout.bos, "bos_token_id": rt.bos_token_id, "bos_source": rt.bos_source, "n_tokens": layout.n_tokens,
                  "ablation": ablation if ablate else None, "chunk_size": chunk, "max_memory_gb": budget,
                  "device": str(cfg.device), "weight_scores": m.cache.get("weight_notes", {})},
        scores=result_scores,
        per_position_loss=per_pos.numpy(),
        loss_first_repeat=float(first_repeat_mean(per_pos, layout)),
        loss_later_repeats=clean_later,
        ablation=ablations,
        thresholds={**default_thresholds(), **(thresholds or {})},
        samples=samples,
        timings=timings,
        notes=notes,
    )


def repeated_sample(model: HeadscopeModel, rt: RepeatedTokens, heads: list[Head]):
    """The heads' attention on the first 20 tokens of sequence 0, repeated twice (a picture of the stripe)."""
    layout = rt.layout
    m_tokens = min(layout.seq_len, 20)
    r = rt.tokens[0, layout.offset: layout.offset + m_tokens]
    ids = torch.cat(([rt.tokens[0, :1]] if layout.bos else []) + [r, r]).tolist()
    seq = TokenSequence(text="", ids=ids, labels=[token_text(model.tokenizer, i) for i in ids])
    return attention_sample(model, seq, heads, "Top induction heads on a repeated random sequence",
                            note=f"first {m_tokens} tokens of sequence 0, repeated twice")
