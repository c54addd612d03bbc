"""One way to load a model: ``load_model(spec)`` for every source headscope understands.

A *spec* is one of
- a built-in alias (``smollm2-135m-instruct-q4``, the offline default; see :mod:`.builtin`),
- a path to a local model directory in the Hugging Face layout (``config.json``, weights,
  tokenizer files),
- a path to a ``.gguf`` file (dequantized once and cached as safetensors),
- a Hugging Face hub id (``gpt2``, ``EleutherAI/pythia-70m``), where the hub is reachable
  or the model is already in the Hugging Face cache.

Every source ends on the same path: a Hugging Face causal LM plus tokenizer, wrapped in a
TransformerLens 4 ``TransformerBridge`` (which forces eager attention so that
``blocks.{l}.attn.hook_pattern`` and friends fire).

What is never done (see docs/models.md):

- **No code from a model runs.** Every transformers and TransformerLens loader is called with
  ``trust_remote_code=False`` (so transformers can never ask "Do you wish to run the custom
  code?"), and a model whose ``config.json`` or ``tokenizer_config.json`` names custom code
  (``auto_map``) is refused before anything is loaded (:func:`refuse_custom_code`, exit 3).
- **No pickles by default.** Weights are read from safetensors only; a model that has only
  ``pytorch_model.bin`` is refused with the conversion command, unless ``HEADSCOPE_ALLOW_PICKLE=1``
  opts in, and then it is read through torch's ``weights_only=True`` loader (which refuses a
  pickle that would call anything but tensor constructors).
- **No non-finite weights.** A NaN or infinite weight is refused right after loading, naming
  the first such tensor (:func:`refuse_non_finite`, exit 3), so no analysis meets it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput, ModelLoadError
from ..settings import LoadSettings
from . import builtin, cache
from .model import FirstToken, HeadscopeModel, ModelSource

Log = Callable[[str], None]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Set to 1 to let a model with only pickled weights (``pytorch_model.bin``) load, through torch's
#: ``weights_only=True`` loader. Off by default: safetensors only.
ALLOW_PICKLE_ENV = "HEADSCOPE_ALLOW_PICKLE"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def resolve_device(device: str | torch.device | None) -> str:
    """``auto`` picks CUDA when a GPU is visible, else CPU; anything else is checked."""
    name = str(device or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    base, colon, index = name.partition(":")
    if base not in ("cpu", "cuda", "mps") or (colon and not index.isdigit()):
        raise BadInput(f"unknown device {device!r}", hint="use one of: auto, cpu, cuda, cuda:N (N a GPU number from 0)")
    if base == "cuda" and not torch.cuda.is_available():
        raise BadInput(
            f"--device {name} was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)",
            hint="use --device cpu (or auto), or install a CUDA build of torch on a GPU machine",
        )
    if base == "cuda" and index and int(index) >= (n := torch.cuda.device_count()):
        raise BadInput(
            f"--device {name} was asked for, but torch sees {n} CUDA GPU{'s' if n != 1 else ''} (cuda:0..cuda:{n - 1})",
            hint=f"use --device cuda (GPU 0) or cuda:N with N from 0 to {n - 1}; CUDA_VISIBLE_DEVICES may hide some",
        )
    if base == "mps" and not torch.backends.mps.is_available():
        raise BadInput("--device mps was asked for, but MPS is not available", hint="use --device cpu")
    return name


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise BadInput(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}") from None


def load_model(
    spec: str | os.PathLike | LoadSettings = builtin.DEFAULT_MODEL,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "float32",
    *,
    device_map: str | dict | None = None,
    revision: str | None = None,
    log: Log | None = None,
) -> HeadscopeModel:
    """Load a causal LM and wrap it in a TransformerLens ``TransformerBridge``.

    Returns a :class:`~headscope.models.model.HeadscopeModel`: the bridge (``model.bridge``),
    where it came from (``model.source``) and the first-token rule (``model.first_token``);
    everything else (``model.cfg``, ``model.tokenizer``, ``model.run_with_hooks``) is the
    bridge's. Hook names are TransformerLens's (``blocks.{l}.attn.hook_pattern``,
    ``blocks.{l}.attn.hook_z``, ...).
    ``log`` receives the few lines said during a first-time download or conversion
    (default: stderr). Failures raise :class:`~headscope.errors.HeadscopeError` subclasses.

    ``spec`` may also be a :class:`~headscope.settings.LoadSettings`, which then says everything
    (``device``, ``dtype``, ``device_map`` and ``revision`` given beside it as well are refused).
    Anything else that is not a name or a path (``None``, a number, an already loaded model) is a
    :class:`~headscope.errors.BadInput` saying what to pass.

    >>> import headscope
    >>> model = headscope.load_model(tiny_gpt2_dir, device="cpu")  # a directory, a .gguf, a hub id or an alias
    >>> model.n_layers, model.n_heads, model.source.kind, model.first_token.id
    (2, 4, 'local', 50256)
    >>> headscope.load_model(headscope.LoadSettings(tiny_gpt2_dir, device="cpu")).n_layers
    2
    """
    if isinstance(spec, LoadSettings):
        given = {
            k: v
            for k, v, default in (
                ("device", device, "auto"),
                ("dtype", dtype, "float32"),
                ("device_map", device_map, None),
                ("revision", revision, None),
            )
            if v != default
        }
        if given:
            raise BadInput(
                f"load_model got a LoadSettings and {', '.join(f'{k}={v!r}' for k, v in given.items())} beside it",
                hint="put them in the LoadSettings (dataclasses.replace(settings, ...)), or pass the model's name",
            )
        ls = spec
        spec, device, dtype, device_map, revision = ls.model, ls.device, ls.dtype, ls.device_map, ls.revision
    check_spec(spec)
    log = log or _stderr
    dev = None if device_map is not None else resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    source = resolve_source(spec, log=log)
    hf_model, tokenizer = _load_hf(source, torch_dtype, device_map, revision)
    refuse_non_finite(hf_model, source.name)
    return _wrap(source, hf_model, tokenizer, dev, torch_dtype, device_map)


def check_spec(spec: Any) -> None:
    """Refuse, before anything is resolved, a ``spec`` that is neither a name nor a path: ``None`` or a number
    (which would otherwise be looked up on the hub as ``'None'``), or a model that is already loaded.

    >>> check_spec(3)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: load_model takes a model's name or path, got 3 (int)
      hint: e.g. load_model('gpt2'), load_model('path/to/model_dir') or load_model() for the default
    """
    if isinstance(spec, (str, os.PathLike)):
        return
    if isinstance(spec, HeadscopeModel) or hasattr(spec, "run_with_hooks"):
        raise BadInput(
            f"load_model got a model that is already loaded ({spec!r:.80})",
            hint="pass it to the analysis as it is (no need to load it again), or give load_model its name or path",
        )
    raise BadInput(
        f"load_model takes a model's name or path, got {spec!r:.60} ({type(spec).__name__})",
        hint="e.g. load_model('gpt2'), load_model('path/to/model_dir') or load_model() for the default",
    )


def refuse_non_finite(hf_model, name: str) -> None:
    """Raise :class:`ModelLoadError` (exit 3) naming the first parameter or buffer that holds NaN or infinity.

    One pass over the weights (about 0.1 s for 135M parameters on a CPU), so that no command meets
    NaN weights half-way through an analysis.
    """
    tensors = list(hf_model.named_parameters()) + list(hf_model.named_buffers())
    for tname, t in tensors:
        if not t.is_floating_point() or t.device.type == "meta":
            continue
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            n = int(bad.sum())
            raise ModelLoadError(
                f"the weights of {name!r} are not finite: {tname} holds {n:,} NaN or infinite value"
                f"{'s' if n > 1 else ''} (of {t.numel():,}); nothing was analysed",
                hint="the checkpoint is broken (a training run that diverged, or a bad conversion): "
                "use an earlier checkpoint, or load it in a wider --dtype if it overflowed in float16",
            )


def resolve_source(spec: str | os.PathLike, log: Log = lambda m: None) -> ModelSource:
    """Turn what the user typed into a loadable directory or hub id (fetching/converting).

    Built-in aliases and ``.gguf`` files are fetched and converted into the cache here, once.
    Hub ids are returned as they are: their availability is checked when they are loaded
    (:func:`check_hub_available`).
    """
    text = str(spec).strip()
    if not text:
        raise BadInput(
            "empty model name",
            hint=f"name a model: the built-in default is {builtin.DEFAULT_MODEL} (`headscope models` lists the others)",
        )
    alias = builtin.canonical_alias(text, log=log)
    if alias is not None:  # outputs carry the alias that says what the model is, whatever was typed
        return ModelSource(alias, "builtin", str(prepare_builtin(alias, log=log)))
    path = _expand(text)
    if path.exists():
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise BadInput(
                    f"{path} is a file but not a .gguf file",
                    hint="pass a model directory (with config.json), a .gguf file or a hub id",
                )
            return ModelSource(text, "gguf", str(prepare_gguf(path, log=log)))
        if not (path / "config.json").is_file():
            raise BadInput(
                f"{path} is a directory without a config.json, so it is not a Hugging Face model directory",
                hint="point at the folder that holds config.json and the weights "
                "(e.g. one written by `model.save_pretrained(dir)`)",
            )
        refuse_custom_code(path, repr(text))
        refuse_pickle_only(path, repr(text))
        _check_causal_lm(_read_config(str(path)), repr(text))
        return ModelSource(text, "local", str(path))
    if _looks_like_path(text):
        raise BadInput(
            f"model path {text} does not exist",
            hint="check the path; for the offline default use --model smollm2-135m-instruct-q4; "
            "`headscope models` lists built-in models",
        )
    return ModelSource(text, "hub", text)


def _custom_code_refusal(where: str, what: str) -> ModelLoadError:
    return ModelLoadError(
        f"{where} asks to run its own Python code ({what}); headscope never runs code from a model, "
        "so nothing was loaded",
        hint="use a model whose architecture transformers ships (its config names a known model_type and "
        "no auto_map), or remove auto_map after checking that the standard class fits",
    )


def refuse_custom_code(path: Path, where: str) -> None:
    """Refuse a model directory whose ``config.json`` or ``tokenizer_config.json`` has ``auto_map`` (custom code)."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            doc = json.loads((path / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not read {path / name}: {exc}", hint="check the model directory") from None
        if isinstance(doc, dict) and doc.get("auto_map"):
            shown = ", ".join(f"{k} -> {v}" for k, v in list(doc["auto_map"].items())[:2])
            raise _custom_code_refusal(where, f"{name} has auto_map: {shown}")


