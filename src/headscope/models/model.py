"""What :func:`~headscope.load_model` returns: the TransformerLens bridge and what headscope knows of it.

:class:`HeadscopeModel` is a small typed object around a TransformerLens ``TransformerBridge``:
``bridge`` is the bridge itself, ``source`` where it came from, ``first_token`` the one rule for
the token put before every sequence. Anything else (``cfg``, ``tokenizer``, ``run_with_hooks``,
``W_Q``, ``blocks``...) is the bridge's own, reached through the wrapper, so TransformerLens code
works on it unchanged. Code that receives a bare bridge calls :func:`as_model` first.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ParamSpec, TypeVar

import torch

from ..errors import BadInput

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from."""

    name: str  # what the user typed, or the alias
    kind: str  # "builtin" | "gguf" | "local" | "hub" | "in-memory"
    path: str  # the directory transformers loaded from, or the hub id

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class FirstToken:
    """The token every sequence starts with, and why: the one rule for the first token.

    The tokenizer's BOS if it has one; else its EOS, as TransformerLens does (GPT-2 style
    models use ``<|endoftext|>`` as a document separator); else nothing.

    >>> FirstToken.choose(None, 50256).source.split(" ")[0]
    'eos'
    """

    id: int | None
    source: str
    #: the ids the model's own tokenizer puts before any text (read before TransformerLens makes it
    #: prepend BOS): () for GPT-2 and SmolLM2, (BOS,) for Llama; None where it was not recorded
    own_prefix: tuple[int, ...] | None = None

    @classmethod
    def choose(cls, bos_id: int | None, eos_id: int | None, own_prefix: tuple[int, ...] | None = None) -> FirstToken:
        if bos_id is not None:
            return cls(int(bos_id), "bos", own_prefix)
        if eos_id is not None:
            return cls(
                int(eos_id),
                "eos (the tokenizer has no BOS token; EOS used instead, as TransformerLens does)",
                own_prefix,
            )
        return cls(
            None, "none (the tokenizer has neither BOS nor EOS; sequences start with their first token)", own_prefix
        )


@dataclass(eq=False)
class HeadscopeModel:
    """A loaded model: ``bridge`` (a TransformerLens ``TransformerBridge``), ``source``, ``first_token``.

    Attribute access falls through to the bridge (``model.cfg``, ``model.tokenizer``,
    ``model.run_with_hooks``, ``model.W_Q``). ``cache`` holds per-model results that depend on
    the weights only (the weight-based scores), computed once.
    """

    bridge: Any
    source: ModelSource
    first_token: FirstToken
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name in ("bridge", "source", "first_token", "cache"):  # not yet set (copy/pickle)
            raise AttributeError(name)
        return getattr(self.bridge, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.bridge(*args, **kwargs)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def n_ctx(self) -> int:
        """The longest sequence the model takes (its positions), 2048 where the config does not say."""
        return int(getattr(self.bridge.cfg, "n_ctx", 0) or 2048)

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def info(self) -> dict[str, Any]:
        """Name and shape, as results record them; a built-in model also says what it is (``about``)."""
        from .builtin import BUILTINS

        cfg = self.bridge.cfg
        info: dict[str, Any] = {
            "name": self.name,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
            "d_vocab": cfg.d_vocab,
        }
        if self.source.kind == "builtin" and self.name in BUILTINS:
            info["about"] = BUILTINS[self.name].description
        return info

    def __repr__(self) -> str:
        return f"HeadscopeModel({self.name!r}, {self.n_layers} layers x {self.n_heads} heads, {self.source.kind})"


def as_model(model: Any) -> HeadscopeModel:
    """``model`` as a :class:`HeadscopeModel`; a bare ``TransformerBridge`` is wrapped (source "in-memory").

    Anything else (a model's name, a path, ``None``) is a :class:`~headscope.errors.BadInput` saying
    to load it first.

    >>> as_model("gpt2")
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: expected a loaded model, got the str 'gpt2'
      hint: load it first: model = headscope.load_model('gpt2'), then pass model
    """
    if isinstance(model, HeadscopeModel):
        return model
    if not hasattr(model, "cfg") or not hasattr(model, "run_with_hooks"):
        if isinstance(model, (str, os.PathLike)):
            got, load = f"the {type(model).__name__} {str(model)!r}", f"headscope.load_model({str(model)!r})"
        else:
            got, load = ("None" if model is None else f"a {type(model).__name__}"), "headscope.load_model(...)"
        raise BadInput(f"expected a loaded model, got {got}", hint=f"load it first: model = {load}, then pass model")
    tok = model.tokenizer
    name = str(getattr(model.cfg, "model_name", None) or "model")
    return HeadscopeModel(
        model,
        ModelSource(name, "in-memory", ""),
        FirstToken.choose(getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)),
    )


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run the body with ``model`` in eval mode (no dropout), then put back every module's own mode.

    An analysis reads what the model computes; a model left in train mode (after fine-tuning in the same
    notebook) would add dropout noise to every score. Each module's ``training`` flag is restored as it
    was, so a user's mix of train and eval submodules is left alone. Anything that is not a torch module
    (a bare ``HeadWeights``) passes through.

    >>> model.train() and None
    >>> with eval_mode(model):
    ...     model.bridge.training
    False
    >>> model.bridge.training
    True
    >>> model.eval() and None
    """
    bridge = model.bridge if isinstance(model, HeadscopeModel) else model
    if not isinstance(bridge, torch.nn.Module) or not any(m.training for m in bridge.modules()):
        yield
        return
    modes = [(m, m.training) for m in bridge.modules()]
    bridge.eval()
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


def in_eval_mode(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate an analysis whose first argument is the model: it runs under :func:`eval_mode`."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with eval_mode(args[0] if args else kwargs.get("model")):
            return fn(*args, **kwargs)

    return run
