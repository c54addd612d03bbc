"""The model as a graph of edges, and patching one edge at a time on the bridge's own hooks.

Edge attribution (Syed et al. 2023; Hanna et al. 2024) and edge-level patching see a transformer
as nodes that *send* into the residual stream and nodes that *receive* from it:

* senders: the embeddings (``input``, ``blocks.0.hook_resid_pre``), every attention head's
  output ``z_h W_O_h`` (``attn.hook_result``, one slice per head) and every MLP's output
  (``hook_mlp_out``);
* receivers: every head's query, key and value input, separately (``attn.hook_q_input`` /
  ``hook_k_input`` / ``hook_v_input``: the residual stream forked per head *before* the norm,
  so a change there reaches that head only), every MLP's input (``hook_mlp_in``) and the
  logits (``ln_final.hook_in``).

An edge ``u -> v`` joins a sender to a receiver that reads the stream after ``u`` wrote to it.
On grouped-query models (SmolLM2: 9 query heads over 3 key/value heads) a key or value input
belongs to a key/value head (``L18KV2.k``), which its group of query heads shares; the
bridge forks one copy per key/value head, so that is the receiver a patch can reach.

Why the bridge's hooks and not a circuit library: the bridge's split inputs
(``use_split_qkv_input``, ``use_attn_result``, ``use_hook_mlp_in``) are the hooks Hanna et
al.'s EAP-IG code asks of TransformerLens 2; they exist on TransformerLens 4's bridge for
GPT-2-style and rotary grouped-query models alike, run each head's own norm on its own copy
(so every gradient below includes the norm's Jacobian, LayerNorm or RMSNorm), and need no
other package (docs/circuits.md says what was tried).

Patching an edge (:func:`patched_metric`) changes a receiver's input by a sender's
difference: keeping a set of edges clean with the rest corrupted gives receiver ``v``

    ``input_v = corrupt_input_v + sum_{u kept into v} (current_u - corrupt_u)``,

and corrupting a set with the rest clean gives ``input_v = current_input_v + sum_{u} (corrupt_u
- current_u)``, where ``current_u`` is the sender's output in the patched run itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadInput
from ..head_labels import head_label
from ..models.model import as_model
from .tasks import CircuitTask, task_metric

#: The hooks the edge graph needs switched on, by the bridge's setter names.
SPLIT_FLAGS = ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in")


@dataclass
class EdgeGraph:
    """Senders, receivers and which pairs are edges, for a model of ``n_layers`` x ``n_heads`` (``n_kv`` key/value heads).

    Senders are ordered as the forward pass writes them (input, layer 0's heads, MLP0, layer
    1's heads, ...); ``valid[u, v]`` is True where sender ``u`` writes before receiver ``v`` reads.

    >>> g = EdgeGraph.build(n_layers=2, n_heads=4, n_kv=2)
    >>> g.senders[:3], g.receivers[:6], g.receivers[-1]
    (['input', 'L0H0', 'L0H1'], ['L0H0.q', 'L0H1.q', 'L0H2.q', 'L0H3.q', 'L0KV0.k', 'L0KV1.k'], 'logits')
    >>> g.n_edges, g.edge_name(g.sender_index("L0H1"), g.receiver_index("L1KV0.k"))
    (82, 'L0H1 -> L1KV0.k')
    """

    n_layers: int
    n_heads: int
    n_kv: int
    senders: list[str] = field(default_factory=list)
    receivers: list[str] = field(default_factory=list)
    sender_stage: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    receiver_stage: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    receiver_kind: list[str] = field(default_factory=list)  # q, k, v, mlp, logits
    receiver_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # -1 for the logits
    receiver_slot: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # head / kv head index

    @classmethod
    def build(cls, n_layers: int, n_heads: int, n_kv: int | None = None) -> EdgeGraph:
        n_kv = n_kv or n_heads
        kv = "H" if n_kv == n_heads else "KV"
        g = cls(n_layers, n_heads, n_kv)
        s_names, s_stage = ["input"], [0]
        r_names, r_stage, r_kind, r_layer, r_slot = [], [], [], [], []

        def recv(name, stage, kind, layer, slot):
            r_names.append(name), r_stage.append(stage), r_kind.append(kind), r_layer.append(layer), r_slot.append(slot)

        for layer in range(n_layers):
            attn, mlp = 2 * layer + 1, 2 * layer + 2  # stages: a sender at stage s feeds receivers at stages > s
            for h in range(n_heads):
                recv(f"{head_label(layer, h)}.q", attn, "q", layer, h)
            for kind in ("k", "v"):
                for h in range(n_kv):
                    recv(f"L{layer}{kv}{h}.{kind}", attn, kind, layer, h)
            recv(f"MLP{layer}", mlp, "mlp", layer, 0)
            s_names += [head_label(layer, h) for h in range(n_heads)] + [f"MLP{layer}"]
            s_stage += [attn] * n_heads + [mlp]
        recv("logits", 2 * n_layers + 1, "logits", -1, 0)
        g.senders, g.sender_stage = s_names, np.array(s_stage)
        g.receivers, g.receiver_stage, g.receiver_kind = r_names, np.array(r_stage), r_kind
        g.receiver_layer, g.receiver_slot = np.array(r_layer), np.array(r_slot)
        return g

    @classmethod
    def of(cls, model) -> EdgeGraph:
        cfg = as_model(model).cfg
        return cls.build(
            int(cfg.n_layers), int(cfg.n_heads), int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        )

    @property
    def valid(self) -> np.ndarray:
        """``[n_senders, n_receivers]`` bool: which pairs are edges."""
        return self.sender_stage[:, None] < self.receiver_stage[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def sender_index(self, name: str) -> int:
        return self._index(self.senders, name, "sender")

    def receiver_index(self, name: str) -> int:
        return self._index(self.receivers, name, "receiver")

    @staticmethod
    def _index(names: list[str], name: str, what: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise BadInput(
                f"no {what} named {name!r}", hint=f"{what}s are named like {', '.join(names[:3])}, ..."
            ) from None

    def edge_name(self, u: int, v: int) -> str:
        return f"{self.senders[u]} -> {self.receivers[v]}"

    def n_before(self, stage: int) -> int:
        """How many senders (a prefix, in sender order) write before a receiver at ``stage``."""
        return int((self.sender_stage < stage).sum())

    def receiver_groups(self) -> list[tuple[str, np.ndarray]]:
        """``(hook name, receiver indices in hook order)`` for every receiver hook, in forward order."""
        out = []
        for layer in range(self.n_layers):
            for kind, hook in (("q", "attn.hook_q_input"), ("k", "attn.hook_k_input"), ("v", "attn.hook_v_input")):
                idx = np.flatnonzero((self.receiver_layer == layer) & (np.array(self.receiver_kind) == kind))
                out.append((f"blocks.{layer}.{hook}", idx))
            out.append(
                (f"blocks.{layer}.hook_mlp_in", np.flatnonzero((self.receiver_layer == layer) & self._is("mlp")))
            )
        out.append(("ln_final.hook_in", np.array([len(self.receivers) - 1])))
        return out

    def sender_groups(self) -> list[tuple[str, np.ndarray]]:
        """``(hook name, sender indices)``: input, then per layer the heads (``hook_result``) and the MLP."""
        out = [("blocks.0.hook_resid_pre", np.array([0]))]
        for layer in range(self.n_layers):
            first = 1 + layer * (self.n_heads + 1)
            out.append((f"blocks.{layer}.attn.hook_result", np.arange(first, first + self.n_heads)))
            out.append((f"blocks.{layer}.hook_mlp_out", np.array([first + self.n_heads])))
        return out

    def _is(self, kind: str) -> np.ndarray:
        return np.array([k == kind for k in self.receiver_kind])


@contextlib.contextmanager
def split_inputs(model) -> Iterator[None]:
    """Switch on the bridge's per-head inputs, per-head outputs and MLP input hooks; restore on exit."""
    bridge = as_model(model).bridge
    saved = {flag: bool(getattr(bridge.cfg, flag, False)) for flag in SPLIT_FLAGS}
    try:
        for flag in SPLIT_FLAGS:
            getattr(bridge, f"set_{flag}")(True)
        yield
    finally:
        for flag, value in saved.items():
            getattr(bridge, f"set_{flag}")(value)


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """A hook's value as ``[batch, pos, n, d_model]`` (a 3-D value gets a slot axis of 1)."""
    return x if x.dim() == 4 else x.unsqueeze(2)


def sender_outputs(model, tokens: torch.Tensor, graph: EdgeGraph, replace_input=None) -> torch.Tensor:
    """Every sender's output ``[n_senders, batch, pos, d_model]`` on ``tokens`` (no gradients)."""
    out = torch.zeros(len(graph.senders), *tokens.shape, int(as_model(model).cfg.d_model))

    def keep(idx):
        def hook(x, hook):
            out[idx] = as_rows(x).detach().float().permute(2, 0, 1, 3).cpu()

        return hook

    hooks = [(name, keep(torch.as_tensor(idx))) for name, idx in graph.sender_groups()]
    with torch.no_grad():
        as_model(model).run_with_hooks(tokens, fwd_hooks=hooks)
    return out


def _receiver_inputs(model, tokens: torch.Tensor, graph: EdgeGraph) -> dict[str, torch.Tensor]:
    """The corrupted run's value at every receiver hook (``[batch, pos, slots, d_model]``)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(x, hook):  # by the name asked for: in compatibility mode hook.name is an alias
            seen[name] = as_rows(x).detach().clone()

        return hook

    with torch.no_grad():
        as_model(model).run_with_hooks(tokens, fwd_hooks=[(name, keep(name)) for name, _ in graph.receiver_groups()])
    return seen


@dataclass
class CorruptRun:
    """The corrupted run, kept for many patched runs: every sender's output ``[n_senders, batch, pos, d]``
    and every receiver hook's input (``{hook: [batch, pos, slots, d]}``)."""

    senders: torch.Tensor
    inputs: dict[str, torch.Tensor]


def corrupt_run(model, task: CircuitTask, graph: EdgeGraph | None = None) -> CorruptRun:
    """The corrupted prompts' sender outputs and receiver inputs (two passes without gradients)."""
    m = as_model(model)
    graph = graph or EdgeGraph.of(m)
    with split_inputs(m):
        tokens = task.corrupt.to(m.device)
        return CorruptRun(sender_outputs(m, tokens, graph).to(m.device), _receiver_inputs(m, tokens, graph))


def edge_mask(graph: EdgeGraph, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """``[n_senders, n_receivers]`` bool with ``edges`` set; refuses pairs that are not edges."""
    m = np.zeros((len(graph.senders), len(graph.receivers)), dtype=bool)
    for u, v in edges:
        m[u, v] = True
    bad = m & ~graph.valid
    if bad.any():
        u, v = np.argwhere(bad)[0]
        raise BadInput(f"{graph.edge_name(u, v)} is not an edge (the receiver reads before the sender writes)")
    return m


@torch.no_grad()
def patched_metric(
    model,
    task: CircuitTask,
    edges: Sequence[tuple[int, int]] | np.ndarray,
    keep: bool = True,
    graph: EdgeGraph | None = None,
    scale: float = 1.0,
    corrupt: CorruptRun | None = None,
) -> np.ndarray:
    """The task's metric per example with edges patched, ``[n_examples]``.

    ``keep=True``: only ``edges`` carry clean values, every other edge its corrupted value
    (a circuit's faithfulness). ``keep=False``: only ``edges`` are corrupted, the rest clean
    (an edge patched alone). ``edges`` are ``(sender, receiver)`` index pairs or a bool mask.
    ``scale`` moves the corrupted edges that fraction of the way (``keep=False`` only; 1 = the
    whole way), for finite-difference checks of the attribution. ``corrupt`` (from
    :func:`corrupt_run`) saves recomputing the corrupted run when patching many times.
    """
    m = as_model(model)
    graph = graph or EdgeGraph.of(m)
    mask = np.asarray(edges, dtype=bool) if isinstance(edges, np.ndarray) else edge_mask(graph, edges)
    task_dev = m.device
    corrupt = corrupt or corrupt_run(m, task, graph)
    corrupt_out, base = corrupt.senders, corrupt.inputs
    with split_inputs(m):
        used = np.flatnonzero(mask.any(axis=1))
        diff: dict[int, torch.Tensor] = {}  # sender -> current - corrupt, filled as the run writes them

        def on_sender(idx):
            def hook(x, hook):
                rows = as_rows(x).permute(2, 0, 1, 3)
                for j, u in enumerate(idx):
                    if u in used_set:
                        diff[u] = rows[j].float() - corrupt_out[u]

            return hook

        def on_receiver(name, idx):  # by the name asked for: in compatibility mode hook.name is an alias
            into = mask[:, idx].any()

            def hook(x, hook):
                if not keep and not into:
                    return None
                rows = as_rows(x)
                new = base[name].to(rows.dtype).clone() if keep else rows.clone()
                sign = 1.0 if keep else -scale
                for j, v in enumerate(idx):
                    for u in np.flatnonzero(mask[:, v]):
                        new[:, :, j] += sign * diff[int(u)].to(rows.dtype)
                return new if x.dim() == 4 else new[:, :, 0]

            return hook

        used_set = {int(u) for u in used}
        hooks = [(name, on_sender(list(idx))) for name, idx in graph.sender_groups()]
        hooks += [(name, on_receiver(name, list(idx))) for name, idx in graph.receiver_groups()]
        logits = m.run_with_hooks(task.clean.to(task_dev), fwd_hooks=hooks)
    return task_metric(logits, task).cpu().numpy().astype(np.float64)


def clean_corrupt_metric(model, task: CircuitTask) -> tuple[np.ndarray, np.ndarray]:
    """The metric per example on the clean and on the corrupted prompts (no patching)."""
    m = as_model(model)
    with torch.no_grad():
        clean = task_metric(m(task.clean.to(m.device)), task).cpu().numpy().astype(np.float64)
        corrupt = task_metric(m(task.corrupt.to(m.device)), task).cpu().numpy().astype(np.float64)
    return clean, corrupt
