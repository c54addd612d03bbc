"""The direct-logit reduction of a forward pass: how much each head writes the next token's logit.

The maths (final norm scale frozen, centred logits) is described in :mod:`headscope.logits.dla`,
which attributes one text; here are the pieces a pass needs, so the induction scan can reduce
its own pass to each head's direct effect on first-repeat and later-repeat targets
(:func:`repeat_direct_effects`) without another forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..folded_weights import HeadWeights, attn_post_scale_hook, head_weights, mlp_write_hook, norm_affine
from ..hooks import act_name
from ..scores.layout import RepeatLayout, first_repeat_targets, later_repeat_targets


@dataclass
class Unembedding:
    """What turns a final residual into centred logits, with the final norm's gain folded in."""

    W_U: torch.Tensor  # [d_model, d_vocab] the model's own unembedding (a view, no copy), its dtype
    gain: torch.Tensor | None  # [d_model] ln_final gain, folded into the columns gathered (None: no gain)
    W_U_mean: torch.Tensor  # [d_model] float64, mean over the vocabulary of the gain-folded W_U
    logit_bias: torch.Tensor  # [d_vocab] float64, (b_f W_U_raw + b_U), centred over the vocabulary
    centre: bool  # LayerNorm: project directions onto the mean-zero subspace

    def directions(self, targets: torch.Tensor) -> torch.Tensor:
        """``[..., d_model]`` centred unembedding direction ``u`` for each target id in ``targets [...]``."""
        cols = self.W_U[:, targets.reshape(-1)].double()  # [d_model, N]: only these columns in float64
        if self.gain is not None:
            cols = cols * self.gain.double()[:, None]
        u = cols.T - self.W_U_mean  # [N, d_model]
        if self.centre:
            u = u - u.mean(-1, keepdim=True)
        return u.reshape(*targets.shape, -1)


