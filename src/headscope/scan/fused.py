"""Attention scores without the attention pattern: fused kernels plus a few entries from q and k.

Every attention score headscope defines reads a handful of pattern entries per query (a key
at a fixed offset, or the few keys that follow a copy of the query's token). An entry is

    A[b, h, i, j] = exp(q[b, h, i] . k[b, h, j] * scale - lse[b, h, i])

where ``lse`` is the row's logsumexp, which fused attention kernels compute anyway and can
return. So a forward pass through a fused kernel (no ``n x n`` tensor anywhere) plus ``q``,
``k`` and ``lse`` per layer gives every score exactly; nothing quadratic in ``n`` is kept.

How the pass is routed (TransformerLens 4.3): the bridge never calls the Hugging Face
attention function. ``PositionEmbeddingsAttentionBridge`` (Llama, SmolLM2, Qwen2, ...) and
``JointQKVAttentionBridge`` (GPT-2) each recompute attention themselves, matmul + softmax,
firing ``hook_attn_scores``/``hook_pattern``; switching ``config._attn_implementation``
changes nothing there. :func:`fused_attention` therefore patches, for the duration of a
pass, each layer's bridge instance:

- rotary bridges run the wrapped HF module's own ``forward`` (its q/k/v/o projections are
  TransformerLens ``LinearBridge`` s, so ``hook_q``/``hook_k``/``hook_v``/``hook_z`` still
  fire), which dispatches through ``ALL_ATTENTION_FUNCTIONS`` to :func:`fused_attention_forward`;
- joint-QKV bridges keep their own q/k/v split and output projection (``hook_z`` fires on
  ``o.hook_in``) and only their ``_reconstruct_attention`` calls the fused function.

The model config is switched to the registered name, with a mask builder of its own
(:func:`fused_causal_mask`) that builds nothing for a plain causal pass and refuses padding
(transformers would otherwise drop a padding mask silently for an unknown name).
``hook_resid_pre``/``hook_resid_post``, ``hook_q``/``hook_k``/``hook_v``/``hook_z`` keep firing;
``hook_attn_scores``, ``hook_pattern`` and ``hook_rot_q``/``hook_rot_k`` do not.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Protocol

import torch

from ..errors import BadInput
from ..models.model import HeadscopeModel

FUSED_NAME = "headscope_fused"
"""The name :func:`register_fused_attention` gives the function in transformers' registry."""


class OnAttention(Protocol):
    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, scale: float) -> None:
        """Receive one layer's rotated ``q`` ``[batch, head, n, d_head]``, ``k`` (expanded to the
        query heads, same shape), the row logsumexp ``lse`` ``[batch, head, n]`` (float32) and the
        score scale. Reduce at once; the tensors are freed after the call."""


class FusedUnsupported(BadInput):
    """The model's attention cannot be routed through the fused kernel (use the eager path)."""


# ---------------------------------------------------------------------------------------------
# The kernel


def _last_axis_dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its last axis has stride 1, else a contiguous copy.

    What the CUDA memory-efficient kernel requires: it reads the batch, head and position
    strides as they are (as ``F.scaled_dot_product_attention`` hands it the same transposed
    views), so the ``[batch, n, head, d]`` projections need no copy per layer.
    """
    return x if x.stride(-1) == 1 else x.contiguous()


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention ``[batch, head, n, d]`` and the row logsumexp ``[batch, head, n]`` (float32).

    ``k`` and ``v`` must already have as many heads as ``q``. One fused kernel: no ``n x n``
    tensor is allocated (the kernels tile the keys).
    """
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)[:2]
    elif q.device.type == "cuda":
        # The memory-efficient kernel takes float32 as well as half types and returns the lse
        # (padded on the query axis to a multiple of its block size on some builds: slice).
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            _last_axis_dense(q), _last_axis_dense(k), _last_axis_dense(v), None, True, 0.0, True, scale=scale
        )[:2]
        lse = lse[..., : q.shape[-2]]
    else:
        raise FusedUnsupported(
            f"no fused attention kernel with a logsumexp for device {q.device.type!r}", hint="use --attention eager"
        )
    return out, lse.float()


# Callbacks per routed model, found from the HF attention module the function receives, so
# two models routed at once (nested blocks) never see each other's layers.
_callbacks: dict[int, list[OnAttention]] = {}  # id(model) -> callbacks
_owner: dict[int, int] = {}  # id(HF attention module) -> id(model)


