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
(transformers would otherwise drop a padding mask silently for an unknown name) and sliding
windows shorter than the sequence (:func:`sliding_windows` reads each layer's window the way
transformers applies it; "auto" takes eager for those before any pass: :func:`fused_unsupported_reason`).
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


WINDOW_HINT = "use --attention eager (or --attention auto, which picks eager for such models)"
"""The hint when a pass finds a mask the kernel cannot apply (a sliding window shorter than the sequence)."""


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
    for name in ("softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise FusedUnsupported(f"fused attention does not handle {name}", hint="use --attention eager")
    window = kwargs.get("sliding_window")
    if window is not None and int(window) < key.shape[-2]:
        raise FusedUnsupported(
            f"fused attention got a sliding window of {int(window)} tokens, shorter than the "
            f"{key.shape[-2]}-token sequence",
            hint=WINDOW_HINT,
        )
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
    padded batch would run unmasked. Here padding, packed sequences, sliding windows shorter
    than the sequence and cache offsets raise instead; the kernel applies the causal mask
    itself. A sliding window at least as long as the sequence (Mistral's 4096 on a shorter
    text) keeps every causal entry, so it passes as plain causal.
    """
    from transformers.masking_utils import causal_mask_function

    if attention_mask is not None and not bool(attention_mask.all()):
        raise FusedUnsupported(
            "fused attention got a padding mask (some positions masked out)",
            hint="headscope's fused path takes unpadded causal inputs; use --attention eager",
        )
    if q_length != kv_length or int(q_offset) != 0 or int(kv_offset) != 0:
        raise FusedUnsupported(
            "fused attention got a key/value cache (keys and queries differ)", hint="run without past_key_values"
        )
    if mask_function is None or mask_function is causal_mask_function:
        return
    window = kwargs.get("local_size")
    if window is not None and kwargs.get("allow_is_causal_skip", False) and _window_is_causal(mask_function, kv_length):
        return  # a sliding window at least as long as the sequence: every causal key is inside it
    if window is not None and int(window) < kv_length:
        raise FusedUnsupported(
            f"fused attention got a sliding window of {int(window)} tokens, shorter than the {kv_length}-token sequence",
            hint=WINDOW_HINT,
        )
    raise FusedUnsupported(
        "fused attention got a mask that is not plain causal (packed sequences or a custom mask)",
        hint=WINDOW_HINT,
    )


def _window_is_causal(mask_function, n: int) -> bool:
    """Whether ``mask_function`` keeps every causal entry of an ``n``-token sequence.

    Called for transformers' sliding-window masks only (``allow_is_causal_skip`` set: no overlay,
    no packing), which keep ``kv > q - window``; the entry that goes first as the window shrinks
    is the last query's first key, so that one entry decides (``window >= n``).
    """
    zero, last = torch.tensor(0), torch.tensor(n - 1)
    return bool(mask_function(zero, zero, last, zero))


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


def _model_config(model):
    hf = getattr(model, "original_model", None)
    return getattr(hf, "config", None)


def sliding_windows(model) -> list[int | None]:
    """Each layer's sliding attention window in tokens (``None``: the layer attends to every earlier token).

    Read the way transformers applies it: from the attention module's own ``sliding_window``
    where it has one (Qwen2, Qwen3, Gemma2/3, Cohere2, ...: set per layer from
    ``config.layer_types``, ``None`` on full-attention layers and where ``use_sliding_window`` is
    off), else from the config (Mistral, Mixtral, Phi-3, Starcoder2 pass ``config.sliding_window``
    to every layer at forward time; a ``layer_types`` entry of ``full_attention`` exempts a layer).
    """
    model = model.bridge if isinstance(model, HeadscopeModel) else model
    config = _model_config(model)
    cfg_window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    out: list[int | None] = []
    for l, block in enumerate(getattr(model, "blocks", None) or []):
        hf = getattr(getattr(block, "attn", None), "original_component", None)
        if hf is not None and hasattr(hf, "sliding_window"):
            window = hf.sliding_window
        elif layer_types is not None and l < len(layer_types) and layer_types[l] != "sliding_attention":
            window = None
        else:
            window = cfg_window
        out.append(int(window) if isinstance(window, (int, float)) and not isinstance(window, bool) else None)
    return out


def _context_length(model) -> int | None:
    """The longest sequence the model takes (its position table), or ``None`` if it does not say."""
    config = _model_config(model)
    for source, name in ((config, "max_position_embeddings"), (getattr(model, "cfg", None), "n_ctx")):
        value = getattr(source, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def window_reason(model, n_tokens: int | None = None) -> str | None:
    """Why a sliding window keeps ``n_tokens``-token sequences off the fused kernel, or ``None``.

    A window at least as long as the sequence masks nothing a causal mask keeps (it is plain
    causal), so only a shorter one is a reason. ``n_tokens=None``: the length is not known, so
    the longest sequence the model takes (``max_position_embeddings``) stands in for it.
    """
    model = model.bridge if isinstance(model, HeadscopeModel) else model
    length = n_tokens if n_tokens is not None else _context_length(model)
    for l, window in enumerate(sliding_windows(model)):
        if window is None:
            continue
        if length is None:
            return f"layer {l} attends over a sliding window of {window} tokens and the sequence length is not known"
        if window < length:
            what = f"{length}-token sequences" if n_tokens is not None else f"the {length} positions the model takes"
            return f"layer {l} attends over a sliding window of {window} tokens, shorter than {what}"
    return None


def fused_unsupported_reason(model, n_tokens: int | None = None) -> str | None:
    """Why ``model``'s attention cannot run through the fused kernel on ``n_tokens``-token sequences, or ``None``.

    ``n_tokens`` matters only for a model with a sliding window (:func:`window_reason`); without
    it the model's longest sequence stands in (so "auto" never picks a path that fails later).
    """
    reason = _structure_reason(model)
    return reason if reason is not None else window_reason(model, n_tokens)


def _structure_reason(model) -> str | None:
    """What in the model's attention modules keeps it off the fused kernel, whatever the sequence length."""
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
            for attr in ("attn_logit_softcapping", "sinks"):
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


def fused_supported(model, n_tokens: int | None = None) -> bool:
    """Whether "auto" takes the fused kernel for ``model`` on ``n_tokens``-token sequences (:func:`fused_unsupported_reason`)."""
    return fused_unsupported_reason(model, n_tokens) is None


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
    reason = _structure_reason(model)  # a sliding window is checked per pass, where the length is known
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
