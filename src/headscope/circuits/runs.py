"""The runs every patching measurement is built from: one cached pass per input, restarted passes, the metric.

Patching compares a clean and a corrupted run and many runs in between. Each in-between run
changes activations from some layer ``l`` on, so it restarts from the cached residual stream
entering block ``l`` (blocks below are not computed: :func:`headscope.scan.ablation.skip_blocks`)
and runs the rest with attention through the fused kernel where the model allows it (patching
never needs the attention pattern). Many patches run in one pass, stacked along the batch: copy
``c`` of the examples carries patch ``c`` (:func:`copies`).

The logits are never materialised for every position: the pass stops after the final norm
(:func:`final_normed`, the unembedding swapped for a pass-through), and only the counted
positions' rows are unembedded, a few sequences at a time (:func:`metric_of_normed`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..models.model import as_model
from ..scan.ablation import skip_blocks
from ..scan.fused import fused_attention, fused_supported
from .tasks import CircuitTask, metric_at

Hook = tuple[str, Callable]

#: Bytes of unembedded rows (float32) one metric step may hold.
UNEMBED_BYTES = 256 * 2**20


@contextlib.contextmanager
def _no_unembed(bridge) -> Iterator[dict]:
    """The unembedding is skipped; the box it yields holds the final-normed residual ``[batch, n, d_model]``
    under ``"normed"`` after the pass. Read it there, not from the forward's return: a model may transform
    what its unembedding returns (Gemma 2's logit soft-capping), and would transform the residual instead."""
    box: dict = {}

    def keep(*args, **kwargs):
        box["normed"] = x = args[0] if args else next(iter(kwargs.values()))
        return x

    object.__setattr__(bridge.unembed, "forward", keep)
    try:
        yield box
    finally:
        bridge.unembed.__dict__.pop("forward", None)


def _route(bridge, fused: bool | None, n_tokens: int | None = None):
    use = fused_supported(bridge, n_tokens) if fused is None else fused
    return fused_attention(bridge) if use else contextlib.nullcontext()


@torch.no_grad()
def final_normed(
    model, inputs: torch.Tensor, start: int = 0, hooks: list[Hook] | tuple = (), fused: bool | None = None
) -> torch.Tensor:
    """The final-normed residual ``[batch, n, d_model]`` of a pass from ``inputs``: token ids (a full pass), or
    the residual entering block ``start`` (float); with ``hooks``; no logits are computed."""
    bridge = as_model(model).bridge
    with _route(bridge, fused, inputs.shape[1]), _no_unembed(bridge) as box, skip_blocks(bridge, start):
        kw = {"start_at_layer": start} if inputs.is_floating_point() else {}  # a residual, also at block 0
        bridge.run_with_hooks(inputs, fwd_hooks=list(hooks), use_cache=False, **kw)
    return box["normed"]


@torch.no_grad()
def metric_of_normed(model, normed: torch.Tensor, task: CircuitTask) -> torch.Tensor:
    """The task's metric per sequence ``[batch]`` from final-normed residuals ``[batch, n, d_model]``.

    ``task`` has one example per row of ``normed`` (see :func:`copies`). Only the counted
    positions are unembedded, in steps of at most :data:`UNEMBED_BYTES`; the logit difference
    reads just the answer's and the wrong token's rows of the unembedding (a plain linear one).
    """
    bridge = as_model(model).bridge
    pos = task.positions.to(normed.device)
    rows = normed.gather(1, pos[..., None].expand(-1, -1, normed.shape[-1]))  # [batch, P, d]
    lm_head = _plain_unembedding(bridge)
    if task.metric == "logit_diff" and lm_head is not None:
        return _logit_diff(rows, task, lm_head).cpu()
    step = max(1, UNEMBED_BYTES // (4 * rows.shape[1] * bridge.cfg.d_vocab))
    out = [
        metric_at(_logits(bridge, rows[s : s + step]), task.subset(range(s, min(s + step, rows.shape[0]))))
        for s in range(0, rows.shape[0], step)
    ]
    return torch.cat(out).cpu()


def _output_transform(bridge):
    """What the model does to its unembedding's output (Gemma 2's soft-capping; a scale), or None for nothing."""
    from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter

    adapter = getattr(bridge, "adapter", None)
    if adapter is None:
        return None
    own = type(adapter).apply_output_logits_transform is not ArchitectureAdapter.apply_output_logits_transform
    cap = getattr(bridge.cfg, "output_logits_soft_cap", None)
    return adapter.apply_output_logits_transform if own or (cap is not None and cap > 0) else None


def _logits(bridge, normed: torch.Tensor) -> torch.Tensor:
    """The model's logits from final-normed residuals: the unembedding, then the model's own output transform."""
    logits = bridge.unembed(normed)
    transform = _output_transform(bridge)
    return transform(logits) if transform is not None else logits


def _plain_unembedding(bridge) -> torch.nn.Linear | None:
    """The unembedding as a plain ``nn.Linear`` when the logits are exactly ``lm_head(x)`` (no softcap), else None."""
    lm_head = getattr(bridge.unembed, "original_component", None)
    if not isinstance(lm_head, torch.nn.Linear) or _output_transform(bridge) is not None:
        return None
    return lm_head


def _logit_diff(rows: torch.Tensor, task: CircuitTask, lm_head: torch.nn.Linear) -> torch.Tensor:
    """``logit[answer] - logit[wrong]`` from two unembedding rows per position (not the whole vocabulary)."""
    ans, wrong = task.answer.to(rows.device), task.wrong.to(rows.device)
    w = lm_head.weight[ans] - lm_head.weight[wrong]  # [batch, P, d]
    per = (rows.float() * w.float()).sum(-1)
    if lm_head.bias is not None:
        per = per + (lm_head.bias[ans] - lm_head.bias[wrong]).float()
    cnt = task.counted.to(rows.device).float()
    return (per * cnt).sum(-1) / cnt.sum(-1).clamp_min(1)


def copies(task: CircuitTask, k: int) -> CircuitTask:
    """The task's examples repeated ``k`` times along the batch (copy ``c`` is rows ``c*n .. c*n+n-1``)."""
    return task.subset(torch.arange(task.n_examples).repeat(k))


@dataclass
class RunCache:
    """One run's activations on the model's device: what patching reads and swaps in.

    ``resid_pre[l]`` ``[n_ex, n, d_model]`` enters block ``l``; ``z[l]`` ``[n_ex, n, H, d_head]``
    (each head's output before W_O); ``mlp_out[l]`` ``[n_ex, n, d_model]``; ``resid_final``
    ``[n_ex, n, d_model]`` leaves the last block (before the final norm); ``metric`` ``[n_ex]``.
    """

    resid_pre: list[torch.Tensor]
    z: list[torch.Tensor]
    mlp_out: list[torch.Tensor]
    resid_final: torch.Tensor
    metric: torch.Tensor


@torch.no_grad()
def cache_run(model, tokens: torch.Tensor, task: CircuitTask, fused: bool | None = None) -> RunCache:
    """One pass over ``tokens`` ``[n_ex, n]`` keeping every layer's residual, head outputs and MLP output."""
    bridge = as_model(model).bridge
    n_layers = bridge.cfg.n_layers
    store: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(x, hook):  # by the name asked for: hook_z is an alias (its hook.name is attn.o.hook_in)
            store[name] = x.detach().clone()

        return hook

    names = [f"blocks.{l}.{w}" for l in range(n_layers) for w in ("hook_resid_pre", "attn.hook_z", "hook_mlp_out")]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    normed = final_normed(bridge, tokens.to(bridge.cfg.device), 0, [(n, keep(n)) for n in names], fused)
    z = [store[f"blocks.{l}.attn.hook_z"] for l in range(n_layers)]
    return RunCache(
        resid_pre=[store[f"blocks.{l}.hook_resid_pre"] for l in range(n_layers)],
        z=[per_head_view(t, bridge.cfg.d_head) for t in z],
        mlp_out=[store[f"blocks.{l}.hook_mlp_out"] for l in range(n_layers)],
        resid_final=store[f"blocks.{n_layers - 1}.hook_resid_post"],
        metric=metric_of_normed(bridge, normed, task),
    )


def per_head_view(x: torch.Tensor, d_head: int) -> torch.Tensor:
    """``[batch, n, heads * d_head]`` or ``[batch, n, heads, d_head]`` as the 4-D view (hooks fire in either form)."""
    return x if x.dim() == 4 else x.view(*x.shape[:2], -1, d_head)


#: At most this many sequences per pass on a CPU: measured on SmolLM2 (36 senders -> L18H6's keys,
#: 10 x 101 tokens, one thread), passes of ~20 sequences took 38-44 s and passes of ~360 took 52-70 s
#: (cache-friendly small batches); on a GPU the memory budget alone decides.
CPU_PASS_SEQUENCES = 32


def pass_sizes(model, n_tokens: int, max_memory_gb: float) -> int:
    """Sequences per restarted pass: one layer's working set within ``max_memory_gb`` (float32), and at most
    :data:`CPU_PASS_SEQUENCES` on a CPU."""
    cfg = as_model(model).bridge.cfg
    per_seq = 4 * n_tokens * (16 * cfg.d_model + 3 * (cfg.d_mlp or 4 * cfg.d_model))
    n = max(1, int(max_memory_gb * 2**30 // per_seq))
    return min(n, CPU_PASS_SEQUENCES) if str(cfg.device).startswith("cpu") else n
