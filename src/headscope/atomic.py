"""The one atomic file writer: a file is either its old self or wholly new, never half written.

Output files, the on-disk score cache and the toy's run files all go through
:func:`write_atomic`: the data goes to a temporary sibling (``.NAME.PID-XXXX.partial``: a crash
leaves no file under the final name, and the writer's process id lets a later run remove it once its
owner is gone), which is renamed over the target with one ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path | str, data: str | bytes, *, mode: int | None = None, parents: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary sibling and one rename: all or nothing.

    ``mode``: the file's permissions (default ``0o666`` less the umask, as ``open`` gives; ``mkstemp``
    alone would make it private); ``parents``: create missing folders. ``OSError`` passes through.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.txt"
    >>> write_atomic(p, "hi", parents=True).read_text(), sorted(x.name for x in p.parent.iterdir())
    ('hi', ['x.txt'])
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path
