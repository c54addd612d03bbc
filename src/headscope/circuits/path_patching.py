"""Path patching: the effect of one sender head on the metric through one receiver only.

Wang et al. (2022, the IOI circuit) and Goldowsky-Dill et al. (2023): the sender's output
changes (corrupted instead of clean, or the reverse), but the change may reach the metric only
along the path asked for:

- receiver = a head's query, key or value input (``q``, ``k``, ``v``; ``qkv`` all three): the
  receiver's input is the base run's residual entering its layer plus the sender's output
  change ``delta_s = W_O[s] (z_s' - z_s)``, with everything else frozen at the base run. Only
  the receiver's own output is kept from that (the other heads of its layer keep their base
  output: on a grouped-query model the receiver's key and value come from the key/value head
  it shares with others, ``kv_head = head // (n_heads / n_kv_heads)``, so the shared key
  changes for all of them, but only the receiver's output is let through); the layers above
  then run as usual to the logits.
- receiver = ``logits``: the final residual plus ``delta_s``, through the final norm and the
  unembedding (the sender's direct path).

Speed (one batched run, not one pass per sender): all senders of one receiver are stacked
along the batch (copy ``c`` of the examples carries sender ``c``), the pass restarts at the
receiver's layer from the base residual, attention runs through the fused kernel; a logits
receiver runs no block at all. The per-sender deltas are computed from the two cached runs.

Numbers are :func:`~headscope.circuits.tasks.normalised` (1 = clean metric, 0 = corrupted)
with a bootstrap interval over the examples; in the noising direction (the default: clean run,
corrupted sender) a path that matters pulls the value below 1, and ``effect = 1 - value`` is
the share of the clean - corrupted gap that this one path carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BadInput
from ..folded_weights import attn_post_norm
from ..head_labels import head_label, parse_head
from ..models.model import as_model, in_eval_mode
from ..results.patching_results import PathPatching
from ..settings import DEFAULT_MEMORY_GB
from .runs import RunCache, cache_run, copies, final_normed, metric_of_normed, pass_sizes, per_head_view
from .tasks import CircuitTask, clean_corrupt_gap, normalised_rows, raw_rows

INPUTS = ("q", "k", "v", "qkv")


@dataclass(frozen=True)
class Receiver:
    """Where a path ends: ``Receiver.logits()`` or a head's ``q``/``k``/``v``/``qkv`` input."""

    input: str  # "logits" or one of INPUTS
    layer: int | None = None
    head: int | None = None

    @classmethod
    def logits(cls) -> Receiver:
        return cls("logits")

    @property
    def label(self) -> str:
        """``logits`` or ``L18H6.k``."""
        return "logits" if self.input == "logits" else f"{head_label(int(self.layer), int(self.head))}.{self.input}"  # type: ignore[arg-type]

    def depth(self, n_layers: int) -> int:
        """The layer the path ends in (``n_layers`` for the logits): senders must sit below it."""
        return n_layers if self.input == "logits" else int(self.layer)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, spec: str | Receiver, n_layers: int | None = None, n_heads: int | None = None) -> Receiver:
        """``logits`` or ``L18H6.k`` (``q``, ``k``, ``v``, ``qkv``; ``18.6.k`` too), range-checked when the model's
        sizes are given; a :class:`Receiver` is checked and returned.

        >>> Receiver.parse("L18H6.k"), Receiver.parse("logits").label
        (Receiver(input='k', layer=18, head=6), 'logits')
        """
        if isinstance(spec, Receiver):
            return spec.check(n_layers, n_heads)
        if not isinstance(spec, str):
            raise BadInput(f"receiver {spec!r} is not logits or HEAD.INPUT", hint=_RECEIVER_HINT)
        s = spec.strip()
        if s.lower() == "logits":
            return cls.logits()
        head, _, which = s.rpartition(".")
        if which not in INPUTS or not head:
            raise BadInput(f"receiver {spec!r} is not logits or HEAD.INPUT", hint=_RECEIVER_HINT)
        l, h = parse_head(head, n_layers or ANY_SIZE, n_heads or ANY_SIZE)
        return cls(which, l, h)

    def check(self, n_layers: int | None, n_heads: int | None) -> Receiver:
        """This receiver, refused (:class:`BadInput`) unless it is the logits or a head's q/k/v/qkv input that
        exists in a model of ``n_layers`` x ``n_heads`` (a mistyped input used to patch nothing and read 0)."""
        if self.input == "logits":
            return self
        if self.input not in INPUTS:
            raise BadInput(
                f"receiver input {self.input!r} is not one of {', '.join(INPUTS)} or logits", hint=_RECEIVER_HINT
            )
        if self.layer is None or self.head is None:
            raise BadInput(f"receiver {self.input!r} names no head", hint=_RECEIVER_HINT)
        parse_head((self.layer, self.head), n_layers or ANY_SIZE, n_heads or ANY_SIZE)
        return self


_RECEIVER_HINT = "write e.g. L18H6.k (a head's query q, key k, value v or all three qkv) or logits"
ANY_SIZE = 10**6  # no model given: any layer and head number is taken (checked once the model is loaded)


