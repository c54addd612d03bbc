"""Writing result sets so that a reader finds the old set or the new one, never a mix.

Every command that writes results goes through :class:`ResultDir` (a directory of files) or
:class:`ResultFile` (one file, the report page):

1. **Before the model loads**, :meth:`ResultDir.open` checks ``--out``: it must be a new or empty
   directory, or one headscope wrote (its manifest ``.headscope-results.json`` lists what it
   holds); earlier results are replaced only with ``--overwrite`` (else :class:`OutputExists`,
   exit 4); a lock (the ``filelock`` library) beside it makes a second run into the same
   ``--out`` fail at once (exit 4); and a staging directory is created beside it, which proves the
   place is writable (else :class:`OutputError`, exit 5).
2. Files are written into the staging directory.
3. :meth:`ResultDir.commit` moves the complete set into place: the old set (if any) is renamed
   aside, the new one renamed in, the old one deleted. With ``--overwrite`` no stale file of the
   earlier run is left beside the new ones.
4. On any failure or Ctrl-C the staging directory is removed and the old set is untouched.

Disk errors (full, read-only, permission) become one-line :class:`OutputError` messages.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .._version import __version__
from ..atomic import write_atomic
from ..errors import OutputError, OutputExists

MANIFEST = ".headscope-results.json"
#: Names headscope's commands write: a folder holding only these (and no manifest) is an earlier
#: version's result set, replaceable with --overwrite.
KNOWN_NAMES = (
    "scores.json",
    "scores.csv",
    "heatmap_*.png",
    "loss_by_position.png",
    "ablation.png",
    "attention_*.png",
    "report.html",
    "qk.json",
    "heads.csv",
    "decomposition.csv",
    "positional.csv",
    "token_qk.csv",
    "composition.csv",
    "figures",
)


def describe_os_error(exc: OSError, where: Path) -> OutputError:
    """An :class:`OutputError` saying what the filesystem refused and what to do."""
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        what, hint = "the disk is full", "free some space or choose another --out"
    elif code in (errno.EROFS,):
        what, hint = "the filesystem is read-only", "choose a writable --out"
    elif code in (errno.EACCES, errno.EPERM):
        what, hint = "permission denied", "choose a directory you can write to with --out"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        what, hint = "a path on the way is a file, not a directory", "choose another --out"
    else:
        what, hint = exc.strerror or str(exc), "check the path and the disk, or choose another --out"
    return OutputError(f"cannot write results to {where}: {what}; nothing was changed there", hint=hint)


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the lock beside ``target`` (``.NAME.lock``) for the block; held elsewhere: :class:`OutputExists` at once."""
    from filelock import FileLock, Timeout

    path = _lock_path(target)
    try:
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        raise OutputExists(
            f"another headscope run is writing to {target} right now; nothing was written",
            hint="wait for it to finish, or choose another --out",
        ) from None
    except OSError as exc:
        raise describe_os_error(exc, target) from None
    try:
        yield
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            path.unlink()


def _check_parent(target: Path) -> list[Path]:
    """Create ``target``'s parent folders; returns those it created (outermost first)."""
    parent = target.parent
    missing = []
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise OutputError(
                    f"cannot write results to {target}: {p} is a file, not a directory", hint="choose another --out"
                )
            break
        missing.append(p)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing[::-1])
        raise describe_os_error(exc, target) from None
    return missing[::-1]


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders in ``created`` (outermost first) that are still empty: a failed run leaves no trace."""
    for p in reversed(created):
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def _parent_ready(target: Path) -> Iterator[None]:
    """``target``'s parent folders exist inside the block; those made here and left empty are removed after."""
    created = _check_parent(target)
    try:
        yield
    finally:
        _remove_empty(created)


