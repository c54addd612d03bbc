"""Model sources: built-in offline models, local directories, GGUF files, hub ids."""

from .builtin import BUILTINS, DEFAULT_MODEL
from .loading import (ModelSource, check_hub_available, fetch_hub, list_cached, load_model, resolve_device,
                      resolve_dtype, resolve_source)

__all__ = ["BUILTINS", "DEFAULT_MODEL", "ModelSource", "check_hub_available", "fetch_hub", "list_cached",
           "load_model", "resolve_device", "resolve_dtype", "resolve_source"]
