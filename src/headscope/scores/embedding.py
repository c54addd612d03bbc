"""Effective token embeddings: what a later head actually reads for a token.

In many models the first MLP acts as an extended embedding, so the circuits papers read a
token through layer 0 before applying a head's OV circuit. Three conventions, each computed
by running block 0 of the model itself on every token standing alone (a sequence of length
1, no position embedding, so only the token's identity goes in):

* ``"mlp0"`` -- Gould et al. 2023 (successor heads), ``MLP0(W_E)``: the output of the first
  MLP (with its own norm) on the bare embedding, attention layer 0 switched off. The
  residual ``W_E`` itself is *not* added.
* ``"block0"`` -- McDougall et al. 2023 (copy suppression; their code's
  ``"W_E (including MLPs)"``): the residual stream after block 0, i.e.
  ``W_E + attn0(token attending to itself) + MLP0(...)``.
* ``"embed"`` -- the plain embedding ``W_E`` (Elhage et al. 2021).
"""

from __future__ import annotations

import torch

from ..errors import BadInput

CONVENTIONS = ("mlp0", "block0", "embed")


class _Stop(Exception):
    """Raised inside a hook once block 0 has given what we need: nothing later is computed."""


@torch.no_grad()
def effective_embedding(model, token_ids, convention: str = "mlp0", batch: int = 4096) -> torch.Tensor:
    """``[len(token_ids), d_model]`` float32 effective embeddings of ``token_ids`` (see module doc)."""
    if convention not in CONVENTIONS:
        raise BadInput(f"unknown effective-embedding convention {convention!r}", hint=f"use one of {CONVENTIONS}")
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    if convention == "embed":
        return model.W_E.detach().float()[ids.to(model.W_E.device)]
    grab = "blocks.0.hook_mlp_out" if convention == "mlp0" else "blocks.0.hook_resid_post"
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
