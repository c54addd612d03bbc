"""Edge attribution over the whole model: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

Patching every edge of SmolLM2 one at a time would take some 70,000 forward passes. Edge
attribution patching estimates all of them from two forward passes and one backward pass: an
edge ``u -> v``'s score is the first-order change in the metric when ``v`` receives ``u``'s
corrupted output instead of its clean one,

    ``score(u -> v) = sum over positions of (corrupt_out_u - clean_out_u) . d metric / d input_v``,

averaged over the task's examples (EAP: the gradient at the clean input). Because a receiver's
input is a sum of its senders' outputs, one gradient per receiver serves every edge into it.
EAP-IG (Hanna et al. 2024, "Have Faith in Faithfulness", their ``EAP-IG-inputs``) replaces
the gradient by its mean along the straight path from the corrupted to the clean embeddings,
``alpha = k / steps`` for ``k = 0 .. steps - 1`` as in their code: integrated gradients
(Sundararajan et al. 2017), which a first-order estimate needs where the metric saturates.

Scores are in the metric's units and signed as in Hanna et al.: negative where corrupting the
edge lowers the metric (for the logit difference: the edge carries the clean behaviour). A
circuit is the top edges by ``|score|``; whether that circuit does the task is measured by
patching, not by these estimates (:mod:`headscope.circuits.faithfulness`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..errors import BadInput
from ..models.model import as_model, in_eval_mode
from ..results.edge_results import EdgeScores
from .edges import EdgeGraph, as_rows, sender_outputs, split_inputs, wire_receivers
from .tasks import CircuitTask, task_metric

METHODS = ("eap", "eap-ig")
#: Integration steps for EAP-IG unless asked otherwise (Hanna et al.'s code defaults to 30;
#: 5 keeps SmolLM2's 70,651 edges under two minutes on two CPU cores, docs/circuits.md).
DEFAULT_IG_STEPS = 5


def _receiver_grads(model, task: CircuitTask, graph: EdgeGraph, start: torch.Tensor, end: torch.Tensor, steps):
    """Sum over ``alphas`` of d metric / d input_v for every receiver hook: ``{hook: [batch, pos, slots, d]}``.

    The run reads ``task.clean`` with ``blocks.0.hook_resid_pre`` (the embeddings) replaced by
    ``start + alpha (end - start)``; the metric is the task's mean over examples.
    """
    m = as_model(model)
    grads: dict[str, torch.Tensor] = {}

    def on_receiver(name: str) -> Callable:
        # Keyed by the name asked for, not hook.name: on a bridge in compatibility mode
        # blocks.0.attn.hook_q_input fires as its alias blocks.0.hook_q_input.
        def hook(x, hook):
            # A copy, so the gradient is the receiver's own: hook_mlp_in and ln_final.hook_in see the
            # residual stream tensor itself, whose gradient also carries every later reader's.
            y = x.clone()

            def add(g):
                g = as_rows(g).detach().float()
                grads[name] = grads[name] + g if name in grads else g.clone()

            y.register_hook(add)
            return y

        return hook

    for alpha in steps:
        leaf = (start + alpha * (end - start)).detach().requires_grad_(True)
        hooks: list[tuple[str, Callable]] = [("blocks.0.hook_resid_pre", lambda x, hook, leaf=leaf: leaf.to(x.dtype))]
        hooks += wire_receivers(m, graph, [(name, on_receiver(name)) for name, _ in graph.receiver_groups()])
        with torch.enable_grad():
            logits = m.run_with_hooks(task.clean.to(m.device), fwd_hooks=hooks)
            metric = task_metric(logits, task).sum()
            torch.autograd.grad(metric, leaf)
        del logits, metric
    return grads


def _scores(graph: EdgeGraph, delta: torch.Tensor, grads: dict[str, torch.Tensor]) -> np.ndarray:
    """``[n_senders, n_receivers]`` sums of ``delta_u . grad_v`` over batch and positions (NaN off the graph)."""
    out = np.full((len(graph.senders), len(graph.receivers)), np.nan)
    flat = delta.flatten(1, 3)  # [senders, batch * pos * d]
    for name, idx in graph.receiver_groups():
        n = graph.n_before(int(graph.receiver_stage[idx[0]]))
        g = grads[name].permute(2, 0, 1, 3).flatten(1, 3)  # [slots, batch * pos * d]
        out[:n, idx] = (flat[:n] @ g.T).double().numpy()
    return out


@in_eval_mode
def edge_attribution(
    model,
    task: CircuitTask,
    method: str = "eap-ig",
    ig_steps: int = DEFAULT_IG_STEPS,
    chunk: int | None = None,
    max_memory_gb: float | None = None,
) -> EdgeScores:
    """Score every edge of ``model`` on ``task`` by EAP or EAP-IG (see the module docstring).

    ``chunk`` examples go through each pass (default: all, or as many as :func:`chunk_for` fits in
    ``max_memory_gb``); scores are means over examples, whatever the chunk.

    >>> from headscope.circuits import induction_task, edge_attribution
    >>> task = induction_task(model, n_examples=2, seq_len=5)
    >>> res = edge_attribution(model, task, method="eap-ig", ig_steps=2)
    >>> res.scores.shape, res.n_edges, res.top(1)[0][0] in res.senders
    ((11, 27), 110, True)
    """
    if method not in METHODS:
        raise BadInput(f"unknown attribution method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if method == "eap-ig" and (not isinstance(ig_steps, int) or ig_steps < 1):
        raise BadInput(f"--ig-steps must be a whole number of at least 1 (got {ig_steps!r})")
    m = as_model(model)
    graph = EdgeGraph.of(m)
    t0, c0 = time.perf_counter(), time.process_time()
    steps = [k / ig_steps for k in range(ig_steps)] if method == "eap-ig" else [1.0]
    n = task.n_examples
    chunk = chunk or (chunk_for(m, int(task.clean.shape[1]), max_memory_gb) if max_memory_gb else n)
    total = np.zeros((len(graph.senders), len(graph.receivers)))
    with split_inputs(m):
        for lo in range(0, n, chunk):
            part = task.subset(range(lo, min(n, lo + chunk)))
            corrupt = sender_outputs(m, part.corrupt.to(m.device), graph)
            clean = sender_outputs(m, part.clean.to(m.device), graph)
            start, end = corrupt[0].to(m.device, copy=True), clean[0].to(m.device, copy=True)
            delta = corrupt.sub_(clean)
            del clean
            grads = _receiver_grads(m, part, graph, start, end, steps)
            total += _scores(graph, delta, {k: v.cpu() for k, v in grads.items()}) / len(steps)
            del delta, grads
    scores = total / n
    scores[~graph.valid] = np.nan
    return EdgeScores(
        model=m.info(),
        task=task_summary(task),
        method=method,
        ig_steps=ig_steps if method == "eap-ig" else None,
        senders=list(graph.senders),
        receivers=list(graph.receivers),
        scores=scores,
        n_kv_heads=graph.n_kv,
        seconds={"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0},
    )


def chunk_for(model, n_tokens: int, max_memory_gb: float) -> int:
    """Sequences per pass so the backward pass's saved activations stay near ``max_memory_gb`` (an estimate).

    Per sequence and layer the split inputs keep (query heads + 2 key/value heads + 1 MLP input)
    copies of the residual stream, each with its normalised copy and the norm's saved tensors
    (about 6 floats each); plus the logits and their gradient. Calibrated on SmolLM2 (10 x 101
    tokens, 5 steps: 7.2 GiB above the model for 10 sequences, benchmarks/circuits_eap.py), which
    this puts at 0.68 GiB per sequence.

    >>> chunk_for(model, n_tokens=101, max_memory_gb=2.0) >= 1
    True
    """
    cfg = as_model(model).cfg
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
    slots = int(cfg.n_heads) + 2 * n_kv + 1
    per_seq = 4 * n_tokens * (6 * int(cfg.n_layers) * slots * int(cfg.d_model) + 3 * int(cfg.d_vocab))
    return max(1, int(max_memory_gb * 2**30 // per_seq))


def task_summary(task: CircuitTask) -> dict:
    """What a result records about its task (legends and JSON)."""
    return {
        "name": task.name,
        "n_examples": task.n_examples,
        "n_tokens": int(task.clean.shape[1]),
        "metric": task.metric,
        "corruption": task.corruption,
        "seed": task.seed,
        "notes": list(task.notes),
    }