def refuse_pickle_only(path: Path, where: str) -> None:
    """Refuse a model directory whose weights are only pickles (``*.bin``), unless HEADSCOPE_ALLOW_PICKLE=1."""
    if any(path.glob("*.safetensors")) or not any(path.glob("*.bin")):
        return
    if os.environ.get(ALLOW_PICKLE_ENV) == "1":
        return
    raise ModelLoadError(
        f"{where} has only pickled weights ({', '.join(sorted(p.name for p in path.glob('*.bin'))[:2])}); "
        "headscope reads safetensors only, because unpickling can run code",
        hint=f'convert it once where you trust the file: python -c "from transformers import AutoModelForCausalLM as '
        f"A; A.from_pretrained('{path}').save_pretrained('{path}', safe_serialization=True)\"; or set "
        f"{ALLOW_PICKLE_ENV}=1 to read it through torch's weights_only loader (docs/models.md)",
    )


def _expand(text: str) -> Path:
    """``text`` as a path with ``~`` / ``~user`` expanded; an unknown user is bad input, not a RuntimeError."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib: "Could not determine home directory."
        user = text[1:].split("/", 1)[0]
        raise BadInput(
            f"model path {text} starts with ~{user}, but "
            + (
                f"there is no user {user!r} on this machine"
                if user
                else "the home directory is unknown (HOME is not set)"
            ),
            hint="check the spelling, or give the path without ~ (e.g. an absolute path)",
        ) from None


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.lower().endswith(".gguf")
        or text.count("/") > 1
        or os.sep != "/"
        and os.sep in text
    )


def prepare_builtin(alias: str, log: Log = lambda m: None) -> Path:
    """The cached safetensors directory for a built-in model, made on first use."""
    model = builtin.BUILTINS[builtin.canonical_alias(alias, log=log) or alias]
    target = cache.cache_dir() / "models" / model.folder
    if _is_converted(target):
        return target
    cache.ensure_writable(cache.cache_dir())
    gguf = builtin.fetch_gguf(model, log=log)
    convert_gguf(gguf, target, log=log, extra={"alias": model.alias, "sha256": model.sha256})
    return target


def prepare_gguf(path: Path, log: Log = lambda m: None) -> Path:
    """Dequantize a user's GGUF file once; the cache key follows the file's path, size and mtime."""
    import hashlib

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache.cache_dir() / "models" / f"gguf-{path.stem}-{key}"
    if _is_converted(target):
        return target
    cache.ensure_writable(cache.cache_dir())
    convert_gguf(path, target, log=log, extra={"gguf": str(path.resolve())})
    return target


def _is_converted(target: Path) -> bool:
    # headscope.json is written last, so its presence means the conversion finished; the
    # weights are checked too in case someone deleted or truncated files by hand (a cut
    # model.safetensors would otherwise be reported "ready" and fail only when loaded).
    return (
        (target / "headscope.json").is_file()
        and (target / "model.safetensors").is_file()
        and all(safetensors_complete(p) for p in target.glob("*.safetensors"))
    )


def safetensors_complete(path: Path) -> bool:
    """Whether the safetensors file ``path`` holds every byte its header promises (cheap: reads the header only).

    Layout: an 8-byte little-endian header length N, N bytes of JSON whose tensors give
    ``data_offsets`` [begin, end) into the data that follows; the file is complete when its size
    is ``8 + N + max(end)``.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return False
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        return size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bars (restored afterwards).

    Loading from a local directory takes about a second, so the bar is noise. The GGUF
    dequantize bar ("Converting and de-quantizing GGUF tensors") uses tqdm directly and stays.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def convert_gguf(gguf: Path, target: Path, log: Log = lambda m: None, extra: dict | None = None) -> Path:
    """Dequantize ``gguf`` with transformers and save safetensors + config + tokenizer to ``target``.

    Written into a temporary directory and moved into place at the end, so an interrupted
    conversion leaves nothing behind that a later run would trust.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"Converting {gguf.name} to safetensors (once; later loads take seconds)...")
    t0 = time.perf_counter()
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
            )
    except Exception as exc:  # gguf raises assorted errors on truncated or foreign files
        raise ModelLoadError(
            f"could not read GGUF file {gguf}: {type(exc).__name__}: {_first_line(exc)}",
            hint="the file may be truncated or corrupt, or not a causal LM that transformers can "
            "dequantize; download it again",
        ) from exc
    # The dequantized weights are plain float tensors; drop the GGUF quantization record so
    # that save_pretrained writes ordinary safetensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    try:
        with cache.atomic_dir(target) as tmp, quiet_progress():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            meta = {"source_gguf": gguf.name, "converted_seconds": round(time.perf_counter() - t0, 1)}
            meta.update(extra or {})
            (tmp / "headscope.json").write_text(json.dumps(meta, indent=2))  # last: marks it complete
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as SafetensorError, not OSError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        raise ModelLoadError(
            f"could not write the converted model to {target.parent} ({why}); nothing was kept",
            hint="free some disk space (a float32 copy takes about 4 bytes per parameter), or set "
            "HEADSCOPE_CACHE to a directory with room",
        ) from exc
    log(f"Cached at {target} ({cache.dir_size(target) / 1e6:.0f} MB, {time.perf_counter() - t0:.0f} s)")
    return target


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _hub_reachable(timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hf_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        return isinstance(found, str)
    except Exception:
        return False


def _read_config(where: str, **kwargs):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False, **kwargs)
    except Exception as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise _custom_code_refusal(repr(where), "its config needs custom code") from None
        raise ModelLoadError(
            f"could not read the model config of {where!r}: {_first_line(exc)}",
            hint="check the model id or directory (its config.json must name a model_type transformers knows)",
        ) from exc
    if getattr(config, "auto_map", None):
        raise _custom_code_refusal(repr(where), "its config has auto_map")
    return config


def _check_causal_lm(config: Any, where: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        ok = False
    elif archs:
        ok = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    else:
        ok = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not ok:
        raise ModelLoadError(
            f"{where} is a {config.model_type} model ({', '.join(archs) or 'no causal-LM head'}), "
            "not a causal (decoder-only) language model",
            hint="headscope analyses causal LMs such as gpt2, EleutherAI/pythia-70m or Llama-family models",
        )


def check_hub_available(repo_id: str, revision: str | None = None) -> bool:
    """Fail fast if a hub id can be neither downloaded nor read from the Hugging Face cache.

    One TCP probe (3 s at most) instead of transformers' retries, which take about a minute
    to give up when there is no network. Returns True when the hub is reachable, False when
    only the local Hugging Face cache can serve the model (then load with ``local_files_only``).
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    reachable = not offline and _hub_reachable()
    if not reachable and not _in_hf_cache(repo_id, revision):
        near = builtin.near_alias(repo_id)
        raise ModelLoadError(
            f"cannot load {repo_id!r}: it is not a local path, it is not in the Hugging Face cache, "
            "and the Hugging Face hub is " + ("disabled (HF_HUB_OFFLINE=1)" if offline else "unreachable"),
            hint=f"did you mean --model {near}? (the built-in model's name, all lower case)"
            if near
            else "use the offline default (--model smollm2-135m-instruct-q4), a local model directory or a "
            ".gguf file; or run once where the hub is reachable to fill the cache",
        )
    return reachable


