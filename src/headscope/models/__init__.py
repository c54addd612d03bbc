"""Model sources (built-in offline models, local directories, GGUF files, hub ids), the loaded
model's typed contract, and the one input path from text to token ids."""

from .builtin import BUILTINS, DEFAULT_MODEL
from .inputs import SAMPLE_TEXTS, TokenSequence, encode, encode_texts
from .loading import (
    check_hub_available,
    fetch_hub,
    list_cached,
    load_model,
    resolve_device,
    resolve_dtype,
    resolve_source,
)
from .model import FirstToken, HeadscopeModel, ModelSource, as_model, eval_mode, in_eval_mode

__all__ = [
    "BUILTINS",
    "DEFAULT_MODEL",
    "FirstToken",
    "HeadscopeModel",
    "ModelSource",
    "SAMPLE_TEXTS",
    "TokenSequence",
    "as_model",
    "check_hub_available",
    "encode",
    "encode_texts",
    "eval_mode",
    "fetch_hub",
    "in_eval_mode",
    "list_cached",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    "resolve_source",
]