def _expand_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[batch, kv_head, n, d]`` -> ``[batch, n_heads, n, d]``, each kv head repeated per group."""
    n_rep = n_heads // x.shape[1]
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def fused_attention_forward(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """An attention function in transformers' ``AttentionInterface`` signature.

    ``query`` ``[batch, head, n, d]``, ``key``/``value`` ``[batch, kv_head, n, d]`` (rotated).
    Returns ``([batch, n, head, d], None)`` like transformers' sdpa function, and hands
    ``q``, ``k`` (expanded), ``lse`` and the scale to the callbacks of :func:`fused_attention`.
    Only plain causal self-attention without padding is accepted.
    """
    if attention_mask is not None:
        raise FusedUnsupported(
            "fused attention got an attention mask (padding or a custom mask)",
            hint="headscope's fused path takes unpadded causal inputs; use --attention eager",
        )
    if dropout:
        raise FusedUnsupported("fused attention does not apply dropout", hint="put the model in eval mode")
    for name in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise FusedUnsupported(f"fused attention does not handle {name}", hint="use --attention eager")
    if query.shape[-2] != key.shape[-2]:
        raise FusedUnsupported(
            "fused attention got a key/value cache (queries and keys differ in length)",
            hint="run without past_key_values",
        )
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
    key = _expand_kv(key, query.shape[1])
    value = _expand_kv(value, query.shape[1])
    out, lse = attention_with_lse(query, key, value, scale)
    layer = getattr(module, "layer_idx", None)
    for cb in _callbacks.get(_owner.get(id(module)), ()):  # type: ignore[arg-type]
        cb(layer, query, key, lse, scale)  # type: ignore[arg-type]
    return out.transpose(1, 2).contiguous(), None


def fused_causal_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset=0,
    kv_offset=0,
    mask_function=None,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> None:
    """The mask builder transformers calls for :data:`FUSED_NAME`: plain causal -> ``None``, else refuse.

    Registering one matters: for an attention name with no mask builder transformers drops
    the caller's 2D padding mask silently (``masking_utils._preprocess_mask_arguments``), so a
    padded batch would run unmasked. Here padding, packed sequences, sliding windows and
    cache offsets raise instead; the kernel applies the causal mask itself.
    """
    from transformers.masking_utils import causal_mask_function

    if attention_mask is not None and not bool(attention_mask.all()):
        raise FusedUnsupported(
            "fused attention got a padding mask (some positions masked out)",
            hint="headscope's fused path takes unpadded causal inputs; use --attention eager",
        )
    if mask_function is not None and mask_function is not causal_mask_function:
        raise FusedUnsupported(
            "fused attention got a mask that is not plain causal (sliding window or packed sequences)",
            hint="use --attention eager",
        )
    if q_length != kv_length or int(q_offset) != 0 or int(kv_offset) != 0:
        raise FusedUnsupported(
            "fused attention got a key/value cache (keys and queries differ)", hint="run without past_key_values"
        )


def register_fused_attention() -> str:
    """Register :func:`fused_attention_forward` and its mask builder with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if ALL_ATTENTION_FUNCTIONS.get(FUSED_NAME) is not fused_attention_forward:
        AttentionInterface.register(FUSED_NAME, fused_attention_forward)
    AttentionMaskInterface.register(FUSED_NAME, fused_causal_mask)
    return FUSED_NAME


# ---------------------------------------------------------------------------------------------
# Routing a TransformerBridge through it


def _bridge_classes():
    from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import (
        JointQKVAttentionBridge,
    )
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    return PositionEmbeddingsAttentionBridge, JointQKVAttentionBridge


_dispatches: dict[type, bool] = {}


def _hf_dispatches(module: torch.nn.Module) -> bool:
    """Whether the HF attention module's forward looks its attention function up by name."""
    cls = type(module)
    if cls not in _dispatches:
        try:
            src = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            src = ""
        _dispatches[cls] = "ALL_ATTENTION_FUNCTIONS" in src and "_attn_implementation" in src
    return _dispatches[cls]


