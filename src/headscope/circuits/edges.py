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
In a *parallel* block (GPT-NeoX/Pythia with ``use_parallel_residual``, Phi, GPT-J) attention and
the MLP both read the residual entering the block, so a layer's heads do not reach its own MLP:
the graph has no ``L{l}H{h} -> MLP{l}`` edges there. NeoX gives its MLP its own norm (``ln2``),
whose input is the receiver; Phi's MLP shares the attention's norm, so the MLP's copy of the
residual is forked here (:func:`wire_receivers`): the block input, through the shared norm's
module, into the MLP.
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
import warnings
from collections.abc import Callable, Iterator, Sequence
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
    parallel: bool = False  # the MLP reads the block's input, as attention does (no head -> own-layer MLP edge)
    shared_norm: bool = False  # parallel, and the MLP reads attention's normed input (its copy forked here)

    @classmethod
    def build(
        cls, n_layers: int, n_heads: int, n_kv: int | None = None, parallel: bool = False, shared_norm: bool = False
    ) -> EdgeGraph:
        """The graph of a model of that shape (``parallel``: attention and MLP read the same residual).

        >>> g = EdgeGraph.build(n_layers=2, n_heads=4, parallel=True)
        >>> bool(g.valid[g.sender_index("L0H1"), g.receiver_index("MLP0")]), g.n_edges
        (False, 102)
        """
        n_kv = n_kv or n_heads
        kv = "H" if n_kv == n_heads else "KV"
        g = cls(n_layers, n_heads, n_kv, parallel=parallel, shared_norm=shared_norm and parallel)
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
            recv(f"MLP{layer}", attn if parallel else mlp, "mlp", layer, 0)
            s_names += [head_label(layer, h) for h in range(n_heads)] + [f"MLP{layer}"]
            s_stage += [attn] * n_heads + [mlp]
        recv("logits", 2 * n_layers + 1, "logits", -1, 0)
        g.senders, g.sender_stage = s_names, np.array(s_stage)
        g.receivers, g.receiver_stage, g.receiver_kind = r_names, np.array(r_stage), r_kind
        g.receiver_layer, g.receiver_slot = np.array(r_layer), np.array(r_slot)
        return g

    @classmethod
    def of(cls, model) -> EdgeGraph:
        m = as_model(model)
        cfg = m.cfg
        parallel, shared = block_layout(m)
        return cls.build(
            int(cfg.n_layers),
            int(cfg.n_heads),
            int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
            parallel=parallel,
            shared_norm=shared,
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


def block_layout(model) -> tuple[bool, bool]:
    """``(parallel, shared_norm)`` of the loaded model's blocks: whether attention and the MLP read the same
    residual (TransformerLens's ``parallel_attn_mlp``, a ``ParallelBlockBridge``), and whether the MLP then
    reads attention's normed input (no ``ln2``: Phi, GPT-J) instead of its own norm's (NeoX)."""
    bridge = as_model(model).bridge
    block = bridge.blocks[0]
    parallel = bool(getattr(bridge.cfg, "parallel_attn_mlp", False)) or type(block).__name__ == "ParallelBlockBridge"
    subs = getattr(block, "submodules", None) or {}
    return parallel, parallel and "ln2" not in subs


def _fork_refusals(bridge) -> list[str]:
    """The bridge hooks edge attribution needs that this model cannot give (tried, then put back)."""
    missing = []
    for flag, what in (
        ("use_split_qkv_input", "each head's own query/key/value input (use_split_qkv_input)"),
        ("use_attn_result", "each head's own output (use_attn_result)"),
    ):
        saved = bool(getattr(bridge.cfg, flag, False))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a hybrid model honours the flag on some layers only: not enough
                getattr(bridge, f"set_{flag}")(True)  # refuses before it changes anything
        except (NotImplementedError, UserWarning, ValueError, AttributeError):
            missing.append(what)
        finally:
            with contextlib.suppress(Exception), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(bridge, f"set_{flag}")(saved)
    return missing


def edge_support(model) -> str | None:
    """Why edge attribution cannot run on ``model`` (one sentence), or None when it can.

    Read from the loaded model's bridge before anything is patched: the attention must fork a
    query/key/value input per head and give each head's output (``use_split_qkv_input``,
    ``use_attn_result``: TransformerLens's joint-QKV and rotary attention bridges do, its plain
    ``AttentionBridge`` (OPT, GPT-J, BLOOM) does not); no norm may sit between the heads' sum and the
    residual stream (Gemma 2/3, OLMo 2's post-attention and post-MLP norms), nor a scale (Granite), or
    a receiver's input is not the sum of its senders' outputs. :func:`check_edge_graph` then checks
    that sum on the model itself.
    """
    m = as_model(model)
    bridge = m.bridge
    block = bridge.blocks[0]
    arch = f"{m.name} ({_architecture(m)})"
    missing = _fork_refusals(bridge)
    if missing:
        return (
            f"{arch} has no hook for {' nor for '.join(missing)}: TransformerLens wraps its attention as a plain "
            f"{type(block.attn).__name__}"
        )
    subs = getattr(block, "submodules", None) or {}
    post = [k for k in ("ln1_post", "ln2_post") if k in subs]
    if post:
        return (
            f"{arch} normalises attention's and the MLP's outputs before they join the residual stream "
            f"({', '.join(post)}), so a receiver's input is not a sum of the heads' outputs"
        )
    if type(block).__name__ == "ScaledResidualBlockBridge":
        return f"{arch} scales each block's output before it joins the residual stream"
    return None


def _architecture(m) -> str:
    archs = getattr(getattr(m.bridge, "original_model", None), "config", None)
    names = getattr(archs, "architectures", None) or [type(getattr(m.bridge, "original_model", m)).__name__]
    return str(names[0])


#: How far a receiver's clean - corrupted input may be from the sum of its senders' clean - corrupted outputs,
#: as a share of the largest such input difference, before the graph is refused (float32 sums of a few hundred
#: terms round at ~1e-6 of it; a missing or extra sender, a norm or a scale is off by order 1).
GRAPH_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
GRAPH_TOLERANCE_HALF = 5e-2


def check_edge_graph(model, task: CircuitTask, graph: EdgeGraph | None = None, n_examples: int = 2) -> None:
    """Refuse (:class:`BadInput`) a model edge attribution cannot measure, before anything is patched.

    First :func:`edge_support`; then, on ``n_examples`` of the task, that every receiver's input
    changes between the clean and corrupted prompts by exactly the sum of its senders' changes (the
    identity that makes "every edge kept = the clean run" hold), so a block wired otherwise than
    :class:`EdgeGraph` assumes is refused rather than measured wrong.
    """
    m = as_model(model)
    hint = "run the other steps without edges (--steps activation,paths); docs/circuits.md lists the models it supports"
    why = edge_support(m)
    if why:
        raise BadInput(f"edge attribution (--steps edges) cannot run: {why}; nothing was patched or written", hint=hint)
    graph = graph or EdgeGraph.of(m)
    part = task.subset(range(min(n_examples, task.n_examples)))
    with split_inputs(m):
        dev = m.device
        diff = sender_outputs(m, part.clean.to(dev), graph) - sender_outputs(m, part.corrupt.to(dev), graph)
        clean, corrupt = (
            _receiver_inputs(m, part.clean.to(dev), graph),
            _receiver_inputs(m, part.corrupt.to(dev), graph),
        )
    tol = GRAPH_TOLERANCE.get(m.bridge.cfg.dtype, GRAPH_TOLERANCE_HALF)
    for name, idx in graph.receiver_groups():
        if name not in clean:
            raise BadInput(
                f"edge attribution (--steps edges) cannot run: {m.name} ({_architecture(m)}) never fires {name}, "
                "the receiver's input hook; nothing was patched or written",
                hint=hint,
            )
        got = (clean[name] - corrupt[name]).float().cpu()  # [batch, pos, slots, d]
        n = graph.n_before(int(graph.receiver_stage[idx[0]]))
        want = diff[:n].sum(0)[:, :, None]
        scale = float(got.abs().max()) + 1e-12
        off = float((got - want).abs().max()) / scale
        if off > tol:
            raise BadInput(
                f"edge attribution (--steps edges) cannot run: on {m.name} ({_architecture(m)}) the input of "
                f"{graph.receivers[idx[0]]} ({name}) is not the sum of its senders' outputs (off by {off:.1%} of "
                "its size): the model's blocks are wired otherwise than the edge graph assumes; nothing was "
                "patched or written",
                hint=hint,
            )


def wire_receivers(model, graph: EdgeGraph, hooks: list[tuple[str, Callable]]) -> list[tuple[str, Callable]]:
    """The receiver hooks as the model runs them. On a parallel block whose MLP shares attention's norm
    (Phi), ``blocks.{l}.hook_mlp_in`` does not fire: the MLP's own copy of the block input is made here
    (kept at ``hook_resid_pre``, given to the hook, put through the shared norm's module and handed to
    the MLP at ``mlp.hook_in``), so a change there reaches the MLP only."""
    if not graph.shared_norm:
        return hooks
    bridge = as_model(model).bridge
    out = []
    for name, fn in hooks:
        if not name.endswith(".hook_mlp_in"):
            out.append((name, fn))
            continue
        layer = int(name.split(".")[1])
        norm = bridge.blocks[layer].ln1.original_component
        seen: dict[str, torch.Tensor] = {}

        def keep(x, hook, seen=seen):
            seen["x"] = x

        def feed(x, hook, fn=fn, seen=seen, norm=norm):
            mine = seen["x"].clone()  # the MLP's own copy of the block input
            new = fn(mine, hook)
            return norm(mine if new is None else new).to(x.dtype)

        out += [(f"blocks.{layer}.hook_resid_pre", keep), (f"blocks.{layer}.mlp.hook_in", feed)]
    return out


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
        hooks = wire_receivers(model, graph, [(name, keep(name)) for name, _ in graph.receiver_groups()])
        as_model(model).run_with_hooks(tokens, fwd_hooks=hooks)
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
        hooks += wire_receivers(
            m, graph, [(name, on_receiver(name, list(idx))) for name, idx in graph.receiver_groups()]
        )
        logits = m.run_with_hooks(task.clean.to(task_dev), fwd_hooks=hooks)
    return task_metric(logits, task).cpu().numpy().astype(np.float64)


def clean_corrupt_metric(model, task: CircuitTask) -> tuple[np.ndarray, np.ndarray]:
    """The metric per example on the clean and on the corrupted prompts (no patching)."""
    m = as_model(model)
    with torch.no_grad():
        clean = task_metric(m(task.clean.to(m.device)), task).cpu().numpy().astype(np.float64)
        corrupt = task_metric(m(task.corrupt.to(m.device)), task).cpu().numpy().astype(np.float64)
    return clean, corrupt
