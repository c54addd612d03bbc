"""The induction scan: every head scored in one forward pass per batch chunk, then checked causally.

Hooks on ``blocks.{l}.attn.hook_pattern`` reduce each layer's pattern to per-head sums the
moment it is computed (induction, prefix-matching, previous-token, duplicate-token), so no
activation cache is kept and only one layer's pattern is alive at a time. The per-position
loss comes from the same pass's logits. Copying scores come from the weights.
The causal check mean- (or zero-) ablates the top induction heads' ``hook_z`` and measures
the rise in the later-repeat loss.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ..errors import BadInput
from ..weights import head_weights
from . import scores as S
from ._progress import Progress
from .attention import attention_sample
from .copying import copying_scores
from .result import DEFAULT_THRESHOLDS, InductionResult
from .sequences import RepeatedTokens, RepeatLayout, repeated_tokens

DEFAULT_MEMORY_GB = 2.0


def chunk_size_for(n_tokens: int, n_heads: int, d_vocab: int, batch: int, max_memory_gb: float) -> int:
    """Sequences per forward pass so that one layer's attention and the logits fit the budget.

    Per sequence: eager attention holds scores and pattern (plus softmax scratch), about
    3 x heads x n^2 floats for the layer being computed, and the logits n x vocab floats.
    """
    per_seq = 4 * (3 * n_heads * n_tokens**2 + 2 * n_tokens * d_vocab)
    return max(1, min(batch, int(max_memory_gb * 2**30 // per_seq)))


def _token_losses(logits: torch.Tensor, tokens: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
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


@torch.no_grad()
def score_pass(model, rt: RepeatedTokens, chunk: int, progress: Progress | None = None, keep_z_mean: bool = False):
    """One forward pass per chunk; returns (score means [L,H] dict, per-position loss [n-1], z mean)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    layout = rt.layout
    sums = {name: torch.zeros(L, H) for name in S.ATTENTION_SCORES}
    counts = dict.fromkeys(S.ATTENTION_SCORES, 0)
    loss_sum = torch.zeros(layout.n_tokens - 1)
    z_sum: torch.Tensor | None = None
    z_count = 0
    state: dict = {}

    def on_pattern(pattern, hook):
        layer = int(hook.name.split(".")[1])
        for name, (s, c) in (
            ("induction", S.induction_sum(pattern, layout)),
            ("previous_token", S.previous_token_sum(pattern, layout)),
            ("duplicate_token", S.duplicate_token_sum(pattern, layout)),
            ("prefix_matching", S.prefix_matching_sum(pattern, state["mask"], layout)),
        ):
            sums[name][layer] += s.cpu()
            if layer == 0:
                counts[name] += c

    def on_z(z, hook):
        nonlocal z_sum
        layer = int(hook.name.split(".")[1])
        if z_sum is None:
            z_sum = torch.zeros(L, H, z.shape[-1])
        z_sum[layer] += z.float().sum(dim=(0, 1)).cpu()

    hooks: list[tuple[str | Callable, Callable]] = [(f"blocks.{l}.attn.hook_pattern", on_pattern) for l in range(L)]
    if keep_z_mean:
        hooks += [(f"blocks.{l}.attn.hook_z", on_z) for l in range(L)]
    device = cfg.device
    for start in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[start: start + chunk].to(device)
        state["mask"] = S.prefix_mask(tokens, layout).float()  # cast once per chunk, not per layer
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        loss_sum += _token_losses(logits, tokens).sum(0).cpu()
        z_count += tokens.shape[0] * tokens.shape[1]
        del logits
        if progress:
            progress.advance("scoring", tokens.shape[0])
    means = {name: (sums[name] / counts[name]).numpy() for name in S.ATTENTION_SCORES}
    z_mean = None if z_sum is None else z_sum / z_count
    return means, loss_sum / rt.tokens.shape[0], z_mean