def fused_unsupported_reason(model) -> str | None:
    """Why ``model``'s attention cannot run through the fused kernel, or ``None`` if it can."""
    model = model.bridge if isinstance(model, HeadscopeModel) else model
    try:
        rotary_cls, joint_cls = _bridge_classes()
    except ImportError as exc:  # a TransformerLens without these bridges
        return f"TransformerLens has no attention bridge headscope can route ({exc})"
    cfg = model.cfg
    if str(cfg.device).split(":")[0] not in ("cpu", "cuda"):
        return f"no fused kernel with a logsumexp on device {cfg.device}"
    for flag in ("use_attn_result", "use_split_qkv_input", "use_attn_in"):
        if getattr(cfg, flag, False):
            return f"cfg.{flag} is set (it needs the bridge's own attention)"
    blocks = getattr(model, "blocks", None)
    if not blocks:
        return "the model has no blocks stack"
    for l, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        hf = getattr(attn, "original_component", None)
        if hf is None:
            return f"layer {l} has no attention bridge"
        if getattr(hf, "is_cross_attention", False):
            return f"layer {l} is cross-attention"
        if type(attn) is rotary_cls:
            if not _hf_dispatches(hf):
                return f"{type(hf).__name__} does not dispatch through transformers' AttentionInterface"
            for attr in ("attn_logit_softcapping", "sinks", "sliding_window"):
                if getattr(hf, attr, None) is not None:
                    return f"{type(hf).__name__} uses {attr}"
            if getattr(hf, "layer_idx", None) != l:
                return f"layer {l}'s attention module reports layer_idx {getattr(hf, 'layer_idx', None)}"
        elif type(attn) is joint_cls:
            if getattr(hf, "layer_idx", None) != l:
                return f"layer {l}'s attention module reports layer_idx {getattr(hf, 'layer_idx', None)}"
        else:
            return f"{type(attn).__name__} recomputes attention in a way headscope cannot route"
    return None


def fused_supported(model) -> bool:
    return fused_unsupported_reason(model) is None


def _joint_qkv_reconstruct(bridge, q, k, v, **kwargs):
    """``JointQKVAttentionBridge._reconstruct_attention`` with the fused kernel (GPT-2 route).

    Same head split, scale and output projection (``hook_z`` fires on ``o.hook_in``) as the
    bridge's own method; only the matmul + softmax becomes :func:`fused_attention_forward`.
    """
    cfg = bridge.config
    n_heads = cfg.n_heads
    n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    q, k, v, batch, n, d_head = bridge._reshape_qkv_to_heads(q, k, v, n_heads, n_kv)
    # A prefill cache (HF creates one unless use_cache=False) is filled like the bridge does;
    # a cache holding earlier positions makes keys longer than queries, which is refused below.
    k, v = bridge._update_kv_cache(k, v, **kwargs)
    scale = d_head**-0.5
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) and bridge._layer_idx is not None:
        scale /= float(bridge._layer_idx + 1)
    out, _ = fused_attention_forward(bridge.original_component, q, k, v, kwargs.get("attention_mask"), scaling=scale)
    out = out.reshape(batch, n, n_heads * d_head)
    return bridge._apply_output_projection(out), None


def _hooked(*points) -> bool:
    """Whether any of the hook points has a hook (TransformerLens's own lists or torch's)."""
    return any(p.fwd_hooks or p.bwd_hooks or p._forward_hooks or p._backward_hooks for p in points)


def _lean_norm_forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
    """A norm bridge's forward that runs the HF module alone while nothing hooks its scale or output.

    TransformerLens 4.3's ``NormalizationBridge`` on its native path computes the scale and the
    normalised input for its two hook points on every call, then returns the HF module's own
    output whenever no hook changed them. Unhooked, those are discarded: skipping them returns
    the same tensor (the HF module's), without a second norm per call (61 a SmolLM2 pass).
    """
    if _hooked(self.hook_scale, self.hook_normalized):
        return type(self).forward(self, hidden_states, **kwargs)
    x = self.hook_in(hidden_states)
    result = self.original_component(x)
    return self.hook_out(result if result.dtype == x.dtype else result.to(x.dtype))


def _lean_norms(model) -> list[torch.nn.Module]:
    """The norm bridges of ``model`` whose forward :func:`_lean_norm_forward` may stand in for."""
    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge

    return [
        m
        for m in model.modules()
        if isinstance(m, NormalizationBridge)
        and type(m).forward is NormalizationBridge.forward
        and m.use_native_layernorm_autograd
        and m.original_component is not None
    ]


