"""Direct logit attribution: how much each head (and every other piece) writes the next token's logit.

The final residual ``x`` at position ``p`` is a sum of components: the token embedding (plus
the position embedding where positions are learned), every head's output ``z_h W_O^h`` (per
head, read at the input of the attention output projection, ``hook_z``), every MLP's output,
the attention output biases. The logits are ``norm_f(x) W_U + b_U``. With the final norm's
**scale frozen** at its actual value ``s_p`` (``ln_final.hook_scale``) the map is linear::

    logit_t(p) = sum_c  P(c_p) . W_U'[:, t] / s_p  +  (b_f W_U + b_U)[t]

where ``W_U' = diag(g_f) W_U`` (the final norm's gain folded, :mod:`headscope.weights`),
``P`` centres along d_model for LayerNorm (identity for RMSNorm) and ``b_f`` is the
LayerNorm bias. We report every number **centred**: minus the mean over the vocabulary, the
shift the softmax ignores. So a component's direct effect is ``P(c_p) . u_p / s_p`` with
``u_p = W_U'[:, t_p] - mean_v W_U'[:, v]`` (the "logit lens" / direct logit attribution
convention of TransformerLens's ``logit_attrs`` with ``cache.apply_ln_to_stack``; Elhage
et al. 2021's direct path). Since ``P`` is a symmetric projection we centre ``u_p`` instead
of every component, and each head costs one ``[pos, d_head]`` dot product: no
``[pos, heads, vocab]`` tensor is ever formed.

A last component, ``float_error``, holds the final residual minus the sum of the hooked
pieces (the model's float32 rounding), so the components sum to ``x . u_p / s_p`` exactly;
``model_logit`` is the model's own centred logit from the same forward pass, for checking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BadInput
from ..hooks import act_name
from ..models.inputs import SAMPLE_TEXTS, as_sequences
from ..models.model import as_model
from ..weights import HeadWeights, head_weights
from .results import LogitAttribution


@dataclass
class Unembedding:
    """What turns a final residual into centred logits, with the final norm's gain folded in."""

    W_U: torch.Tensor  # [d_model, d_vocab] float64, ln_final gain folded
    W_U_mean: torch.Tensor  # [d_model] float64, mean of W_U over the vocabulary
    logit_bias: torch.Tensor  # [d_vocab] float64, (b_f W_U_raw + b_U), centred over the vocabulary
    centre: bool  # LayerNorm: project directions onto the mean-zero subspace

    def directions(self, targets: torch.Tensor) -> torch.Tensor:
        """``[..., d_model]`` centred unembedding direction ``u`` for each target id in ``targets [...]``."""
        u = self.W_U[:, targets.reshape(-1)].T - self.W_U_mean  # [N, d_model]
        if self.centre:
            u = u - u.mean(-1, keepdim=True)
        return u.reshape(*targets.shape, -1)


def _param(module, name: str) -> torch.Tensor | None:
    module = getattr(module, "original_component", module)
    p = getattr(module, name, None)
    return None if p is None else p.detach()