@torch.no_grad()
def unembedding(model, w: HeadWeights | None = None) -> Unembedding:
    """The final norm + unembedding of ``model`` (a TransformerBridge) in the form the attribution needs."""
    w = w or head_weights(model)
    # The model's own W_U (a view) and the final norm's gain, folded into the columns directions()
    # gathers: no folded or float64 copy of W_U (SmolLM2: 113 MB / 226 MB) is held through a pass.
    # The gain and bias the final norm applies, measured (Gemma's is 1 + weight): folded_weights.norm_affine.
    W_U = model.W_U.detach()
    gain, b_f = norm_affine(model.ln_final, W_U.shape[0], w.norm)
    gain = None if gain is None else gain.to(W_U.device)
    bias = torch.zeros(W_U.shape[1], dtype=torch.float64, device=W_U.device)
    if b_f is not None:
        b_f = b_f.to(W_U.device)  # LayerNorm's bias goes through the raw (unfolded) W_U
        step = max(1, (1 << 22) // W_U.shape[0])
        for c in range(0, W_U.shape[1], step):  # float64 product, a few columns at a time
            bias[c : c + step] += b_f.double() @ W_U[:, c : c + step].double()
    try:
        b_U = model.b_U
    except Exception:  # the bridge raises for models without an unembedding bias
        b_U = None
    if b_U is not None:
        bias += b_U.detach().double()
    mean = _row_sums_f64(W_U[None])[0] / W_U.shape[1]  # [d_model] float64, a few rows at a time
    if gain is not None:
        mean = mean * gain.double()
    return Unembedding(W_U=W_U, gain=gain, W_U_mean=mean, logit_bias=bias - bias.mean(), centre=w.norm == "layernorm")


@dataclass
class DirectEffects:
    """Raw output of :func:`direct_effects` for a batch: numpy arrays, positions ``0..T-2``.

    ``heads [B, P, L, H]``; ``components[name] [B, P]`` (embed, pos_embed, MLP{l}, attn_bias,
    unembed_bias, float_error); ``logit [B, P]`` their total; ``model_logit [B, P]`` the
    model's own centred logit of the target; ``scale [B, P]`` the frozen final-norm scale.
    """

    heads: np.ndarray
    components: dict[str, np.ndarray]
    logit: np.ndarray
    model_logit: np.ndarray
    scale: np.ndarray


class DirectPass:
    """Hooks that reduce one forward pass over ``tokens [B, T]`` to direct effects, and the final step.

    Position ``p`` (``0..T-2``) is scored on its actual next token ``tokens[:, p + 1]``.
    Every hook reduces its activation to ``[B, P(, H)]`` numbers the moment it fires (the
    target directions are known before the pass), so nothing of size ``[pos, d_model]`` per
    head is kept; only the final scale divides at the end. :attr:`hooks` can join other
    hooks in a pass someone else runs (e.g. the induction scan's); then call :meth:`finish`
    with that pass's logits.
    """

    def __init__(
        self, model, tokens: torch.Tensor, w: HeadWeights, ue: Unembedding, head_dtype: torch.dtype = torch.float64
    ):
        # head_dtype: precision of the per-head products (B x P x H x d_head x d_model multiply-adds per
        # layer, the bulk of the cost); float32 in the scan's pass (~1e-6 relative), float64 for one text.
        self.w, self.ue = w, ue
        L, H = w.n_layers, w.n_heads
        device = w.W_U.device
        self.tokens = tokens.to(device)
        self.u = ue.directions(self.tokens[:, 1:])  # [B, P, d_model] float64
        self.W_O = w.W_O.to(head_dtype)  # [L, H, d_head, d_model]
        self.u_heads = self.u.to(head_dtype)
        self.head_raw = torch.zeros(*self.u.shape[:2], L, H, dtype=torch.float64, device=device)
        self.raw: dict[str, torch.Tensor] = {}  # component -> [B, P] before division by the scale
        self.final: dict[str, torch.Tensor] = {}
        hooks = [(act_name("z", l), self._on_z(l)) for l in range(L)]
        hooks.append(("hook_embed", self._on_vector("embed")))
        if w.W_pos is not None and "hook_pos_embed" in model.hook_dict:
            hooks.append(("hook_pos_embed", self._on_vector("pos_embed")))
        hooks += [(mlp_write_hook(model, l), self._on_vector(f"MLP{l}")) for l in range(L)]  # after ln2_post
        self.post: dict[int, torch.Tensor] = {}  # layer -> [B, P] frozen post-attention norm scale
        if w.attn_post_norm:
            hooks += [(attn_post_scale_hook(l), self._on_post(l)) for l in range(L)]
        hooks += [("ln_final.hook_in", self._on_final("ln_final.hook_in"))]
        hooks += [("ln_final.hook_scale", self._on_final("ln_final.hook_scale"))]
        self.hooks = hooks

    def _dot(self, t: torch.Tensor) -> torch.Tensor:  # [B, T, d_model] -> [B, P]
        return (t[:, :-1].double() * self.u).sum(-1)

    def _on_z(self, layer: int):
        def hook(z, hook):  # z: [B, T, H, d_head], the input of the output projection
            read = torch.einsum("hed,bpd->bphe", self.W_O[layer], self.u_heads)  # what each head's z must align with
            self.head_raw[:, :, layer] = (z[:, :-1].to(read.dtype) * read).sum(-1).double()

        return hook

    def _on_vector(self, name: str):
        def hook(t, hook):
            self.raw[name] = self._dot(t)

        return hook

    def _on_post(self, layer: int):
        def hook(t, hook):  # [B, T, 1]
            self.post[layer] = t[:, :-1, 0].double()

        return hook

    def _on_final(self, name: str):  # keyed by the name asked for: hook.name can be an alias
        def hook(t, hook):
            self.final[name] = t.detach()

        return hook

    def finish(self, logits: torch.Tensor) -> DirectEffects:
        """Divide by the frozen scale, add the biases and the rounding term; ``logits [B, T, vocab]``."""
        target = self.tokens[:, 1:]
        lg = logits[:, :-1]
        model_logit = lg.gather(-1, target[..., None])[..., 0].double() - _row_sums_f64(lg) / lg.shape[-1]
        scale = self.final["ln_final.hook_scale"][:, :-1, 0].double()  # [B, P]
        comps: dict[str, torch.Tensor] = {k: self.raw[k] for k in ("embed", "pos_embed") if k in self.raw}
        comps.update({f"MLP{l}": self.raw[f"MLP{l}"] for l in range(self.w.n_layers)})
        head_raw = self.head_raw
        if self.w.attn_post_norm:  # each layer's writes after its post norm: W_O holds g_post, divide by s_post
            post = torch.stack([self.post[l] for l in range(self.w.n_layers)], -1)  # [B, P, L]
            head_raw = head_raw / post[..., None]
            if self.w.b_O.abs().max() > 0:
                comps["attn_bias"] = ((self.u @ self.w.b_O.double().T) / post).sum(-1)
        else:
            b_O = self.w.b_O.double().sum(0)  # [d_model]: every layer's output bias, one vector
            if b_O.abs().max() > 0:
                comps["attn_bias"] = (self.u * b_O).sum(-1)
        total = self._dot(self.final["ln_final.hook_in"])
        comps["float_error"] = total - head_raw.sum((2, 3)) - sum(comps.values())
        heads = head_raw / scale[..., None, None]
        comps = {k: v / scale for k, v in comps.items()}
        comps["unembed_bias"] = self.ue.logit_bias[target]  # added after the norm: not divided
        order = [k for k in comps if k != "float_error"] + ["float_error"]  # rounding last, for display
        comps_np = {k: comps[k].cpu().numpy() for k in order}
        heads_np = heads.cpu().numpy()
        return DirectEffects(
            heads=heads_np,
            components=comps_np,
            logit=heads_np.sum((2, 3)) + sum(comps_np.values()),
            model_logit=model_logit.cpu().numpy(),
            scale=scale.cpu().numpy(),
        )


KEEP_BYTES = 128 << 20
"""The most :class:`HeadDirectPass` keeps of ``z`` for one reduction after the pass (``keep=True``):
enough for short inputs, where the per-layer operations are what a GPU waits on (SmolLM2 at
10 x 101 tokens keeps 68 MB), not for long ones, where they are not."""


class HeadDirectPass:
    """The scan's direct-logit reduction: each head's effect at the positions the scores read, nothing else.

    :class:`DirectPass` attributes a text completely (every component, every position, the
    model's own logit to check the sum). The scan's pass scores only read each head's effect
    at ``positions`` (``p`` predicts ``tokens[:, p + 1]``), so this computes only that, once:

    - a head's read-out direction ``W_O[l, h] u_t`` depends only on the target token ``t``, so it
      is computed once per *distinct* target of the chunk (on ``[BOS] + r + r`` each token is the
      target of a first-repeat and of a later-repeat position: half the products), as one
      ``[targets, d_model] x [d_model, heads * d_head]`` product per layer;
    - only ``hook_z`` (at the counted positions) and the final norm's scale are hooked (and, where
      blocks have a post-attention norm, its scale: :attr:`~headscope.folded_weights.HeadWeights.attn_post_norm`).

    With ``keep=True`` (the scan's route on a GPU) each layer's hook only keeps ``z`` at those
    positions and :meth:`heads` reduces every layer at once: one gather a layer instead of six
    operations, for ``layers x len(positions) x heads x d_head`` floats held until the end (kept
    only while that is at most :data:`KEEP_BYTES`; per layer beyond it).

    Same numbers as :attr:`DirectEffects.heads` at those positions (float32 products, float64 sums).
    """

    def __init__(
        self, tokens: torch.Tensor, w: HeadWeights, ue: Unembedding, positions, W_O: torch.Tensor, keep: bool = False
    ):
        # W_O: [L, heads * d_head, d_model] in the products' dtype (float32 in the scan), made once per scan.
        device = W_O.device
        self.pos = torch.as_tensor(np.asarray(positions), dtype=torch.long, device=device)
        targets = tokens.to(device)[:, self.pos + 1]  # [B, Pc]
        uniq, self.inv = torch.unique(targets, return_inverse=True)  # inv [B, Pc] -> row of uniq
        self.u = ue.directions(uniq).to(W_O.dtype)  # [U, d_model]
        self.W_O = W_O
        self.shape = (w.n_heads, W_O.shape[1] // w.n_heads)
        self.head_raw = torch.zeros(*targets.shape, w.n_layers, w.n_heads, dtype=torch.float64, device=device)
        self.scale: torch.Tensor | None = None
        kept = w.n_layers * targets.numel() * W_O.shape[1] * W_O.element_size()
        self.keep = keep and kept <= KEEP_BYTES
        self.kept: torch.Tensor | None = None  # [L, B, Pc, H, d_head], made by the first hook
        self.hooks = [(act_name("z", l), self._on_z(l)) for l in range(w.n_layers)]
        self.hooks.append(("ln_final.hook_scale", self._on_scale))
        self.post: list[torch.Tensor | None] = [None] * w.n_layers  # [B, Pc] post-attention norm scale per layer
        if w.attn_post_norm:  # W_O holds the post norm's gain; its frozen scale divides each layer's effects
            self.hooks += [(attn_post_scale_hook(l), self._on_post(l)) for l in range(w.n_layers)]

    def _on_z(self, layer: int):
        def hook(z, hook):  # z: [B, T, H, d_head]
            if self.keep:  # kept, and reduced with every other layer in heads()
                if self.kept is None:  # zeros: a layer whose hook did not fire adds nothing, as per layer
                    self.kept = z.new_zeros(self.head_raw.shape[2], *self.inv.shape, *z.shape[2:])
                torch.index_select(z, 1, self.pos, out=self.kept[layer])
                return
            read = (self.u @ self.W_O[layer].T).view(-1, *self.shape)  # [U, H, d_head], one product per target
            zc = z.index_select(1, self.pos).to(read.dtype)  # [B, Pc, H, d_head]
            self.head_raw[:, :, layer] = (zc * read[self.inv]).sum(-1)  # copy_ widens to float64

        return hook

    def _reduce_kept(self) -> None:
        """Every kept layer's effects at once (``keep=True``): the per-layer hook's arithmetic, batched."""
        if self.kept is None:
            return
        read = torch.matmul(self.u, self.W_O.transpose(1, 2))  # [L, U, H * d_head]
        read = read.view(len(self.kept), -1, *self.shape)[:, self.inv]  # [L, B, Pc, H, d_head]
        self.head_raw.copy_((self.kept.to(read.dtype) * read).sum(-1).permute(1, 2, 0, 3))  # widens to float64
        self.kept = None

    def _on_scale(self, t, hook):
        self.scale = t.index_select(1, self.pos)[..., 0].double()  # [B, Pc]

    def _on_post(self, layer: int):
        def hook(t, hook):  # [B, T, 1]
            self.post[layer] = t.index_select(1, self.pos)[..., 0].double()

        return hook

    def heads(self) -> torch.Tensor:
        """``[B, Pc, L, H]`` direct effects (nats) at ``positions``, after the pass."""
        assert self.scale is not None, "the pass did not reach the final norm"
        self._reduce_kept()
        raw = self.head_raw
        if any(p is not None for p in self.post):
            post = [p for p in self.post if p is not None]
            assert len(post) == len(self.post), "the pass did not reach every post-attention norm"
            raw = raw / torch.stack(post, -1)[..., None]  # [B, Pc, L, 1]
        return raw / self.scale[..., None, None]


def _row_sums_f64(x: torch.Tensor, elements: int = 1 << 22) -> torch.Tensor:
    """``x.sum(-1, dtype=float64)`` for ``x [B, P, V]``, a few rows at a time.

    torch casts the whole input to float64 before such a sum (a 4,097-token SmolLM2 pass: a
    1.5 GiB copy of the logits); slices of about ``elements`` entries keep the copy small.
    """
    out = torch.empty(x.shape[:-1], dtype=torch.float64, device=x.device)
    step = max(1, elements // max(1, x.shape[0] * x.shape[-1]))
    for p in range(0, x.shape[1], step):
        out[:, p : p + step] = x[:, p : p + step].sum(-1, dtype=torch.float64)
    return out


def target_groups(layout: RepeatLayout) -> tuple[np.ndarray, np.ndarray]:
    """Scored positions (``p`` predicts token ``p + 1``) whose targets lie in repeat 1, and in repeats 2..R.

    The layout's own rule (:func:`~headscope.scores.layout.first_repeat_targets`,
    :func:`~headscope.scores.layout.later_repeat_targets`): later-repeat targets leave out the
    first token of repeat 2, which no context predicts.
    """
    return first_repeat_targets(layout), later_repeat_targets(layout)