@contextlib.contextmanager
def fused_attention(model, on_attention: OnAttention | None = None) -> Iterator[None]:
    """Run ``model`` (a TransformerBridge) through the fused kernel inside the block.

    ``on_attention(layer, q, k, lse, scale)`` is called once per layer per forward pass (see
    :class:`OnAttention`). Norms that nothing hooks run the HF module alone
    (:func:`_lean_norm_forward`: the same output). Raises :class:`FusedUnsupported` (with the reason) if the model
    cannot be routed; everything is restored on exit, also after an error.

    >>> with fused_attention(model, on_attention=reduce):      # doctest: +SKIP
    ...     logits = model(tokens, use_cache=False)
    """
    model = model.bridge if isinstance(model, HeadscopeModel) else model  # one key per bridge, wrapped or not
    callbacks = _callbacks.get(id(model))
    if callbacks is not None:  # re-entrant: an outer block already routed this model
        callbacks.extend([on_attention] if on_attention else [])
        try:
            yield
        finally:
            if on_attention is not None and on_attention in callbacks:
                callbacks.remove(on_attention)
        return
    reason = fused_unsupported_reason(model)
    if reason:
        raise FusedUnsupported(
            f"fused attention is not available for this model: {reason}", hint="use --attention eager"
        )
    from transformer_lens.model_bridge.generalized_components.attention import (
        AttentionBridge,
    )

    name = register_fused_attention()
    rotary_cls, _ = _bridge_classes()
    hf_model = model.original_model
    configs = {
        id(c): c
        for c in [hf_model.config]
        + [b.attn.original_component.config for b in model.blocks if hasattr(b.attn.original_component, "config")]
    }
    saved_impl = {key: c._attn_implementation for key, c in configs.items()}
    patched: list[tuple[torch.nn.Module, str]] = []
    owned = [id(b.attn.original_component) for b in model.blocks]
    try:
        _callbacks[id(model)] = [on_attention] if on_attention else []
        for c in configs.values():
            c._attn_implementation = name
        for block in model.blocks:
            attn = block.attn
            if type(attn) is rotary_cls:
                # The plain AttentionBridge forward: hook_in -> HF module forward -> hook_out.
                # object.__setattr__: the bridge's own __setattr__ forwards unknown names to
                # the wrapped HF module, which would patch LlamaAttention.forward instead.
                object.__setattr__(attn, "forward", AttentionBridge.forward.__get__(attn))
                patched.append((attn, "forward"))
            else:
                object.__setattr__(attn, "_reconstruct_attention", _joint_qkv_reconstruct.__get__(attn))
                patched.append((attn, "_reconstruct_attention"))
        for norm in _lean_norms(model):
            object.__setattr__(norm, "forward", _lean_norm_forward.__get__(norm))
            patched.append((norm, "forward"))
        _owner.update(dict.fromkeys(owned, id(model)))
        yield
    finally:
        _callbacks.pop(id(model), None)
        for key in owned:
            _owner.pop(key, None)
        for module, attr in patched:
            module.__dict__.pop(attr, None)
        for key, c in configs.items():
            c._attn_implementation = saved_impl[key]


# ---------------------------------------------------------------------------------------------
# How many sequences per fused pass


def fused_chunk_size_for(
    n_tokens: int,
    d_model: int,
    d_mlp: int,
    d_vocab: int,
    batch: int,
    max_memory_gb: float,
    n_layers: int = 0,
    n_heads: int = 0,
) -> int:
    """Sequences per fused forward pass so that the logits and one layer's activations fit ``max_memory_gb``.

    Per sequence, float32: the logits and the loss's float view of a slice (``2 n vocab``), a
    layer's working set (residual, q/k/v/out, the expanded k/v, the MLP hidden: about
    ``12 d_model + 3 d_mlp`` floats per position) and the direct-logit reduction's per-position
    state (target directions in float64 and float32, one layer's read-out, the per-head
    effects: ``4 d_model + 2 n_layers n_heads``). No ``n^2`` term: the kernel tiles the keys
    and the scores read ``O(n)`` entries per head. The logits term is an upper bound: where the
    scan unembeds a slice at a time (:func:`~headscope.scan.losses.normed_output`) it holds one
    slice of at most 128 MB, not ``n x vocab`` floats per sequence.
    """
    per_seq = 4 * n_tokens * (2 * d_vocab + 16 * d_model + 3 * d_mlp + 2 * n_layers * n_heads)
    return max(1, min(batch, int(max_memory_gb * 2**30 // per_seq)))
