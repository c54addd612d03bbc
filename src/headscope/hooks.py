"""TransformerLens hook names, built in one place (like TransformerLens's ``get_act_name``).

>>> act_name("pattern", 3), act_name("resid_pre", 0), act_name("embed")
('blocks.3.attn.hook_pattern', 'blocks.0.hook_resid_pre', 'hook_embed')
"""

from __future__ import annotations

_ATTN = {"pattern", "attn_scores", "z", "q", "k", "v", "rot_q", "rot_k", "result"}
_BLOCK = {"resid_pre", "resid_mid", "resid_post", "mlp_out", "attn_out"}
_TOP = {"embed", "pos_embed"}


def act_name(name: str, layer: int | None = None) -> str:
    """The hook name of activation ``name`` in ``layer``: ``attn`` hooks, block hooks, ``ln1.scale``, embeddings."""
    if name in _TOP:
        return f"hook_{name}"
    if layer is None:
        raise ValueError(f"activation {name!r} needs a layer")
    if name in _ATTN:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in _BLOCK:
        return f"blocks.{layer}.hook_{name}"
    if name in ("ln1.scale", "ln2.scale"):
        part, _ = name.split(".")
        return f"blocks.{layer}.{part}.hook_scale"
    raise ValueError(f"unknown activation {name!r}")