@torch.no_grad()
def sender_deltas(model, base: RunCache, src: RunCache, senders: list[tuple[int, int]]) -> torch.Tensor:
    """``[len(senders), n_ex, n, d_model]``: each sender's output change in the residual, ``W_O[s] (z_src - z_base)``.

    Where a norm follows attention (``ln1_post``: Gemma 2/3), the residual receives that norm of the
    whole attention output, so the change is ``post(A + W_O[s] dz) - post(A)`` with ``A`` the base
    run's attention output at that layer: every other head stays at its base output, as the path asks.
    """
    bridge = as_model(model).bridge
    out = []
    for layer, head in senders:
        dz = torch.zeros_like(base.z[layer])
        dz[:, :, head] = src.z[layer][:, :, head] - base.z[layer][:, :, head]
        o = bridge.blocks[layer].attn.o
        flat = dz.reshape(*dz.shape[:2], -1)
        delta = o(flat) - o(torch.zeros_like(flat))  # the bias cancels: the head's share only
        post = attn_post_norm(bridge, layer)
        if post is not None:
            whole = o(base.z[layer].reshape(*dz.shape[:2], -1))
            delta = post(whole + delta) - post(whole)
        out.append(delta)
    return torch.stack(out)


def _kv_index(cfg, head: int, which: str) -> int:
    if which == "q":
        return head
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return head // (cfg.n_heads // n_kv)


def kv_head(model, head: int) -> int:
    """The key/value head a query head reads on a grouped-query model (itself otherwise)."""
    return _kv_index(as_model(model).bridge.cfg, head, "k")


def _input_hooks(bridge, layer: int, receivers: list[Receiver], resid: torch.Tensor, n_ex: int, base: RunCache):
    """Hooks for one restarted pass at ``layer``: copy ``c`` feeds ``resid[c]`` to receiver ``c``'s inputs only."""
    cfg = bridge.cfg
    block = bridge.blocks[layer]
    normed = block.ln1(resid)
    d_head = base.z[layer].shape[-1]
    new: dict[str, torch.Tensor] = {}
    for which in ("q", "k", "v"):
        if any(which in r.input for r in receivers):
            new[which] = per_head_view(getattr(block.attn, which)(normed), d_head)

    def feed(which):
        def hook(x, hook):
            x4 = per_head_view(x, d_head).clone()
            for c, r in enumerate(receivers):
                if which in r.input:
                    i = _kv_index(cfg, int(r.head), which)  # type: ignore[arg-type]
                    rows = slice(c * n_ex, (c + 1) * n_ex)
                    x4[rows, :, i] = new[which][rows, :, i]
            return x4.view(x.shape)

        return hook

    def only_receiver(z, hook):
        z4 = per_head_view(z, d_head)
        out = base.z[layer].repeat(len(receivers), 1, 1, 1).to(z4.dtype)
        for c, r in enumerate(receivers):
            rows = slice(c * n_ex, (c + 1) * n_ex)
            out[rows, :, r.head] = z4[rows, :, r.head]
        return out.view(z.shape)

    hooks = [(f"blocks.{layer}.attn.hook_{w}", feed(w)) for w in new]
    return hooks + [(f"blocks.{layer}.attn.hook_z", only_receiver)]