@torch.no_grad()
def unembedding(model, w: HeadWeights | None = None) -> Unembedding:
    """The final norm + unembedding of ``model`` (a TransformerBridge) in the form the attribution needs."""
    w = w or head_weights(model)
    W_U = w.W_U.double()  # gain already folded
    bias = torch.zeros(W_U.shape[1], dtype=torch.float64, device=W_U.device)
    b_f = _param(model.ln_final, "bias")
    if b_f is not None:  # LayerNorm's bias goes through the raw (unfolded) W_U
        bias += b_f.double() @ model.W_U.detach().double()
    try:
        b_U = model.b_U
    except Exception:  # the bridge raises for models without an unembedding bias
        b_U = None
    if b_U is not None:
        bias += b_U.detach().double()
    return Unembedding(W_U=W_U, W_U_mean=W_U.mean(1), logit_bias=bias - bias.mean(),
                       centre=w.norm == "layernorm")


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

    def __init__(self, model, tokens: torch.Tensor, w: HeadWeights, ue: Unembedding):
        self.w, self.ue = w, ue
        L, H = w.n_layers, w.n_heads
        device = w.W_U.device
        self.tokens = tokens.to(device)
        self.u = ue.directions(self.tokens[:, 1:])  # [B, P, d_model] float64
        self.W_O = w.W_O.double()  # [L, H, d_head, d_model]
        self.head_raw = torch.zeros(*self.u.shape[:2], L, H, dtype=torch.float64, device=device)
        self.raw: dict[str, torch.Tensor] = {}  # component -> [B, P] before division by the scale
        self.final: dict[str, torch.Tensor] = {}
        hooks = [(act_name("z", l), self._on_z(l)) for l in range(L)]
        hooks.append(("hook_embed", self._on_vector("embed")))
        if w.W_pos is not None and "hook_pos_embed" in model.hook_dict:
            hooks.append(("hook_pos_embed", self._on_vector("pos_embed")))
        hooks += [(act_name("mlp_out", l), self._on_vector(f"MLP{l}")) for l in range(L)]
        hooks += [("ln_final.hook_in", self._on_final), ("ln_final.hook_scale", self._on_final)]
        self.hooks = hooks

    def _dot(self, t: torch.Tensor) -> torch.Tensor:  # [B, T, d_model] -> [B, P]
        return (t[:, :-1].double() * self.u).sum(-1)

    def _on_z(self, layer: int):
        def hook(z, hook):  # z: [B, T, H, d_head], the input of the output projection
            read = torch.einsum("hed,bpd->bphe", self.W_O[layer], self.u)  # what each head's z must align with
            self.head_raw[:, :, layer] = (z[:, :-1].double() * read).sum(-1)
        return hook

    def _on_vector(self, name: str):
        def hook(t, hook):
            self.raw[name] = self._dot(t)
        return hook

    def _on_final(self, t, hook):
        self.final[hook.name] = t.detach()

    def finish(self, logits: torch.Tensor) -> DirectEffects:
        """Divide by the frozen scale, add the biases and the rounding term; ``logits [B, T, vocab]``."""
        target = self.tokens[:, 1:]
        lg = logits[:, :-1]
        model_logit = lg.gather(-1, target[..., None])[..., 0].double() - lg.sum(-1, dtype=torch.float64) / lg.shape[-1]
        scale = self.final["ln_final.hook_scale"][:, :-1, 0].double()  # [B, P]
        comps = {k: self.raw[k] for k in ("embed", "pos_embed") if k in self.raw}
        comps.update({f"MLP{l}": self.raw[f"MLP{l}"] for l in range(self.w.n_layers)})
        b_O = self.w.b_O.double().sum(0)  # [d_model]: every layer's output bias, one vector
        if b_O.abs().max() > 0:
            comps["attn_bias"] = (self.u * b_O).sum(-1)
        total = self._dot(self.final["ln_final.hook_in"])
        comps["float_error"] = total - self.head_raw.sum((2, 3)) - sum(comps.values())
        heads = self.head_raw / scale[..., None, None]
        comps = {k: v / scale for k, v in comps.items()}
        comps["unembed_bias"] = self.ue.logit_bias[target]  # added after the norm: not divided
        order = [k for k in comps if k != "float_error"] + ["float_error"]  # rounding last, for display
        comps_np = {k: comps[k].cpu().numpy() for k in order}
        heads_np = heads.cpu().numpy()
        return DirectEffects(heads=heads_np, components=comps_np,
                             logit=heads_np.sum((2, 3)) + sum(comps_np.values()),
                             model_logit=model_logit.cpu().numpy(), scale=scale.cpu().numpy())


@torch.no_grad()
def direct_effects(model, tokens: torch.Tensor, *, weights: HeadWeights | None = None,
                   unembed: Unembedding | None = None) -> DirectEffects:
    """Direct logit attribution of every head and component for ``tokens [B, T]``, one forward pass.

    Position ``p`` (``0..T-2``) is scored on its actual next token ``tokens[:, p + 1]``.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise BadInput(f"direct logit attribution needs [batch, tokens] with at least 2 tokens, got {tuple(tokens.shape)}",
                       hint="give a longer text: every position is scored on the token after it")
    w = weights or head_weights(model)
    run = DirectPass(model, tokens, w, unembed or unembedding(model, w))
    logits = model.run_with_hooks(run.tokens, fwd_hooks=run.hooks)
    return run.finish(logits)


def logit_attribution(model, text=None, *, max_tokens: int | None = None,
                      weights: HeadWeights | None = None) -> LogitAttribution:
    """Direct logit attribution of every head (and every other component) on one text.

    ``text``: a string (BOS is prepended, as everywhere in headscope), a
    :class:`~headscope.qk.inputs.TokenSequence`, or None for the first built-in sample (a
    sentence said twice). Each position is scored on its actual next token; the result's
    ``heads`` is ``[positions, layers, heads]`` in centred logit units.

    >>> import headscope
    >>> model = headscope.load_model("smollm2-135m")                     # doctest: +SKIP
    >>> res = headscope.logits.logit_attribution(model, "a b c d a b c d")  # doctest: +SKIP
    >>> res.top(5)[["token", "target", "label", "effect"]]               # doctest: +SKIP
    >>> res.max_abs_error < 1e-4                                          # doctest: +SKIP
    True
    """
    seq = as_sequences(model, SAMPLE_TEXTS[0] if text is None else text, max_tokens)[0]
    if len(seq) < 2:
        raise BadInput(f"{text!r} is a single token: there is no next token to attribute",
                       hint="give at least two tokens of text")
    d = direct_effects(model, seq.tensor(), weights=weights)
    return LogitAttribution(
        model_name=as_model(model).name, sequence=seq, heads=d.heads[0],
        components={k: v[0] for k, v in d.components.items()}, logit=d.logit[0],
        model_logit=d.model_logit[0], scale=d.scale[0],
    )
