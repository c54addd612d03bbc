"""The induction scan: every head scored in one forward pass per batch chunk, then checked causally.

Every attention score of the registry (:mod:`headscope.scores`) declares the few pattern
entries it reads, and the pass reduces them the moment a layer's attention is computed, by one
of two routes with the same numbers (within 1e-5):

- **fused** (the default wherever the model can be routed, :mod:`.fused`): attention runs in a
  fused kernel that returns the row logsumexp; the entries come from the rotated ``q``, ``k``
  and that logsumexp (``reduce_qk``). No ``n x n`` tensor exists, so memory grows linearly
  with the sequence;
- **eager**: hooks on ``blocks.{l}.attn.hook_pattern`` read the full pattern (``reduce_pattern``),
  one layer's pattern alive at a time.

The per-position loss and the direct logit effects come from the same pass. Weight scores
(copying) come from the weights, once per model. The causal check mean- (or zero-) ablates
the top induction heads' ``hook_z`` and measures the rise in the later-repeat loss; each
ablation pass restarts from the clean run's residual stream at the first ablated layer
(:mod:`.ablation`), since the layers below compute exactly what the clean run did.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, head_weights
from ..head_labels import Head
from ..head_labels import top_k as top_k_heads
from ..hooks import act_name
from ..models.embedding import weight_inputs
from ..models.fingerprint import cached_fingerprint, weights_version
from ..models.inputs import TokenSequence
from ..models.model import HeadscopeModel, as_model, in_eval_mode
from ..progress import Progress
from ..results.scan_result import InductionResult
from ..scores import (
    attention_scores,
    default_thresholds,
    pass_scores,
    prepare,
    reduce_pattern,
    reduce_qk,
    weight_scores,
)
from ..scores.layout import RepeatLayout
from ..scores.reads import PairPlan, on_natural_text, pair_plan, plan_entries, plan_sums
from ..settings import ATTENTION_MODES, ScanSettings
from ..tokens import token_text
from .ablation import Replacement, ablation_hooks, residual_hooks
from .attention_sample import attention_sample
from .causal import causal_check
from .direct import HeadDirectPass, Unembedding, unembedding
from .fused import FusedUnsupported, fused_attention, fused_chunk_size_for, fused_unsupported_reason
from .losses import (
    first_repeat_mean,
    later_repeat_mean,
    normed_output,
    normed_route_ok,
    pass_losses,
    token_losses,
)
from .sequences import RepeatedTokens, repeated_tokens


def check_scan_of(model, scan) -> InductionResult:
    """``scan`` as the induction scan of ``model``: an :class:`InductionResult` of a model of the same shape.

    An analysis that reuses a scan (``analyze_qk(scan=...)``, ``analyze_logits(scan=...)``) picks its heads
    and reads its numbers from it; a scan of another model would pick heads by another model's scores.
    """
    if not isinstance(scan, InductionResult):
        raise BadInput(
            f"scan must be an InductionResult, not {type(scan).__name__}",
            hint="pass what headscope.scan_induction(model) returned, or InductionResult.from_json(...) of its scores.json",
        )
    m = as_model(model)
    shape = {"n_layers": m.n_layers, "n_heads": m.n_heads, "d_vocab": int(m.cfg.d_vocab)}
    theirs = {k: scan.model.get(k) for k in shape}
    if theirs != shape:
        differ = ", ".join(f"{k} {theirs[k]} (the model has {v})" for k, v in shape.items() if theirs[k] != v)
        raise BadInput(
            f"the given scan is of {scan.model.get('name', 'another model')!r}, not of {m.name!r}: {differ}",
            hint="scan this model (headscope.scan_induction(model)) or leave scan=None",
        )
    return scan


def chunk_size_for(n_tokens: int, n_heads: int, d_vocab: int, batch: int, max_memory_gb: float) -> int:
    """Sequences per forward pass so that one layer's attention and the logits fit the budget.

    Per sequence: eager attention holds scores and pattern (plus softmax scratch), about
    3 x heads x n^2 floats for the layer being computed, and the logits n x vocab floats.
    """
    per_seq = 4 * (3 * n_heads * n_tokens**2 + 2 * n_tokens * d_vocab)
    return max(1, min(batch, int(max_memory_gb * 2**30 // per_seq)))


def weight_score_arrays(model: HeadscopeModel) -> dict[str, np.ndarray]:
    """Every weight-based score of the registry, ``[n_layers, n_heads]`` each; computed once per model.

    Cached on the model, and on disk under ``$HEADSCOPE_CACHE/scores/`` keyed by a sha256 of the
    weights and of the registry's weight scores, so a second run on the same weights (another
    command, another day) reads them back instead of recomputing. What a score says about how it
    was computed (successor: which ordinal sets the tokenizer has) is in ``model.cache["weight_notes"]``.
    Also recomputed when a parameter was replaced or changed in place since (its storage or its
    version counter moved), so a scan after editing the weights never shows stale scores.
    """
    version = weights_version(model)
    hit = model.cache.get("weight_scores")
    if hit is None or hit[0] != version:
        arrays, notes = _weight_scores_on_disk(model)
        hit = model.cache["weight_scores"] = (version, arrays)
        model.cache["weight_notes"] = notes
    return {k: v.copy() for k, v in hit[1].items()}


def direct_weights(model: HeadscopeModel) -> tuple[HeadWeights, Unembedding]:
    """What the direct-logit reduction reads (W_O, b_O, the unembedding), computed once per model.

    Like :func:`weight_score_arrays`, recomputed only after a weight change. Only W_O and the
    biases are kept (SmolLM2: 40 MB; the unembedding is a view of the model's own W_U): the
    reading matrices, W_E and the folded W_U that :func:`~headscope.folded_weights.head_weights` also
    builds are dropped, so they are neither recomputed per scan (0.1 s) nor held through a pass.
    """
    version = weights_version(model)
    hit = model.cache.get("direct_weights")
    if hit is None or hit[0] != version:
        w = head_weights(model)
        ue = unembedding(model, w)
        w = replace(
            w,
            W_Q=w.W_Q.new_empty(model.n_layers, model.n_heads, 0, 0),
            W_K=w.W_K.new_empty(0),
            W_V=w.W_V.new_empty(0),
            W_E=w.W_E.new_empty(0),
            W_U=w.W_U.new_empty(0),
        )  # devices kept
        hit = model.cache["direct_weights"] = (version, w, ue)
    return hit[1], hit[2]


def attention_route(model, attention: str = "auto", n_tokens: int | None = None) -> str:
    """The path a scan of ``model`` on ``n_tokens``-token sequences takes: "fused" or "eager".

    "auto": fused wherever the model's attention can be routed through a fused kernel
    (:func:`~headscope.scan.fused.fused_supported`; a sliding window shorter than the sequence
    cannot), else eager; "fused" raises :class:`~headscope.scan.fused.FusedUnsupported` with the
    reason where it cannot.
    """
    if attention not in ATTENTION_MODES:
        raise BadInput(f"unknown attention {attention!r}", hint=f"use one of: {', '.join(ATTENTION_MODES)}")
    if attention == "eager":
        return "eager"
    reason = fused_unsupported_reason(model, n_tokens)
    if reason is None:
        return "fused"
    if attention == "fused":
        raise FusedUnsupported(
            f"fused attention is not available for this model: {reason}",
            hint="use --attention auto (falls back to eager) or --attention eager",
        )
    return "eager"


@dataclass
class ScanPass:
    """What :func:`score_pass` gives: the numbers of one pass over every sequence.

    ``means[name]`` ``[n_layers, n_heads]`` for every attention score and pass score of the
    registry; ``per_position_loss`` ``[n-1]``; ``z_mean`` ``[n_layers, n_heads, d_head]`` (if
    asked); ``residuals[l]`` the clean ``blocks.{l}.hook_resid_pre`` ``[batch, n, d_model]`` for
    the layers asked (a causal check restarts there); ``attention`` the path that ran;
    ``later_by_sequence``, ``first_by_sequence`` ``[batch]`` each sequence's later- and
    first-repeat loss (the causal check's clean side, sequence by sequence).
    """

    means: dict[str, np.ndarray]
    per_position_loss: torch.Tensor
    z_mean: torch.Tensor | None
    residuals: dict[int, torch.Tensor]
    attention: str
    later_by_sequence: np.ndarray
    first_by_sequence: np.ndarray


def _weight_scores_on_disk(model: HeadscopeModel) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    import hashlib
    import json

    from ..atomic import write_atomic
    from ..models.cache import cache_dir

    decls = weight_scores()
    recipe = hashlib.sha256(json.dumps([[s.name, s.definition] for s in decls]).encode()).hexdigest()[:12]
    try:
        key = cached_fingerprint(model)["sha256"][:24]
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
    inputs = weight_inputs(model)
    scores: dict[str, np.ndarray] = {}
    notes: dict[str, dict] = {}
    for decl in decls:
        assert decl.from_weights is not None
        out = decl.from_weights(w, inputs)
        scores[decl.name] = out.values.detach().cpu().numpy().astype(np.float64)
        if out.notes:
            notes[decl.name] = out.notes
    if path is not None:
        try:
            doc = {"scores": {k: v.tolist() for k, v in scores.items()}, "notes": notes, "model": model.name}
            write_atomic(path, json.dumps(doc), parents=True)
        except OSError:
            pass  # an unwritable cache only costs the recomputation next time
    return scores, notes


class _PassScores:
    """The registry's pass scores: each head's direct logit effect (:class:`~headscope.scan.direct.HeadDirectPass`,
    hooks in the same pass) summed over the positions each score declares (``from_pass``), computed
    only at those positions."""

    def __init__(self, m: HeadscopeModel, layout: RepeatLayout):
        groups = {s.name: s.from_pass(layout) for s in pass_scores() if s.from_pass is not None}
        self.positions = np.unique(np.concatenate(list(groups.values()))) if groups else np.zeros(0, np.int64)
        self.groups = {k: np.searchsorted(self.positions, v) for k, v in groups.items()}  # rows of positions
        self.sums = {k: np.zeros((m.n_layers, m.n_heads)) for k in self.groups}
        self.counts = dict.fromkeys(self.groups, 0)
        if self.groups:
            self.w, self.ue = direct_weights(m)
            W_O = self.w.W_O  # [L, H, d_head, d_model] -> [L, H * d_head, d_model], float32, once per scan
            self.W_O = W_O.reshape(W_O.shape[0], -1, W_O.shape[-1]).to(torch.float32).contiguous()

    def start(self, tokens: torch.Tensor, keep: bool = False) -> HeadDirectPass | None:
        """The hooks of one chunk's pass (None: no pass score is declared); ``keep``: reduce after the pass."""
        return HeadDirectPass(tokens, self.w, self.ue, self.positions, self.W_O, keep) if self.groups else None

    def add(self, heads: torch.Tensor) -> None:
        """Add one chunk's direct effects ``[batch, len(positions), L, H]``."""
        for name, rows in self.groups.items():
            sel = heads[:, torch.as_tensor(rows, device=heads.device)]
            self.sums[name] += sel.sum((0, 1)).cpu().numpy()
            self.counts[name] += sel.shape[0] * sel.shape[1]

    def means(self) -> dict[str, np.ndarray]:
        return {name: self.sums[name] / max(self.counts[name], 1) for name in self.sums}


class _AttentionReads:
    """The registry's attention scores of one scan, summed on the model's device by one of three routes.

    Eager: hooks on ``hook_pattern`` (:meth:`pattern_hooks`) read each declaration from the full
    pattern. Fused: the fused kernel calls :meth:`on_attention` with each layer's ``q``, ``k`` and
    row logsumexp, read per declaration (views; least memory traffic) or, with ``together``, all
    declarations in one gather (:func:`~headscope.scores.reads.plan_entries`; fewest kernel
    launches), each layer's entries kept (layers x pairs x heads floats: 3.9 MB for SmolLM2 at
    10 x 101 tokens) and summed once per chunk by :meth:`end`. Sums stay on the device until
    :meth:`means`: no host sync per layer and score.
    """

    def __init__(self, m: HeadscopeModel, layout: RepeatLayout, route: str, together: bool | None) -> None:
        self.scores = [s for s in attention_scores() if not on_natural_text(s.reads)]  # natural text: kinds.sink
        self.layout, self.route, self.n_layers = layout, route, m.n_layers
        self.together = route == "fused" and (m.device.type != "cpu" if together is None else together)
        self.sums = torch.zeros(m.n_layers, len(self.scores), m.n_heads, device=m.device)
        self.counts = [0] * len(self.scores)
        self.prepared: list[Any] = []
        self.plan: PairPlan | None = None
        self.entries: torch.Tensor | None = None

    def start(self, tokens: torch.Tensor) -> None:
        """Prepare one chunk's reads (masks, pairs, or the one plan of every declaration)."""
        if self.together:
            self.plan = pair_plan([s.reads for s in self.scores], tokens, self.layout)  # type: ignore[misc]
            self.counts = [a + b for a, b in zip(self.counts, self.plan.counts)]
            self.entries = self.sums.new_zeros(self.n_layers, self.plan.seq.numel(), self.sums.shape[2])
        else:
            fused = self.route == "fused"
            self.prepared = [prepare(s.reads, tokens, self.layout, fused=fused) for s in self.scores]  # type: ignore[arg-type]

    def _add(self, layer: int, i: int, total: torch.Tensor, count: int) -> None:
        self.sums[layer, i] += total
        if layer == 0:
            self.counts[i] += count

    def pattern_hooks(self) -> list[tuple[str, Callable]]:
        """The eager route's hooks (none on the fused route)."""
        if self.route != "eager":
            return []

        def on_pattern(layer: int) -> Callable:
            def hook(pattern, hook):
                for i, s in enumerate(self.scores):
                    self._add(layer, i, *reduce_pattern(s.reads, pattern, self.layout, self.prepared[i]))

            return hook

        return [(act_name("pattern", layer), on_pattern(layer)) for layer in range(self.n_layers)]

    def on_attention(self, layer: int, q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float) -> None:
        if self.plan is not None:
            plan_entries(self.plan, q, k, lse, scale, out=self.entries[layer])  # type: ignore[index]
            return
        for i, s in enumerate(self.scores):
            self._add(layer, i, *reduce_qk(s.reads, q, k, lse, scale, self.layout, self.prepared[i]))  # type: ignore[arg-type]

    def end(self) -> None:
        """Add one chunk's kept entries to the sums (the together route; nothing on the others)."""
        if self.entries is not None and self.plan is not None and self.plan.counts:
            self.sums += plan_sums(self.entries, self.plan)
        self.entries = None

    def means(self) -> dict[str, np.ndarray]:
        totals = self.sums.cpu().numpy()
        return {s.name: totals[:, i] / self.counts[i] for i, s in enumerate(self.scores)}


@torch.no_grad()
def score_pass(
    model,
    rt: RepeatedTokens,
    chunk: int,
    progress: Progress | None = None,
    keep_z_mean: bool = False,
    attention: str = "auto",
    keep_residuals: Iterable[int] = (),
    reads_together: bool | None = None,
) -> ScanPass:
    """One forward pass per chunk of ``chunk`` sequences, every registry score reduced inside it.

    Eager: hooks on ``hook_pattern`` read each declaration with ``reduce_pattern``. Fused: the
    pass runs inside :func:`~headscope.scan.fused.fused_attention` and each layer's rotated
    ``q``, ``k`` and row logsumexp are read without an ``n x n`` tensor (:class:`_AttentionReads`):
    per declaration, from views of ``q`` and ``k`` (``reduce_qk``, the least memory traffic), or
    every declaration in one gather (``reads_together``: ``plan_entries``, 8 operations a layer
    instead of 45, summed once per chunk: the fewest kernel launches). ``reads_together=None``
    takes the gather on a GPU, where short sequences wait on launches, and the views on a CPU,
    where the gather's indexing is what costs (a 10 x 101 SmolLM2 pass: 1.79 s with the views,
    1.86 s with the gather, 5 interleaved rounds of ``benchmarks/floor.py --part launches``). Both
    routes add the direct-logit reduction (:class:`~headscope.scan.direct.HeadDirectPass`: hooks on
    ``hook_z`` and ``ln_final.hook_scale``), which fire on both; with the gather it keeps each
    layer's ``z`` at the positions it reads and reduces all layers after the pass (``keep``).
    """
    m = as_model(model)
    route = attention_route(m, attention, rt.layout.n_tokens)
    L, H = m.n_layers, m.n_heads
    layout = rt.layout
    reads = _AttentionReads(m, layout, route, reads_together)
    direct = _PassScores(m, layout)
    loss_sum = torch.zeros(layout.n_tokens - 1)
    by_seq: dict[str, list[torch.Tensor]] = {"later": [], "first": []}
    z_sum: torch.Tensor | None = None
    z_count = 0
    store: dict[int, list[torch.Tensor]] = {}

    def on_z(layer: int) -> Callable:
        def hook(z, hook):
            nonlocal z_sum
            if z_sum is None:
                z_sum = torch.zeros(L, H, z.shape[-1], device=z.device)
            z_sum[layer] += z.float().sum(dim=(0, 1))

        return hook

    hooks = reads.pattern_hooks()
    if keep_z_mean:
        hooks += [(act_name("z", layer), on_z(layer)) for layer in range(L)]
    hooks += residual_hooks(store, keep_residuals)
    normed = normed_route_ok(m)  # the full logits are never held: unembedded a slice at a time
    for start in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[start : start + chunk].to(m.device)
        reads.start(tokens)
        run = direct.start(tokens, keep=reads.together)
        routed = fused_attention(m, reads.on_attention) if route == "fused" else contextlib.nullcontext()
        with routed, normed_output(m) if normed else contextlib.nullcontext():
            out = m.run_with_hooks(tokens, fwd_hooks=hooks + (run.hooks if run else []), use_cache=False)
        reads.end()
        per_seq = pass_losses(m, out, tokens, normed=normed)
        loss_sum += per_seq.sum(0).cpu()
        by_seq["later"].append(later_repeat_mean(per_seq, layout).cpu())
        by_seq["first"].append(first_repeat_mean(per_seq, layout).cpu())
        if run is not None:
            direct.add(run.heads())
        z_count += tokens.shape[0] * tokens.shape[1]
        del out
        if progress:
            progress.advance("scoring", tokens.shape[0])
    means = reads.means()
    means.update(direct.means())
    z_mean = None if z_sum is None else z_sum.cpu() / z_count
    residuals = {layer: torch.cat(v) for layer, v in store.items()}
    later_seq, first_seq = (torch.cat(by_seq[k]).double().numpy() for k in ("later", "first"))
    return ScanPass(means, loss_sum / rt.tokens.shape[0], z_mean, residuals, route, later_seq, first_seq)


@torch.no_grad()
def ablated_losses_full(
    model, rt: RepeatedTokens, heads: list[Head], chunk: int, replacement: Replacement | torch.Tensor | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence later- and first-repeat losses with ``heads``' outputs replaced (:class:`~.ablation.Replacement`).

    Full passes from the embedding on the model as loaded (eager attention): the reference the
    restarted check (:func:`~headscope.scan.ablation.ablated_losses`) is tested against.
    ``replacement`` may also be ``z_mean`` (mean ablation) or ``None`` (zero ablation).
    """
    m = as_model(model)
    later, first = [], []
    for start in range(0, rt.tokens.shape[0], chunk):
        tokens = rt.tokens[start : start + chunk].to(m.device)
        hooks = ablation_hooks(heads, replacement, slice(start, start + chunk))
        per_pos = token_losses(m.run_with_hooks(tokens, fwd_hooks=hooks), tokens)
        later.append(later_repeat_mean(per_pos, rt.layout).cpu())
        first.append(first_repeat_mean(per_pos, rt.layout).cpu())
    return torch.cat(later).double().numpy(), torch.cat(first).double().numpy()


def ablated_later_loss(model, rt: RepeatedTokens, heads: list[Head], chunk: int, replacement) -> float:
    """Later-repeat loss (mean over sequences) with ``heads`` ablated, by full passes (:func:`ablated_losses_full`)."""
    return float(ablated_losses_full(model, rt, heads, chunk, replacement)[0].mean())


def clamp_top(top_k: int, n_heads_total: int, ablate: bool) -> tuple[int, list[str]]:
    """``top_k`` cut to what the model has, and a note saying so if it was cut.

    With the causal check at least one head is left out of the top set, so the random control
    (drawn from the other heads) is never empty; a model of one head has none to leave out.

    >>> clamp_top(3, 1, ablate=True)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: this model has one attention head: the causal check's random control is drawn from the other heads, and there are none
      hint: run without the causal check (--no-ablate, ablate=False)
    """
    if ablate and n_heads_total < 2:
        raise BadInput(
            "this model has one attention head: the causal check's random control is drawn from the other heads, "
            "and there are none",
            hint="run without the causal check (--no-ablate, ablate=False)",
        )
    most = n_heads_total - 1 if ablate and n_heads_total > 1 else n_heads_total
    if top_k <= most:
        return top_k, []
    why = " (one left over for the random control of the causal check)" if most < n_heads_total else ""
    return most, [f"--top {top_k} is more than this model's {n_heads_total} heads: using the top {most}{why}"]


def processed_weights_notes(m: HeadscopeModel) -> list[str]:
    """A note when the bridge's weights were processed by ``enable_compatibility_mode()`` (its default).

    The processing keeps the model's function, and every attention, loss and causal number with
    it, but moves what some per-head readings see: folding the value biases takes ``b_V W_O``
    out of each head (so ``direct_logit_*`` differ), and centring the embedding and the writing
    weights changes the uncentred ``copying_direct``.
    """
    if not getattr(m.bridge, "_weights_processed", False):
        return []
    return [
        "this bridge's weights were processed by enable_compatibility_mode() (folded norms and value biases, "
        "centred weights): direct_logit_later, direct_logit_first and copying_direct read the processed "
        "weights and differ from the unprocessed model's; for those, pass headscope.load_model's model or "
        "call enable_compatibility_mode(no_processing=True)"
    ]


def _chunk_for(m: HeadscopeModel, route: str, layout: RepeatLayout, batch: int, budget: float) -> int:
    """Sequences per forward pass on ``route`` within ``budget`` GiB."""
    cfg = m.cfg
    if route == "fused":
        d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
        return fused_chunk_size_for(
            layout.n_tokens, cfg.d_model, d_mlp, cfg.d_vocab, batch, budget, m.n_layers, m.n_heads
        )
    return chunk_size_for(layout.n_tokens, cfg.n_heads, cfg.d_vocab, batch, budget)


def _run_settings(rt: RepeatedTokens) -> dict:
    """What the sequences were: first token and length."""
    lay = rt.layout
    return {"bos": lay.bos, "bos_token_id": rt.bos_token_id, "bos_source": rt.bos_source, "n_tokens": lay.n_tokens}


def _causal_check(
    m: HeadscopeModel,
    rt: RepeatedTokens,
    top: list[Head],
    scan: ScanPass,
    ablation: str,
    chunk: int,
    seed: int,
    controls: int,
    prog: Progress,
) -> list[dict]:
    """:func:`~.causal.causal_check` on the clean pass ``scan``, restarted from its residuals, one bar step each."""
    prog.task("ablating", len(top) + 1 + controls)
    return causal_check(
        m,
        rt,
        top,
        (scan.later_by_sequence, scan.first_by_sequence),
        ablation=ablation,
        z_mean=scan.z_mean,
        residuals=scan.residuals,
        chunk=chunk,
        fused=scan.attention == "fused",
        seed=seed,
        controls=controls,
        step=lambda: prog.advance("ablating"),
    )


@in_eval_mode
def scan_induction(
    model,
    settings: ScanSettings | Mapping[str, Any] | None = None,
    *,
    sample: bool = True,
    progress: bool | None = None,
    **keywords: Any,
) -> InductionResult:
    """Score every head of ``model`` as an induction head on repeated random tokens.

    Runs ``batch`` sequences ``[BOS] + r * repeats`` (``r``: ``seq_len`` random ordinary
    tokens, seeded) through the model in chunks, one forward pass each, reducing every
    layer's attention in the pass. Returns an :class:`InductionResult` with every score
    of the registry (``[n_layers, n_heads]`` each; definitions in ``headscope.scores.SCORES``),
    the per-position loss, and, if ``ablate``, the causal check (:func:`~.causal.causal_check`):
    the change in later- and first-repeat loss, with a 95% bootstrap interval over sequences and
    a verdict, when each of the ``top_k`` induction heads, then all of them, then ``top_k``
    other heads at random (a control, drawn ``controls`` times) are ``ablation``-ablated
    ("mean": the head's ``hook_z`` replaced by its mean over all sequences and positions of
    the clean run; "zero"; "resample": by its output on another sequence of the batch).

    ``attention``: "auto" (fused kernel wherever the model can be routed, else eager),
    "fused" (refused with the reason where it cannot) or "eager" (full patterns); the path
    that ran is ``settings["attention"]``. ``max_memory_gb`` bounds one chunk's working set. All of them:
    one :class:`~headscope.settings.ScanSettings` (``settings``, or a mapping of its fields), its fields replaced by ``keywords``.

    >>> res = scan_induction(model, seq_len=8, batch=2, top_k=2, sample=False, progress=False)
    >>> len(res.top_heads("induction", 2)), list(res.scores)[:2], len(res.ablation)  # 2 heads, all, 10 controls
    (2, ['induction', 'prefix_matching'], 13)
    """
    m = as_model(model)
    st = ScanSettings.from_keywords(settings, **keywords).check()
    top_k, ablate, ablation, controls, batch = st.top_k, st.ablate, st.ablation, st.controls, st.batch
    rt = repeated_tokens(m, seq_len=st.seq_len, batch=batch, repeats=st.repeats, seed=st.seed)
    route = attention_route(m, st.attention, rt.layout.n_tokens)
    layout = rt.layout
    chunk = st.chunk_size or _chunk_for(m, route, layout, batch, budget := st.max_memory_gb)
    top_k, clamped = clamp_top(top_k, m.n_layers * m.n_heads, ablate)
    # The causal check restarts at the first ablated layer from the clean residual there: keep every layer's when
    # all take at most a quarter of the budget (10 x 101 tokens of SmolLM2: 70 MB); else recompute those needed.
    resid_bytes = 4 * m.n_layers * batch * layout.n_tokens * m.cfg.d_model
    keep = range(m.n_layers) if ablate and resid_bytes <= budget * 2**30 / 4 else ()
    timings: dict[str, float] = {}
    prog = Progress(progress)
    if clamped and progress is not False:  # said now, not only among the notes after a long causal check
        prog.say(f"note: {clamped[0]}")
    with prog.running():
        prog.task("scoring", batch)
        t0 = time.perf_counter()
        scan = score_pass(
            m, rt, chunk, prog, keep_z_mean=ablate and ablation == "mean", attention=route, keep_residuals=keep
        )
        means, per_pos = scan.means, scan.per_position_loss
        timings["scan_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        means.update(weight_score_arrays(m))
        timings["copying_s"] = time.perf_counter() - t0
        result_scores = {k: np.asarray(v, dtype=np.float64) for k, v in means.items()}
        top = [(l, h) for l, h, _ in top_k_heads(result_scores["induction"], top_k)]
        clean_later = float(later_repeat_mean(per_pos, layout))
        ablations: list[dict] = []
        if ablate:
            t0 = time.perf_counter()
            ablations = _causal_check(m, rt, top, scan, ablation, chunk, st.seed, controls, prog)
            timings["ablation_s"] = time.perf_counter() - t0
        samples = []
        if sample:
            samples.append(repeated_sample(m, rt, top[: min(top_k, 6)]))

    return InductionResult(
        model=m.info(),
        settings={
            **{"seq_len": st.seq_len, "batch": batch, "repeats": st.repeats, "seed": st.seed, "top_k": top_k},
            **_run_settings(rt),
            **{"ablation": ablation if ablate else None, "controls": controls if ablate else None},
            **{"chunk_size": chunk, "max_memory_gb": budget, "device": str(m.cfg.device), "attention": route},
            "weight_scores": m.cache.get("weight_notes", {}),
        },
        scores=result_scores,
        per_position_loss=per_pos.numpy(),
        loss_first_repeat=float(first_repeat_mean(per_pos, layout)),
        loss_later_repeats=clean_later,
        ablation=ablations,
        thresholds={**default_thresholds(), **st.thresholds},
        samples=samples,
        timings=timings,
        notes=clamped + processed_weights_notes(m),
    )


def repeated_sample(model: HeadscopeModel, rt: RepeatedTokens, heads: list[Head]):
    """The heads' attention on the first 20 tokens of sequence 0, repeated twice (a picture of the stripe)."""
    layout = rt.layout
    m_tokens = min(layout.seq_len, 20)
    r = rt.tokens[0, layout.offset : layout.offset + m_tokens]
    ids = torch.cat(([rt.tokens[0, :1]] if layout.bos else []) + [r, r]).tolist()
    seq = TokenSequence(text="", ids=ids, labels=[token_text(model.tokenizer, i) for i in ids])
    return attention_sample(
        model,
        seq,
        heads,
        "Top induction heads on a repeated random sequence",
        note=f"first {m_tokens} tokens of sequence 0, repeated twice",
    )