def probe_writable(folder: Path, target: Path) -> None:
    """Create and delete a file in ``folder``: proves the place is writable before any work starts."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise describe_os_error(exc, target) from None


class ResultDir:
    """A directory of result files, written all at once (see the module's description).

    >>> with ResultDir.open(tmp / "out", command="demo") as rd:
    ...     _ = rd.write_text("a.json", "{}")
    ...     files = rd.commit()
    >>> sorted(p.name for p in (tmp / "out").iterdir())
    ['.headscope-results.json', 'a.json']
    """

    def __init__(self, target: Path, staging: Path, command: str, overwrite: bool):
        self.target, self.staging, self.command, self.overwrite = target, staging, command, overwrite
        self.written: list[str] = []
        self.committed = False

    @classmethod
    @contextlib.contextmanager
    def open(cls, out: str | os.PathLike, *, command: str, overwrite: bool = False) -> Iterator[ResultDir]:
        """Check ``out``, lock it and stage a new set beside it; the block writes and commits."""
        target = Path(out)
        if target.exists() and not target.is_dir():
            raise OutputError(f"--out {target} is a file, not a directory", hint="choose another --out")
        with _parent_ready(target), output_lock(target):
            check_replaceable(target, overwrite)
            try:
                staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
            except OSError as exc:
                raise describe_os_error(exc, target) from None
            rd = cls(target, staging, command, overwrite)
            try:
                yield rd
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where ``name`` is staged (sub-folders created)."""
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write(self, name: str, writer: Callable[[Path], object]) -> Path:
        """Stage ``name`` by calling ``writer(path)``; disk errors become :class:`OutputError`."""
        try:
            writer(self.path(name))
        except OSError as exc:
            raise describe_os_error(exc, self.target) from None
        self.written.append(name)
        return self.target / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda p: p.write_text(text, encoding="utf-8"))

    def write_bytes(self, name: str, data: bytes) -> Path:
        return self.write(name, lambda p: p.write_bytes(data))

    def commit(self) -> list[Path]:
        """Move the staged set into place (old set aside, new set in, old set deleted); returns the paths."""
        manifest = {
            "command": self.command,
            "headscope": __version__,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "files": self.written,
        }
        try:
            (self.staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            _normal_permissions(self.staging)
        except OSError as exc:
            raise describe_os_error(exc, self.target) from None
        old = None
        try:
            if self.target.exists():
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                os.replace(self.target, old)
            os.replace(self.staging, self.target)
        except BaseException as exc:  # also Ctrl-C between the two renames: put the old set back
            if old is not None and old.exists() and not self.target.exists():
                os.replace(old, self.target)
            if isinstance(exc, OSError):
                raise describe_os_error(exc, self.target) from None
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return [self.target / n for n in self.written]


def check_replaceable(target: Path, overwrite: bool) -> None:
    """Refuse a ``target`` that holds results (unless ``overwrite``) or anything headscope did not write."""
    if not target.is_dir():
        return
    entries = [p.name for p in target.iterdir()]
    if not entries:
        return
    manifest = target / MANIFEST
    legacy = all(any(fnmatch.fnmatch(n, pat) for pat in KNOWN_NAMES) for n in entries)
    if not manifest.is_file() and not legacy:
        raise OutputExists(
            f"--out {target} already holds files headscope did not write ({', '.join(sorted(entries)[:3])}"
            + (" ..." if len(entries) > 3 else "")
            + "); nothing was written",
            hint="choose a new or empty directory for --out (headscope replaces only its own result sets)",
        )
    if not overwrite:
        try:
            files = json.loads(manifest.read_text()).get("files", [])
        except (OSError, ValueError):
            files = entries
        shown = ", ".join(files[:4]) + (" ..." if len(files) > 4 else "")
        raise OutputExists(
            f"{target} already holds results ({shown}); nothing was written",
            hint="pass --overwrite to replace them, or choose another --out",
        )


class ResultFile:
    """One result file (the report page) written to a temporary sibling and renamed into place."""

    @staticmethod
    @contextlib.contextmanager
    def open(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Callable[[str], Path]]:
        """Check and lock ``out`` now; yields ``write(text)``, which stages and renames in one go."""
        target = Path(out)
        if target.is_dir():
            raise OutputError(
                f"--out {target} is a directory", hint="--out names the HTML file to write, e.g. --out report.html"
            )
        with _parent_ready(target), output_lock(target):
            if target.exists() and not overwrite:
                raise OutputExists(
                    f"{target} already exists; nothing was written",
                    hint="pass --overwrite to replace it, or choose another --out",
                )
            probe_writable(target.parent, target)

            def write(text: str) -> Path:
                write_file_atomic(target, text)
                return target

            yield write


def write_file_atomic(target: Path, text: str | bytes) -> None:
    """:func:`headscope.atomic.write_atomic` for an output file: an ``OSError`` becomes an :class:`OutputError`
    that names the file and what to do."""
    try:
        write_atomic(target, text)
    except OSError as exc:
        raise describe_os_error(exc, target) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_permissions(root: Path) -> None:
    # mkdtemp creates 0700 folders; give the finished set the permissions any file the user writes gets.
    mask = _umask()
    root.chmod(0o777 & ~mask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
