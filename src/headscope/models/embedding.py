"""Effective token embeddings: what a later head actually reads for a token.

In many models the first MLP acts as an extended embedding, so the circuits papers read a
token through layer 0 before applying a head's OV circuit. This is the one place that
computes an effective embedding; it lives with the models because two of its conventions
run block 0 of the model itself on every token standing alone (a sequence of length 1, no
position embedding, so only the token's identity goes in). The scores (:mod:`headscope.scores`)
are maths only and receive these embeddings through :func:`weight_inputs`.

* ``"mlp0"`` -- Gould et al. 2023 (successor heads), ``MLP0(W_E)``: the output of the first
  MLP (with its own norm) on the bare embedding, attention layer 0 switched off. The
  residual ``W_E`` itself is *not* added.
* ``"block0"`` -- McDougall et al. 2023 (copy suppression; their code's
  ``"W_E (including MLPs)"``): the residual stream after block 0, i.e.
  ``W_E + attn0(token attending to itself) + MLP0(...)``.
* ``"embed"`` -- the plain embedding ``W_E`` (Elhage et al. 2021), float32, as the embedding module
  outputs it (Gemma's is the table times ``sqrt(d_model)``: :func:`~headscope.folded_weights.embedding_matrix`).
* ``"embed_normed"`` -- ``W_E`` as a head's first norm would see it were it the whole
  residual: centred along d_model (LayerNorm only) and divided by its RMS
  ``sqrt(mean(x^2) + eps)``, float64 (the direct token path of :mod:`headscope.logits.ov_rows`).

``"embed"`` and ``"embed_normed"`` read the weights only, so they also accept a
:class:`~headscope.folded_weights.HeadWeights` in place of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, embedding_matrix, mlp_write_hook, norm_kind
from ..scores.weight_score import WeightInputs

CONVENTIONS = ("mlp0", "block0", "embed", "embed_normed")


class _Stop(Exception):
    """Raised inside a hook once block 0 has given what we need: nothing later is computed."""


@torch.no_grad()
def effective_embedding(
    source: Any,
    token_ids: Sequence[int] | torch.Tensor,
    convention: str = "mlp0",
    *,
    eps: float = 1e-5,
    batch: int = 4096,
) -> torch.Tensor:
    """``[len(token_ids), d_model]`` effective embeddings of ``token_ids`` (see module doc).

    ``source``: the model (every convention) or its :class:`HeadWeights` (``embed``, ``embed_normed``).

    >>> effective_embedding(model, [5, 7], "block0").shape == (2, model.cfg.d_model)
    True
    """
    if convention not in CONVENTIONS:
        raise BadInput(f"unknown effective-embedding convention {convention!r}", hint=f"use one of {CONVENTIONS}")
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    if convention in ("embed", "embed_normed"):
        weights = isinstance(source, HeadWeights)
        W_E = source.W_E if weights else embedding_matrix(source)  # as the residual receives it (Gemma: x sqrt(d))
        x = W_E[ids.to(W_E.device)]
        if convention == "embed":
            return x
        x = x.double()
        if (source.norm if weights else norm_kind(source.cfg)) == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        return x / (x.square().mean(-1, keepdim=True) + eps).sqrt()
    if isinstance(source, HeadWeights):
        raise BadInput(
            f"the {convention!r} embedding runs block 0 of the model", hint="pass the model, not its weights"
        )
    return _through_block0(source, ids, convention, batch)


def _through_block0(model, ids: torch.Tensor, convention: str, batch: int) -> torch.Tensor:
    # mlp0: what MLP0 adds to the residual, after its post norm where the block has one (Gemma 2's ln2_post)
    grab = mlp_write_hook(model, 0) if convention == "mlp0" else "blocks.0.hook_resid_post"
    out: list[torch.Tensor] = []

    def keep(x, hook):
        out.append(x[:, 0].detach().float())
        raise _Stop

    def zero(x, hook):
        return torch.zeros_like(x)

    hooks = [(grab, keep)]
    if "hook_pos_embed" in model.hook_dict:  # learned positions: keep only the token's identity
        hooks.append(("hook_pos_embed", zero))
    if convention == "mlp0":
        hooks.append(("blocks.0.hook_attn_out", zero))
    device = model.cfg.device
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch, None].to(device)  # [n, 1]: every token alone
        try:
            model.run_with_hooks(chunk, fwd_hooks=hooks)
        except _Stop:
            pass
        else:  # pragma: no cover - the hook always fires
            raise RuntimeError(f"{grab} did not fire")
    return torch.cat(out)


def weight_inputs(model) -> WeightInputs:
    """What the registry's weight scores read besides the head weights, for ``model``.

    >>> inputs = weight_inputs(model)
    >>> inputs.embed(torch.tensor([3]), "mlp0").shape[0], inputs.d_vocab == model.cfg.d_vocab
    (1, True)
    """
    return WeightInputs(
        tokenizer=model.tokenizer,
        d_vocab=model.cfg.d_vocab,
        embed=lambda ids, convention: effective_embedding(model, ids, convention),
    )