@torch.no_grad()
def path_metrics(
    model,
    task: CircuitTask,
    base: RunCache,
    src: RunCache,
    paths: list[tuple[tuple[int, int], Receiver]],
    max_memory_gb: float = DEFAULT_MEMORY_GB,
    fused: bool | None = None,
    progress: Callable | None = None,
) -> np.ndarray:
    """The metric per example ``[len(paths), n_ex]`` with each (sender, receiver) path patched from ``src`` into ``base``.

    Paths ending in the same layer share passes (stacked along the batch, ``max_memory_gb`` per pass).
    """
    bridge = as_model(model).bridge
    n_layers = bridge.cfg.n_layers
    n_ex, n_tok = task.clean.shape
    for s, r in paths:
        r.check(n_layers, bridge.cfg.n_heads)
        if s[0] >= r.depth(n_layers):
            raise BadInput(
                f"sender {head_label(*s)} is not below receiver {r.label}",
                hint="a path runs from an earlier layer to a later one",
            )
    per_pass = max(1, pass_sizes(bridge, n_tok, max_memory_gb) // n_ex)
    out = np.zeros((len(paths), n_ex))
    order = sorted(range(len(paths)), key=lambda i: paths[i][1].depth(n_layers))
    done = 0
    for s0 in range(0, len(order), per_pass):
        idx = [i for i in order[s0 : s0 + per_pass]]
        by_depth: dict[int, list[int]] = {}
        for i in idx:
            by_depth.setdefault(paths[i][1].depth(n_layers), []).append(i)
        for depth, group in by_depth.items():
            deltas = sender_deltas(bridge, base, src, [paths[i][0] for i in group]).flatten(0, 1)
            if depth == n_layers:
                normed = bridge.ln_final(base.resid_final.repeat(len(group), 1, 1) + deltas)
            else:
                resid = base.resid_pre[depth].repeat(len(group), 1, 1)
                hooks = _input_hooks(bridge, depth, [paths[i][1] for i in group], resid + deltas, n_ex, base)
                normed = final_normed(bridge, resid, depth, hooks, fused)
            vals = metric_of_normed(bridge, normed, copies(task, len(group))).view(len(group), n_ex).numpy()
            out[group] = vals
        done += len(idx)
        if progress:
            progress("path patching", done, len(paths))
    return out


@in_eval_mode
def path_patching(
    model,
    task: CircuitTask,
    senders: list[tuple[int, int]] | None,
    receiver: Receiver | str,
    direction: str = "noise",
    max_memory_gb: float = DEFAULT_MEMORY_GB,
    fused: bool | None = None,
    progress: Callable | None = None,
    caches: tuple[RunCache, RunCache] | None = None,
) -> PathPatching:
    """Every sender's path to ``receiver``, one batched run; normalised 1 = clean, 0 = corrupt, with intervals.

    ``receiver``: a :class:`Receiver` or its label (``"L18H6.k"``, ``"logits"``). ``senders``: (layer, head)
    pairs (default: every head below the receiver). ``direction``:
    "noise" (clean run, the sender's corrupted output along the path: Wang et al.'s form) or
    "denoise" (corrupted run, the sender's clean output).

    >>> t = headscope.circuits.induction_task(model, n_examples=3, seq_len=5)
    >>> pp = path_patching(model, t, None, Receiver("k", 1, 0))
    >>> len(pp.senders), pp.receiver
    (4, 'L1H0.k')
    """
    bridge = as_model(model).bridge
    cfg = bridge.cfg
    if direction not in ("noise", "denoise"):
        raise BadInput(f"unknown direction {direction!r}", hint="use noise or denoise")
    receiver = Receiver.parse(receiver, cfg.n_layers, cfg.n_heads)
    depth = receiver.depth(cfg.n_layers)
    senders = senders or [(l, h) for l in range(depth) for h in range(cfg.n_heads)]
    if not senders:
        raise BadInput(f"no sender head lies below {receiver.label}", hint="pick a receiver in a later layer")
    clean, corrupt = caches or (
        cache_run(bridge, task.clean, task, fused),
        cache_run(bridge, task.corrupt, task, fused),
    )
    base, src = (clean, corrupt) if direction == "noise" else (corrupt, clean)
    raw = path_metrics(bridge, task, base, src, [(s, receiver) for s in senders], max_memory_gb, fused, progress)
    return _path_result(
        task, raw, senders, [receiver.label] * len(senders), clean, corrupt, direction, bridge, receiver
    )


def _path_result(task, raw, senders, receivers, clean, corrupt, direction, bridge, receiver=None) -> PathPatching:
    cl, co = clean.metric.double().numpy(), corrupt.metric.double().numpy()
    means, low, high = normalised_rows(raw, cl, co, seed=task.seed or 0)
    change, c_low, c_high = raw_rows(raw, cl if direction == "noise" else co, seed=task.seed or 0)
    cfg = bridge.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    note = []
    if receiver is not None and receiver.input in ("k", "v", "qkv") and n_kv != cfg.n_heads:
        note.append(
            f"grouped-query model ({cfg.n_heads} query heads over {n_kv} key/value heads): "
            f"{receiver.label}'s keys/values come from key/value head {_kv_index(cfg, int(receiver.head), 'k')}, "
            "shared with its group; only the receiver's own output is let through"
        )
    return PathPatching(
        senders=[head_label(l, h) for l, h in senders],
        receivers=list(receivers),
        receiver=receiver.label if receiver is not None else "",
        direction=direction,
        metric=task.metric,
        task=task.name,
        n_examples=task.n_examples,
        values=means,
        low=low,
        high=high,
        clean_metric=float(clean.metric.double().numpy().mean()),
        corrupt_metric=float(corrupt.metric.double().numpy().mean()),
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        notes=list(task.notes) + note,
        change=change,
        change_low=c_low,
        change_high=c_high,
        gap=clean_corrupt_gap(cl, co, task.metric, seed=task.seed or 0),
    )


def paths_through(
    model,
    task: CircuitTask,
    paths: list[tuple[tuple[int, int], Receiver]],
    direction: str = "noise",
    max_memory_gb: float = DEFAULT_MEMORY_GB,
    fused: bool | None = None,
    progress: Callable | None = None,
    caches: tuple[RunCache, RunCache] | None = None,
    title: str = "",
) -> PathPatching:
    """Any list of (sender, receiver) paths, batched by receiver layer (e.g. one head through each later head)."""
    bridge = as_model(model).bridge
    clean, corrupt = caches or (
        cache_run(bridge, task.clean, task, fused),
        cache_run(bridge, task.corrupt, task, fused),
    )
    base, src = (clean, corrupt) if direction == "noise" else (corrupt, clean)
    raw = path_metrics(bridge, task, base, src, paths, max_memory_gb, fused, progress)
    res = _path_result(task, raw, [s for s, _ in paths], [r.label for _, r in paths], clean, corrupt, direction, bridge)
    res.receiver = title
    return res
