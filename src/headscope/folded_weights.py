"""Per-head weights in the shapes the circuit math wants, with the norms' gains folded in.

TransformerLens names: ``W_Q``/``W_K``/``W_V`` are ``[layer, head, d_model, d_head]``,
``W_O`` is ``[layer, head, d_head, d_model]``, ``W_E`` ``[d_vocab, d_model]``, ``W_U``
``[d_model, d_vocab]``. Two conventions are applied here, once, so no caller repeats them:

* **Norm gains folded.** A head reads ``norm(x) = x_hat * g (+ b)`` where ``x_hat`` is the
  centred (LayerNorm) or plain (RMSNorm) input divided by its scale. We fold ``g`` into the
  reading matrices (``W_Q, W_K, W_V`` by ``ln1``; ``W_U`` by ``ln_final``) and ``b`` into their
  biases, as TransformerLens's ``fold_ln`` does. What is left, division by the
  input-dependent scale, is what "freezing the normalisation scale" refers to elsewhere.
  ``g`` and ``b`` are the gain and bias the norm module *applies*, measured by running it on
  known inputs (:func:`norm_affine`), not its ``weight`` parameter: Gemma's RMSNorm multiplies
  by ``1 + weight``, other norms have no weight or an offset, and the measurement is right for
  all of them (a norm that is not ``x_hat * g + b`` is refused).
* **Post-attention norm's gain folded into W_O.** Some blocks (Gemma 2 and 3: TransformerLens's
  ``ln1_post``, Hugging Face's ``post_attention_layernorm``) pass the attention output through an
  RMSNorm before adding it to the residual: ``RMSNorm_post(sum_h z_h W_O^h + b_O)``. RMSNorm has no
  bias, so with its per-position scale ``s_post(p)`` (the RMS, with eps, of the whole pre-norm
  attention output) frozen at the run's value, head ``h`` writes ``(z_h W_O^h) * g_post / s_post(p)``
  and the heads' writes sum exactly to the normed output. ``W_O`` and ``b_O`` here include
  ``g_post`` (:attr:`HeadWeights.attn_post_norm` says so); ``s_post`` is a positive scalar per
  position that depends on the input, the same kind of factor as the pre-norms' scales, and is
  treated the same way: weight-only scores (copying, successor, copy suppression, OV rows) leave
  it out (it scales a head's whole output at a position, not one token against another), and
  activation-based numbers divide by it, read at ``blocks.{l}.ln1_post.hook_scale``
  (:func:`attn_post_scale_hook`). A post norm with a bias is refused (none is known).
* **Embedding as the residual receives it.** ``W_E`` is the token embedding the embedding
  module outputs (:func:`embedding_matrix`): Gemma multiplies the table by ``sqrt(d_model)``.
* **Grouped-query attention expanded.** Models such as Llama/SmolLM2 have fewer key/value
  heads than query heads; query head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``
  (Hugging Face's ``repeat_kv``). ``W_K``/``W_V`` are returned repeated to ``n_heads`` so
  every head has its own pair, and :attr:`HeadWeights.kv_head` records the sharing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BadInput


@dataclass
class HeadWeights:
    W_Q: torch.Tensor  # [L, H, d_model, d_head], ln1 gain folded in
    W_K: torch.Tensor  # [L, H, d_model, d_head], expanded over GQA groups
    W_V: torch.Tensor  # [L, H, d_model, d_head], expanded over GQA groups
    W_O: torch.Tensor  # [L, H, d_head, d_model]
    b_Q: torch.Tensor  # [L, H, d_head] (zeros where the model has no bias)
    b_K: torch.Tensor  # [L, H, d_head]
    b_V: torch.Tensor  # [L, H, d_head]
    b_O: torch.Tensor  # [L, d_model]
    W_E: torch.Tensor  # [d_vocab, d_model]
    W_U: torch.Tensor  # [d_model, d_vocab], ln_final gain folded in
    W_pos: torch.Tensor | None  # [n_ctx, d_model] for learned absolute positions, else None
    kv_head: list[int]  # query head -> key/value head
    norm: str  # "layernorm" or "rmsnorm"
    attn_scale: list[float] | None = None  # per layer: what q.k is multiplied by before the softmax
    attn_post_norm: bool = False  # W_O, b_O include the ln1_post gain; divide by blocks.{l}.ln1_post.hook_scale

    def score_scale(self, layer: int) -> float:
        """The factor the model multiplies ``q . k`` by in ``layer`` (its attention module's ``scaling``;
        ``1/sqrt(d_head)`` unless the model says otherwise, e.g. Gemma 2's ``query_pre_attn_scalar``)."""
        if self.attn_scale is not None:
            return self.attn_scale[layer]
        return self.W_Q.shape[-1] ** -0.5

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]


