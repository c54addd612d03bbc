"""Where headscope keeps fetched and converted models, and how it writes there safely.

The cache lives in ``$HEADSCOPE_CACHE`` if set, else the platform's user cache directory
(``~/.cache/headscope`` on Linux). Anything written there is built in a temporary sibling
and moved into place with one ``os.replace``: a run that fails or is interrupted half-way
leaves nothing that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelLoadError


def cache_dir() -> Path:
    env = os.environ.get("HEADSCOPE_CACHE")
    if env:
        try:
            return Path(env).expanduser()
        except RuntimeError:  # ~nosuchuser/...
            raise ModelLoadError(
                f"HEADSCOPE_CACHE={env} names a home directory that does not exist",
                hint="set HEADSCOPE_CACHE to an existing absolute path",
            ) from None
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("headscope"))


def ensure_writable(path: Path) -> Path:
    """Create ``path`` if needed and check we can write in it, or say how to fix it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ModelLoadError(
            f"cannot write to the headscope cache at {path} ({exc.strerror or exc})",
            hint="set HEADSCOPE_CACHE to a writable directory, e.g. `export HEADSCOPE_CACHE=/tmp/headscope-cache`",
        ) from exc
    return path


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield tmp
        _apply_umask(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _apply_umask(root: Path) -> None:
    # mkdtemp (and safetensors) create private 0700/0600 entries; give the finished cache
    # entry the permissions any other file the user writes would get.
    mask = os.umask(0)
    os.umask(mask)
    root.chmod(0o777 & ~mask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