@torch.no_grad()
def ablated_later_loss(model, rt: RepeatedTokens, heads: list[tuple[int, int]], chunk: int,
                       z_mean: torch.Tensor | None) -> float:
    """Later-repeat loss with ``heads``' outputs replaced by their mean (or zero if ``z_mean`` is None)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(z, hook):
        layer = int(hook.name.split(".")[1])
        z = z.clone()
        for head in by_layer[layer]:
            z[:, :, head, :] = 0.0 if z_mean is None else z_mean[layer, head].to(z.device, z.dtype)
        return z

    hooks = [(f"blocks.{layer}.attn.hook_z", ablate) for layer in by_layer]
    total = 0.0
    for start in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[start: start + chunk].to(model.cfg.device)
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        total += later_repeat_mean(_token_losses(logits, tokens), rt.layout).sum().item()
        del logits
    return total / rt.tokens.shape[0]


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
    layer's attention pattern in a hook. Returns an :class:`InductionResult` with the
    scores (``[n_layers, n_heads]`` each; definitions in ``headscope.scan.scores.DEFINITIONS``),
    the per-position loss, and, if ``ablate``, the causal check: the rise in later-repeat
    loss when each of the ``top_k`` induction heads, then all of them, then ``top_k`` other
    heads at random (a control) are ``ablation``-ablated ("mean": the head's ``hook_z``
    replaced by its mean over all sequences and positions of the clean run; "zero").

    >>> import headscope
    >>> model = headscope.load_model("smollm2-135m")        # doctest: +SKIP
    >>> res = headscope.scan_induction(model)               # doctest: +SKIP
    >>> res.top_heads("induction", 3)                       # doctest: +SKIP
    [(L, H, score), ...]
    >>> res.to_frame().sort_values("induction").tail()      # doctest: +SKIP
    """
    if ablation not in ("mean", "zero"):
        raise BadInput(f"unknown ablation {ablation!r}", hint="use 'mean' or 'zero'")
    if top_k < 1:
        raise BadInput(f"--top must be at least 1 (got {top_k})")
    cfg = model.cfg
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=repeats, seed=seed)
    layout = rt.layout
    budget = DEFAULT_MEMORY_GB if max_memory_gb is None else max_memory_gb
    chunk = chunk_size or chunk_size_for(layout.n_tokens, cfg.n_heads, cfg.d_vocab, batch, budget)
    top_k = min(top_k, cfg.n_layers * cfg.n_heads)
    n_ablations = (top_k + 2) if ablate else 0
    timings: dict[str, float] = {}
    prog = Progress(progress)
    with prog.running():
        prog.task("scoring", batch)
        t0 = time.perf_counter()
        means, per_pos, z_mean = score_pass(model, rt, chunk, prog, keep_z_mean=ablate and ablation == "mean")
        timings["scan_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        means["copying"] = copying_scores(head_weights(model)).numpy()
        timings["copying_s"] = time.perf_counter() - t0
        result_scores = {k: np.asarray(v, dtype=np.float64) for k, v in means.items()}
        induction = result_scores["induction"]
        order = np.argsort(-induction, axis=None)[:top_k]
        top = [(int(i // cfg.n_heads), int(i % cfg.n_heads)) for i in order]
        clean_later = float(later_repeat_mean(per_pos, layout))
        ablations: list[dict] = []
        if ablate:
            prog.task("ablating", n_ablations)
            t0 = time.perf_counter()
            zm = z_mean if ablation == "mean" else None
            others = [h for h in ((l, hh) for l in range(cfg.n_layers) for hh in range(cfg.n_heads)) if h not in top]
            gen = np.random.default_rng(seed)
            control = [others[i] for i in sorted(gen.choice(len(others), size=min(top_k, len(others)), replace=False))]
            plan = [("head", [h]) for h in top] + [("all_top", top), ("control", control)]
            for kind, heads in plan:
                loss = ablated_later_loss(model, rt, heads, chunk, zm)
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
            m = min(seq_len, 20)
            r = rt.tokens[0, layout.offset: layout.offset + m]
            parts = ([rt.tokens[0, :1]] if layout.bos else []) + [r, r]
            show = top[: min(top_k, 6)]
            samples.append(attention_sample(
                model, torch.cat(parts)[None], show, "Top induction heads on a repeated random sequence",
                note=f"first {m} tokens of sequence 0, repeated twice"))

    src = getattr(model, "headscope_source", None)
    return InductionResult(
        model={"name": getattr(src, "name", getattr(cfg, "model_name", "model")), "n_layers": cfg.n_layers,
               "n_heads": cfg.n_heads, "n_kv_heads": int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
               "d_vocab": cfg.d_vocab},
        settings={"seq_len": seq_len, "batch": batch, "repeats": repeats, "seed": seed, "top_k": top_k,
                  "bos": layout.bos, "bos_token_id": rt.bos_token_id, "bos_source": rt.bos_source, "n_tokens": layout.n_tokens,
                  "ablation": ablation if ablate else None, "chunk_size": chunk, "max_memory_gb": budget,
                  "device": str(cfg.device)},
        scores=result_scores,
        per_position_loss=per_pos.numpy(),
        loss_first_repeat=float(first_repeat_mean(per_pos, layout)),
        loss_later_repeats=clean_later,
        ablation=ablations,
        thresholds={**DEFAULT_THRESHOLDS, **(thresholds or {})},
        samples=samples,
        timings=timings,
    )