#: Size of the probes :func:`norm_affine` feeds a norm: large enough that its ``eps`` is lost in float32.
NORM_PROBE_SCALE = 1e3
#: A norm's output on a random probe may differ from ``x_hat * gain + bias`` by this much (relative to
#: the output's size) before :func:`norm_affine` refuses it as not an affine norm.
NORM_PROBE_TOLERANCE = 1e-4


def probe_tolerance(dtype: torch.dtype) -> float:
    """The relative tolerance of a probe whose output came back in ``dtype``: :data:`NORM_PROBE_TOLERANCE`,
    or a few rounding steps of ``dtype`` where it is coarser (a float16 LayerNorm rounds its output to
    about 5e-4 of its size, bfloat16 to about 4e-3: that is the model's own precision, not a norm of
    another form).

    >>> probe_tolerance(torch.float32), probe_tolerance(torch.float16), probe_tolerance(torch.bfloat16)
    (0.0001, 0.00390625, 0.03125)
    """
    return max(NORM_PROBE_TOLERANCE, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else NORM_PROBE_TOLERANCE


def _run_norm(module, x: torch.Tensor) -> torch.Tensor:
    """The module's output on ``x`` (float32 probes), in the dtype the module returned it in."""
    try:  # float32 probes: most norms compute in float32 and return the input's dtype
        return module(x)
    except RuntimeError:  # e.g. nn.LayerNorm with bfloat16 parameters wants its own dtype
        dtype = next(module.parameters()).dtype
        return module(x.to(dtype))


@torch.no_grad()
def norm_affine(component, d_model: int, kind: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gain and bias a norm module applies, ``norm(x) = x_hat * gain + bias``, measured by running it.

    ``kind``: ``"rmsnorm"`` (``x_hat = x / rms(x)``) or ``"layernorm"`` (centred first). The
    module is run on a mean-zero probe ``c * v`` (``v = +1, -1, ...``; ``x_hat = v`` for either
    kind, ``c`` = :data:`NORM_PROBE_SCALE` so ``eps`` does not count) and on zeros (``x_hat = 0``,
    so the output is the bias), and checked on a random probe. This reads what the model does,
    whatever its parameters are called: Gemma's ``1 + weight``, a norm without a weight, an offset.
    Returns ``(gain, bias)`` in float32, ``None`` for a gain of exactly one or a bias of exactly zero.
    Raises :class:`~headscope.errors.BadInput` for a norm that is not of that form.
    """
    module = getattr(component, "original_component", component)
    param = next(module.parameters(), None)
    device = param.device if param is not None and param.device.type != "meta" else torch.device("cpu")
    v = torch.ones(d_model, dtype=torch.float32)
    v[1::2] = -1
    if d_model % 2:  # odd width: the last entry makes the mean zero; a second probe measures it
        v[-1] = 0
    probes = [v, v.roll(1)] if d_model % 2 else [v]
    check = torch.randn(d_model, generator=torch.Generator().manual_seed(0))
    x = torch.stack([torch.zeros(d_model), *[p * NORM_PROBE_SCALE for p in probes], check * NORM_PROBE_SCALE])
    out = _run_norm(module, x.to(device))
    tolerance = probe_tolerance(out.dtype)
    y = out.float().cpu()
    bias = y[0]
    gain = torch.empty(d_model)
    for i, p in enumerate(probes):
        hat = p / p.square().mean().sqrt()
        sel = p != 0
        gain[sel] = ((y[1 + i] - bias) / hat)[sel]
    hat = check - check.mean() if kind == "layernorm" else check
    hat = hat / hat.square().mean().sqrt()
    err = float((y[-1] - (hat * gain + bias)).abs().max())
    if not err <= tolerance * (float(y[-1].abs().max()) + 1e-6):
        raise BadInput(
            f"{type(module).__name__} does not act as a {kind} with a gain and a bias "
            f"(off by {err:.3g} on a test input, computed in {str(out.dtype).removeprefix('torch.')}), "
            "so its weights cannot be folded",
            hint="this analysis supports norms of the form x_hat * gain + bias (LayerNorm, RMSNorm and their "
            "offset variants such as Gemma's); use a model with such norms",
        )
    return (None if bool((gain == 1).all()) else gain), (None if bool((bias == 0).all()) else bias)


@torch.no_grad()
def embedding_matrix(model) -> torch.Tensor:
    """``[d_vocab, d_model]`` float32 token embeddings as the embedding module outputs them.

    Usually ``W_E`` itself; Gemma's embedding multiplies it by ``sqrt(d_model)`` (measured here by
    running the module on a few tokens, so any such constant factor is found). Raises
    :class:`~headscope.errors.BadInput` where the module's output is not a multiple of ``W_E``.
    """
    W_E = model.W_E.detach().float()
    module = getattr(model.embed, "original_component", model.embed)
    ids = torch.linspace(0, W_E.shape[0] - 1, 16).long().to(model.W_E.device)
    raw = module(ids).detach()
    out = raw.float()
    rows = W_E[ids]
    scale = float((out * rows).sum() / rows.square().sum().clamp_min(1e-30))
    if not (out - scale * rows).abs().max() <= probe_tolerance(raw.dtype) * (float(out.abs().max()) + 1e-6):
        raise BadInput(
            f"the embedding module {type(module).__name__} does not output a multiple of W_E",
            hint="this analysis supports embeddings that are a table lookup times a constant",
        )
    return W_E if scale == 1.0 else W_E * scale


def _expand_kv(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    n_kv = w.shape[1]
    if n_kv == n_heads:
        return w
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot be grouped over {n_kv} key/value heads")
    return w.repeat_interleave(n_heads // n_kv, dim=1)


def _bias(model, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    try:
        b = getattr(model, name)
    except Exception:
        b = None
    if b is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return b.detach().float()


@torch.no_grad()
def norm_kind(cfg) -> str:
    """``"rmsnorm"`` or ``"layernorm"``: the norm a model's heads read through."""
    rms = getattr(cfg, "uses_rms_norm", False) or getattr(cfg, "normalization_type", "") in ("RMS", "RMSPre")
    return "rmsnorm" if rms else "layernorm"


def attn_post_scale_hook(layer: int) -> str:
    """Hook of the per-position scale of the norm after layer ``layer``'s attention (``[B, T, 1]``)."""
    return f"blocks.{layer}.ln1_post.hook_scale"


def mlp_write_hook(model, layer: int) -> str:
    """Hook of what layer ``layer``'s MLP adds to the residual: after its post norm (``ln2_post``) if any."""
    name = f"blocks.{layer}.ln2_post.hook_out"
    return name if name in model.hook_dict else f"blocks.{layer}.hook_mlp_out"


def attn_post_norm(model, layer: int):
    """Layer ``layer``'s norm after attention (``ln1_post``: Gemma 2/3, OLMo 2), or None where the block has none."""
    try:
        return getattr(model.blocks[layer], "ln1_post", None)
    except Exception:
        return None


def attention_scales(model) -> list[float]:
    """Per layer, the factor the model's attention module multiplies ``q . k`` by (``scaling`` in Hugging
    Face's modules), ``1/sqrt(d_head)`` where the module does not say. The QK decomposition checks the
    result against the model's own scores, so a module that scales some other way is caught there."""
    default = model.cfg.d_head**-0.5
    out = []
    for layer in range(model.cfg.n_layers):
        module = getattr(model.blocks[layer].attn, "original_component", None)
        value = getattr(module, "scaling", None)
        out.append(float(value) if isinstance(value, (int, float)) and value > 0 else default)
    return out


def _fold_post_norms(model, W_O: torch.Tensor, b_O: torch.Tensor, norm: str):
    """``W_O``, ``b_O`` with each post-attention norm's gain folded (copies), and whether the blocks have one."""
    cfg = model.cfg
    L = cfg.n_layers
    post = [attn_post_norm(model, layer) for layer in range(L)]
    if any(p is not None for p in post) and not all(p is not None for p in post):
        raise BadInput(
            "some blocks have a post-attention norm and some do not", hint="use a model with one block layout"
        )
    if post and post[0] is not None:
        W_O, b_O = W_O.clone(), b_O.clone()  # never scale the model's own tensors in place
    for layer, module in enumerate(post):
        if module is None:
            continue
        g, b = norm_affine(module, cfg.d_model, norm)
        if b is not None:
            raise BadInput(
                f"the post-attention norm of layer {layer} adds a bias, so the heads' outputs after it cannot be split",
                hint="this analysis supports post-attention norms without a bias (RMSNorm: Gemma 2, Gemma 3)",
            )
        if norm == "layernorm":  # a centring post norm: centre each head's write (linear, so it folds)
            W_O[layer] = W_O[layer] - W_O[layer].mean(-1, keepdim=True)
            b_O[layer] = b_O[layer] - b_O[layer].mean(-1, keepdim=True)
        if g is not None:
            W_O[layer] = W_O[layer] * g.to(W_O.device)
            b_O[layer] = b_O[layer] * g.to(W_O.device)

    return W_O, b_O, bool(post and post[0] is not None)


def head_weights(model) -> HeadWeights:
    """Extract float32 per-head weights from a TransformerBridge (norm gains folded, GQA expanded)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    W_Q = model.W_Q.detach().float()
    W_K = model.W_K.detach().float()
    W_V = model.W_V.detach().float()
    W_O = model.W_O.detach().float()
    n_kv = W_K.shape[1]
    d_head = W_Q.shape[-1]
    b_Q = _bias(model, "b_Q", (L, H, d_head), W_Q)
    b_K = _bias(model, "b_K", (L, n_kv, d_head), W_Q)
    b_V = _bias(model, "b_V", (L, n_kv, d_head), W_Q)
    b_O = _bias(model, "b_O", (L, W_O.shape[-1]), W_Q)
    if b_K.dim() == 3 and b_K.shape[1] != H:
        b_K, b_V = _expand_kv(b_K, H), _expand_kv(b_V, H)
    W_K, W_V = _expand_kv(W_K, H), _expand_kv(W_V, H)

    norm = norm_kind(cfg)
    for layer in range(L):
        g, b = norm_affine(model.blocks[layer].ln1, cfg.d_model, norm)
        if b is not None:  # bias of the norm flows through the reading matrices
            b = b.to(W_Q.device)
            b_Q[layer] += torch.einsum("d,hde->he", b, W_Q[layer])
            b_K[layer] += torch.einsum("d,hde->he", b, W_K[layer])
            b_V[layer] += torch.einsum("d,hde->he", b, W_V[layer])
        if g is not None:
            g = g.to(W_Q.device)[None, :, None]
            W_Q[layer] = W_Q[layer] * g
            W_K[layer] = W_K[layer] * g
            W_V[layer] = W_V[layer] * g

    W_O, b_O, post_folded = _fold_post_norms(model, W_O, b_O, norm)

    W_U = model.W_U.detach().float()
    g, _ = norm_affine(model.ln_final, cfg.d_model, norm)
    if g is not None:
        W_U = W_U * g.to(W_U.device)[:, None]
    W_pos = None
    if getattr(cfg, "positional_embedding_type", "standard") == "standard":
        try:
            W_pos = model.W_pos.detach().float()
        except Exception:
            W_pos = None
    group = H // n_kv
    return HeadWeights(
        W_Q=W_Q,
        W_K=W_K,
        W_V=W_V,
        W_O=W_O,
        b_Q=b_Q,
        b_K=b_K,
        b_V=b_V,
        b_O=b_O,
        W_E=embedding_matrix(model),
        W_U=W_U,
        W_pos=W_pos,
        kv_head=[h // group for h in range(H)],
        norm=norm,
        attn_scale=attention_scales(model),
        attn_post_norm=post_folded,
    )