def fetch_hub(repo_id: str, revision: str | None = None) -> Path:
    """Download a hub model into the Hugging Face cache now (config, tokenizer, weights).

    Loads it once on the CPU, which both downloads exactly the files transformers needs and
    checks that it is a causal LM. Returns the snapshot directory in the Hugging Face cache.
    """
    from huggingface_hub import try_to_load_from_cache

    _load_hf(ModelSource(repo_id, "hub", repo_id), torch.float32, None, revision)
    config = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(config).parent if isinstance(config, str) else Path(repo_id)


def _load_hf(source: ModelSource, dtype: torch.dtype, device_map, revision):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = source.path
    kwargs: dict[str, Any] = {}
    quiet = True
    if source.kind == "hub":
        if revision:
            kwargs["revision"] = revision
        if check_hub_available(where, revision):
            quiet = False  # a download may follow: let its progress show
        else:
            kwargs["local_files_only"] = True
    _check_causal_lm(_read_config(where, **kwargs), repr(source.name))
    progress = quiet_progress() if quiet else contextlib.nullcontext()
    with warnings.catch_warnings(), progress:
        warnings.simplefilter("ignore")
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the tokenizer of {where!r}: {_first_line(exc)}",
                hint="a model directory needs its tokenizer files (tokenizer.json, or vocab.json + merges.txt)",
            ) from exc
        try:
            model = AutoModelForCausalLM.from_pretrained(
                where,
                dtype=dtype,
                attn_implementation="eager",
                device_map=device_map,
                trust_remote_code=False,
                # safetensors only, unless the user opted in; then torch's weights_only loader
                use_safetensors=None if os.environ.get(ALLOW_PICKLE_ENV) == "1" else True,
                weights_only=True,
                **kwargs,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the weights of {where!r}: {type(exc).__name__}: {_first_line(exc)}",
                hint="check that the directory holds complete weights in safetensors (model.safetensors); "
                f"pickled pytorch_model.bin loads only with {ALLOW_PICKLE_ENV}=1 (docs/models.md)",
            ) from exc
    model.eval()
    return model, tokenizer


