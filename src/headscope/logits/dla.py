"""Direct logit attribution: how much each head (and every other piece) writes the next token's logit.

The final residual ``x`` at position ``p`` is a sum of components: the token embedding (plus
the position embedding where positions are learned), every head's output ``z_h W_O^h`` (per
head, read at the input of the attention output projection, ``hook_z``), every MLP's output,
the attention output biases. The logits are ``norm_f(x) W_U + b_U``. With the final norm's
**scale frozen** at its actual value ``s_p`` (``ln_final.hook_scale``) the map is linear::

    logit_t(p) = sum_c  P(c_p) . W_U'[:, t] / s_p  +  (b_f W_U + b_U)[t]

where ``W_U' = diag(g_f) W_U`` (the final norm's gain folded, :mod:`headscope.folded_weights`),
``P`` centres along d_model for LayerNorm (identity for RMSNorm) and ``b_f`` is the
LayerNorm bias. We report every number **centred**: minus the mean over the vocabulary, the
shift the softmax ignores. So a component's direct effect is ``P(c_p) . u_p / s_p`` with
``u_p = W_U'[:, t_p] - mean_v W_U'[:, v]`` (the "logit lens" / direct logit attribution
convention of TransformerLens's ``logit_attrs`` with ``cache.apply_ln_to_stack``; Elhage
et al. 2021's direct path). Since ``P`` is a symmetric projection we centre ``u_p`` instead
of every component, and each head costs one ``[pos, d_head]`` dot product: no
``[pos, heads, vocab]`` tensor is ever formed.

Where a block passes its attention output through a norm before the residual (Gemma 2 and 3's
``ln1_post``), that norm's scale is frozen the same way: head ``h`` writes ``z_h W_O^h g_post /
s_post(p)`` (``g_post`` folded into ``W_O``, ``s_post`` read at ``blocks.{l}.ln1_post.hook_scale``),
and an MLP's component is its output after its own post norm (``ln2_post``). Final logit
soft-capping (Gemma 2) is not linear: it shows as ``model_logit`` differing from ``logit``.

A last component, ``float_error``, holds the final residual minus the sum of the hooked
pieces (the model's float32 rounding), so the components sum to ``x . u_p / s_p`` exactly;
``model_logit`` is the model's own centred logit from the same forward pass, for checking.
"""

from __future__ import annotations

import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, head_weights
from ..models.inputs import SAMPLE_TEXTS, one_sequence
from ..models.model import as_model, in_eval_mode
from ..results.logit_results import LogitAttribution
from ..scan.direct import DirectEffects, DirectPass, Unembedding, unembedding

__all__ = ["DirectEffects", "DirectPass", "Unembedding", "direct_effects", "logit_attribution", "unembedding"]


@torch.no_grad()
def direct_effects(
    model, tokens: torch.Tensor, *, weights: HeadWeights | None = None, unembed: Unembedding | None = None
) -> DirectEffects:
    """Direct logit attribution of every head and component for ``tokens [B, T]``, one forward pass.

    Position ``p`` (``0..T-2``) is scored on its actual next token ``tokens[:, p + 1]``.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise BadInput(
            f"direct logit attribution needs [batch, tokens] with at least 2 tokens, got {tuple(tokens.shape)}",
            hint="give a longer text: every position is scored on the token after it",
        )
    w = weights or head_weights(model)
    run = DirectPass(model, tokens, w, unembed or unembedding(model, w))
    logits = model.run_with_hooks(run.tokens, fwd_hooks=run.hooks)
    return run.finish(logits)


@in_eval_mode
def logit_attribution(
    model, text=None, *, max_tokens: int | None = None, weights: HeadWeights | None = None
) -> LogitAttribution:
    """Direct logit attribution of every head (and every other component) on one text.

    ``text``: a string (BOS is prepended, as everywhere in headscope), a
    :class:`~headscope.qk.inputs.TokenSequence`, or None for the first built-in sample (a
    sentence said twice). Each position is scored on its actual next token; the result's
    ``heads`` is ``[positions, layers, heads]`` in centred logit units.

    >>> import headscope
    >>> res = headscope.logit_attribution(model, "The cat sat. The cat sat.")
    >>> res.heads.shape == (len(res.sequence) - 1, model.cfg.n_layers, model.cfg.n_heads)
    True
    >>> res.max_abs_error < 1e-4   # every component together is the model's own centred logit
    True
    >>> res.top(3).columns.tolist()
    ['position', 'token', 'target', 'layer', 'head', 'label', 'effect']
    """
    seq = one_sequence(model, SAMPLE_TEXTS[0] if text is None else text, max_tokens, "logit_attribution")
    if len(seq) < 2:
        raise BadInput(
            f"{text!r} is a single token: there is no next token to attribute", hint="give at least two tokens of text"
        )
    d = direct_effects(model, seq.tensor(), weights=weights)
    return LogitAttribution(
        model_name=as_model(model).name,
        sequence=seq,
        heads=d.heads[0],
        components={k: v[0] for k, v in d.components.items()},
        logit=d.logit[0],
        model_logit=d.model_logit[0],
        scale=d.scale[0],
    )
