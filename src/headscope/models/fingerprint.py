"""A fingerprint of a model's weights: sha256 over every parameter's name, shape, dtype and bytes.

Two models with the same fingerprint hold bit-identical weights. A sweep records one per
entry because published checkpoint branches can lie: some Pythia step branches serve the
same (or the final) weights under different step names (EleutherAI/pythia issues 205, 206),
and a sweep over them would draw a flat line that is not a property of training.

The hash is over the Hugging Face model's own parameters, named as Hugging Face names them
(``model.layers.0.self_attn.q_proj.weight``), in sorted name order, each tied parameter once.
A TransformerLens ``TransformerBridge`` rebuilds the model's module tree around the original
modules (``..._original_component...`` plus aliases such as ``attn.q``); the walk below looks
through it, so a bridge and the plain ``transformers`` model it wraps give the same
fingerprint (tests check this against plain ``transformers``).

Cost, measured on SmolLM2-135M (134.5M parameters, float32, 538 MB) on a shared 2-core CPU:
0.3-0.5 s, against about 3 s to load the model; it grows with the bytes (sha256 runs at
1-2 GB/s on one core), so a 12B model in float16 takes of the order of 15 s, still a small
part of loading it. A strided sample of each tensor was tried and was *slower* here (1.8 s:
gathering strided elements costs more than hashing contiguous memory), so every byte is
hashed and "same fingerprint" means bit-identical weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

_ORIGINAL = "_original_component"  # where a TransformerBridge component keeps the module it wraps


def hf_named_parameters(module: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The wrapped Hugging Face model's parameters under their Hugging Face names, ties once.

    A module that wraps another (a bridge component with ``_original_component``) stands
    for the module it wraps: its other children are aliases of the same weights.
    """
    seen: set[int] = set()

    def walk(mod: torch.nn.Module, pre: str) -> Iterator[tuple[str, torch.Tensor]]:
        inner = getattr(mod, "_modules", {}).get(_ORIGINAL)
        if isinstance(inner, torch.nn.Module):
            yield from walk(inner, pre)
            return
        for name, p in mod._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                yield pre + name, p
        for name, child in mod._modules.items():
            if child is not None:
                yield from walk(child, f"{pre}{name}.")

    yield from walk(module, prefix)


def weights_fingerprint(model) -> dict:
    """sha256 over the weights of ``model`` (a bridge from :func:`headscope.load_model`, or a plain
    ``torch.nn.Module`` such as a ``transformers`` model).

    Returns ``{"sha256", "n_params", "n_tensors", "dtypes"}``; ``n_params`` counts tied
    weights once.
    The hash depends on the dtype the weights were loaded in (a sweep loads every entry in
    the same one). Raises ``ValueError`` for weights that are not in memory (``meta`` tensors
    of a model offloaded to disk by ``device_map``).
    """
    root = getattr(model, "original_model", model)
    params = sorted(hf_named_parameters(root), key=lambda kv: kv[0])
    h = hashlib.sha256()
    n_params = 0
    dtypes: set[str] = set()
    for name, p in params:
        if p.device.type == "meta":
            raise ValueError(f"parameter {name} is not in memory (meta tensor): cannot fingerprint it")
        flat = p.detach().reshape(-1)  # [numel]
        n_params += flat.numel()
        dtypes.add(str(p.dtype).removeprefix("torch."))
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}\n".encode())
        # raw bytes: bfloat16 has no numpy dtype, uint8 views work for every dtype
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy().data)
    return {"sha256": h.hexdigest(), "n_params": n_params, "n_tensors": len(params), "dtypes": sorted(dtypes)}


def weights_version(model) -> tuple:
    """Cheap identity of the current weights: each parameter's storage and in-place version counter."""
    root = getattr(model, "bridge", model)
    return tuple((p.data_ptr(), p._version) for p in root.parameters())


def cached_fingerprint(model) -> dict:
    """:func:`weights_fingerprint`, hashed once per model (a :class:`~headscope.models.model.HeadscopeModel`)
    and again only after its weights change: a sweep entry and its scan's weight-score cache share it."""
    cache = getattr(model, "cache", None)
    if not isinstance(cache, dict):
        return weights_fingerprint(model)
    version = weights_version(model)
    hit = cache.get("fingerprint")
    if hit is None or hit[0] != version:
        hit = cache["fingerprint"] = (version, weights_fingerprint(model))
    return hit[1]