def _wrap(source: ModelSource, hf_model, tokenizer, device, dtype, device_map) -> HeadscopeModel:
    from transformer_lens.model_bridge import TransformerBridge

    # TransformerLens sets a missing BOS token to EOS on the tokenizer; remember what the
    # model's own tokenizer said so the scans can state the choice.
    own_bos = (tokenizer.bos_token_id, tokenizer.eos_token_id)
    own_prefix = tokenizer_prefix(tokenizer)
    kwargs: dict[str, Any] = {"hf_model": hf_model, "tokenizer": tokenizer, "dtype": dtype}
    if device_map is None:
        kwargs["device"] = device
        # TransformerBridge records the device but does not move a model it is handed: without
        # this the embedding stays on the CPU while the bridge sends token ids to the GPU.
        hf_model = kwargs["hf_model"] = hf_model.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            bridge = TransformerBridge.boot_transformers(source.path, trust_remote_code=False, **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"TransformerLens could not wrap {source.name!r} ({type(hf_model).__name__}): {_first_line(exc)}",
                hint="TransformerBridge supports the architectures listed by "
                "`TransformerBridge.list_supported_models()`",
            ) from exc
    bridge.eval()
    return HeadscopeModel(bridge, source, FirstToken.choose(*own_bos, own_prefix=own_prefix))


def tokenizer_prefix(tokenizer) -> tuple[int, ...] | None:
    """The ids ``tokenizer`` itself puts before a text (its special-token prefix), or None if it cannot say."""
    try:
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
        full = list(tokenizer("a")["input_ids"])
    except Exception:
        return None
    if not plain or full[len(full) - len(plain) :] != plain:
        return None
    return tuple(int(i) for i in full[: len(full) - len(plain)])


def list_cached() -> list[dict[str, Any]]:
    """Models converted into the cache: name, size in bytes, path."""
    root = cache.cache_dir() / "models"
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if not d.name.startswith(".") and d.is_dir() and _is_converted(d):
                out.append({"name": d.name, "bytes": cache.dir_size(d), "path": str(d)})
    return out


#: The cache's other folders: what each holds (``headscope models`` lists them beside the models).
CACHE_EXTRAS = {
    "downloads": "the built-in models' downloaded GGUF files (fetched again when missing)",
    "scores": "weight and sink scores cached per model weights (computed again when missing)",
}


def cache_extras() -> list[dict[str, Any]]:
    """The cache's folders other than ``models``: name, what it holds, size in bytes, file count, path."""
    out = []
    for name, what in CACHE_EXTRAS.items():
        d = cache.cache_dir() / name
        if d.is_dir():
            files = sum(1 for p in d.rglob("*") if p.is_file())
            out.append({"name": name, "what": what, "bytes": cache.dir_size(d), "files": files, "path": str(d)})
    return out


def gguf_source(folder: str) -> str | None:
    """The file name a ``gguf-STEM-KEY`` cache folder was converted from (``STEM.gguf``), else None.

    >>> gguf_source("gguf-model.Q4_1-3f2a"), gguf_source("smollm2-135m")
    ('model.Q4_1.gguf', None)
    """
    if not folder.startswith("gguf-") or folder.count("-") < 2:
        return None
    return folder[len("gguf-") :].rsplit("-", 1)[0] + ".gguf"
