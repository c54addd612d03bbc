"""Writing result sets so that a reader finds the old set or the new one, never a mix.

Every command that writes results goes through :class:`ResultDir` (a directory of files) or
:class:`ResultFile` (one file, the report page):

1. **Before the model loads**, :meth:`ResultDir.open` checks ``--out``: it must be a new or empty
   directory, or one headscope wrote (its manifest ``.headscope-results.json`` lists what it
   holds); earlier results are replaced only with ``--overwrite`` (else :class:`OutputExists`,
   exit 4), and never while the folder holds a file the manifest does not list (the user's own,
   put there afterwards: exit 4 whatever ``--overwrite`` says); a lock (the ``filelock`` library) beside it makes a second run into the same
   ``--out`` fail at once (exit 4); and a staging directory is created beside it, which proves the
   place is writable (else :class:`OutputError`, exit 5).
2. Files are written into the staging directory.
3. :meth:`ResultDir.commit` moves the complete set into place: the old set (if any) is renamed
   aside, the new one renamed in, the old one deleted. With ``--overwrite`` no stale file of the
   earlier run is left beside the new ones.
4. On any failure or Ctrl-C the staging directory is removed and the old set is untouched.

The sweep adds to its folder entry by entry instead (a rerun resumes it), so it is not written
all at once; it writes the same manifest into ``--out`` before its first file, and
:func:`check_resumable` lets it write only into a new or empty folder or one holding an earlier
sweep's results: never among files headscope did not write (exit 4, whatever ``--overwrite`` says).

Disk errors (full, read-only, permission) become one-line :class:`OutputError` messages.
``--out`` that is a FIFO, a device, a socket or a symbolic link is never replaced
(:func:`refuse_special`, exit 5), whatever ``--overwrite`` says.

Staging folders, temporary files and set-aside old sets carry their owner's process id in
their names (``.OUT.partial-PID-*``, ``.OUT.PID-*.partial``, ``.OUT.old-PID``). A run killed by
SIGKILL leaves them behind; the next run into the same ``--out`` removes those whose owner is
gone, while it holds the lock, and never a live process's (:func:`clean_stale`). A lock file
left by a dead owner holds no lock (the kernel drops a dead process's ``flock``): the next run
takes it and removes it when it ends.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .._version import __version__
from ..atomic import write_atomic
from ..errors import OutputError, OutputExists

MANIFEST = ".headscope-results.json"
#: Names headscope's commands write: a folder holding only these (and no manifest), among them a result
#: JSON that is headscope's (:func:`_written_by_headscope`), is an earlier version's result set,
#: replaceable with --overwrite.
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
    "phase.json",
    "phase.csv",
    "phase*.png",
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


#: Locks this process holds (by lock path): taking one again inside the block is a no-op, so
#: ``train-toy`` can hold its ``--out`` through training and analysis while the steps inside
#: take the same lock as every other writer.
_HELD: dict[str, int] = {}

_SPECIAL = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def refuse_special(target: Path) -> None:
    """Refuse (exit 5) a ``target`` that is a symbolic link, FIFO, device or socket: never replaced.

    >>> try:
    ...     refuse_special(Path("/dev/null"))
    ... except OutputError as exc:
    ...     print(exc.message.split(";")[0])
    --out /dev/null is a character device

    A ``target`` that ends in ``.`` or ``..`` (``--out .``, ``--out ..``, ``/``) is refused too, with
    its real name in the hint: the lock and the staging folder go beside ``--out`` under its name,
    and ``.`` has none (the lock landed inside, and was then taken for a file of the user's).
    """
    if Path(target).name in ("", ".."):
        named = os.path.abspath(target)
        raise OutputError(
            f"--out {target} names a folder by {'its place' if str(target) == '/' else repr(str(target))} "
            "instead of its name: the lock and the staging folder go beside --out under its name; nothing was "
            "changed",
            hint=f"give the folder's name, e.g. --out {named}"
            if named != "/"
            else "choose a folder to create, e.g. --out results",
        )
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise describe_os_error(exc, target) from None
    for test, what in _SPECIAL:
        if test(mode):
            if stat.S_ISLNK(mode):
                what += f" (to {os.readlink(target)})"
            raise OutputError(
                f"--out {target} is {what}; headscope replaces only regular files and the result folders it "
                "wrote; nothing was changed",
                hint="choose another --out (a new path, or a directory headscope wrote)",
            )


@contextlib.contextmanager
def output_lock(target: Path, *, _hold: bool = False) -> Iterator[None]:
    """Hold the lock beside ``target`` (``.NAME.lock``) for the block; held elsewhere: :class:`OutputExists` at once.

    The place is proved writable first, so a folder the lock cannot be made in (``/proc``, a
    read-only disk) is an :class:`OutputError` (exit 5), never "another run is writing". Stale
    leftovers of a dead earlier run into ``target`` are removed once the lock is held.
    """
    from filelock import FileLock, Timeout

    path = _lock_path(target)
    key = str(path.absolute())
    if key in _HELD:  # this process holds it already, through hold_out
        yield
        return
    probe_writable(target.parent, target)
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
    if _hold:
        _HELD[key] = os.getpid()
    try:
        clean_stale(target)
        yield
    finally:
        _HELD.pop(key, None)
        lock.release()
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def hold_out(target: str | os.PathLike) -> Iterator[None]:
    """Hold ``target``'s lock for a whole multi-step run (``train-toy``: training, then its analysis).

    Checks as every writer does (not a FIFO/device/socket/link, parent folders made and removed again
    if left empty, the place writable); the steps inside take the same lock again at no cost.
    """
    target = Path(target)
    refuse_special(target)
    with _parent_ready(target), output_lock(target, _hold=True):
        yield


def owner_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process we may not signal exists too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str, base: str) -> int | None:
    """The owner pid written into a leftover's name (``.BASE.partial-PID-*``, ``.BASE.PID-*.partial``, ``.BASE.old-PID``)."""
    import re

    stem = re.escape(f".{base}.")
    for pattern in (
        stem + r"partial-(\d+)-",
        stem + r"(\d+)-.*\.partial$",
        stem + r"old-(\d+)$",
        stem + r"probe-(\d+)-",
    ):
        m = re.match(pattern, name)
        if m:
            return int(m.group(1))
    return None


def clean_stale_files(folder: Path) -> list[Path]:
    """Remove the temporary files (``.NAME.PID-*.partial``) that dead processes left in ``folder``."""
    import re

    removed: list[Path] = []
    try:
        names = [p for p in folder.iterdir() if p.name.endswith(".partial")]
    except OSError:
        return removed
    for p in names:
        m = re.match(r"^\..*\.(\d+)-[^.]*\.partial$", p.name)
        if m and not owner_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def clean_stale(target: Path) -> list[Path]:
    """Remove what dead runs into ``target`` left beside it; returns what was removed (call holding the lock).

    A set-aside old set (``.OUT.old-PID``) of a run killed between its two renames is put back
    when ``target`` is missing, so the earlier results come back rather than being deleted.
    """
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        pid = _owner(p.name, target.name)
        if pid is None or owner_alive(pid):
            continue
        try:
            if p.name.startswith(f".{target.name}.old-") and not os.path.lexists(target):
                os.replace(p, target)
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


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
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.probe-{os.getpid()}-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise describe_os_error(exc, target) from None


def make_staging(target: Path) -> Path:
    """A new private folder beside ``target`` whose name records this process as its owner."""
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-{os.getpid()}-"))


def replace_dir(staging: Path, target: Path) -> None:
    """Move the complete folder ``staging`` to ``target``: the old one aside, the new one in, the old one deleted.

    Interrupted between the two renames (also by Ctrl-C), the old one is put back; killed there,
    the next run's :func:`clean_stale` puts it back.
    """
    old = None
    try:
        if os.path.lexists(target):
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException as exc:
        if old is not None and old.exists() and not os.path.lexists(target):
            os.replace(old, target)
        if isinstance(exc, OSError):
            raise describe_os_error(exc, target) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        refuse_special(target)
        if target.exists() and not target.is_dir():
            raise OutputError(f"--out {target} is a file, not a directory", hint="choose another --out")
        with _parent_ready(target), output_lock(target):
            check_replaceable(target, overwrite)
            try:
                staging = make_staging(target)
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
        try:
            (self.staging / MANIFEST).write_text(_manifest(self.command, self.written))
            _normal_permissions(self.staging)
        except OSError as exc:
            raise describe_os_error(exc, self.target) from None
        replace_dir(self.staging, self.target)
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
    legacy = all(any(fnmatch.fnmatch(n, pat) for pat in KNOWN_NAMES) for n in entries) and _written_by_headscope(
        target, entries
    )
    if not manifest.is_file() and not legacy:
        raise OutputExists(
            f"--out {target} already holds files headscope did not write ({', '.join(sorted(entries)[:3])}"
            + (" ..." if len(entries) > 3 else "")
            + "); nothing was written",
            hint="choose a new or empty directory for --out (headscope replaces only its own result sets)",
        )
    if manifest.is_file():
        foreign = _not_in_manifest(target)
        if foreign:
            raise OutputExists(
                f"--out {target} holds headscope's results and files it did not write beside them "
                f"({', '.join(foreign[:3])}" + (" ..." if len(foreign) > 3 else "") + "); nothing was written",
                hint="move those files out of the folder first (replacing the results would delete them), "
                "or choose another --out",
            )
    if not overwrite:
        written = read_manifest(target) or {}
        files = written.get("files", entries)
        command = written.get("command")
        shown = ", ".join(files[:4]) + (" ..." if len(files) > 4 else "")
        whose = f"results of `headscope {command}`" if isinstance(command, str) and command else "results"
        raise OutputExists(
            f"{target} already holds {whose} ({shown}); nothing was written",
            hint="pass --overwrite to replace them (they are deleted), or choose another --out",
        )


def _written_by_headscope(target: Path, entries: list[str]) -> bool:
    """Whether a folder without a manifest is an earlier version's result set, not the user's files that
    happen to have headscope's names: it holds a result JSON, and every one it holds is headscope's
    (an object with the ``model`` object of an analysis, or the ``steps`` and ``curves`` of a toy run).
    A ``scores.json`` of the user's own was deleted by ``--overwrite``."""
    found = [n for n in entries if n in ("scores.json", "qk.json", "phase.json")]
    for name in found:
        try:
            d = json.loads((target / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(d, dict) or not (isinstance(d.get("model"), dict) or {"steps", "curves"} <= d.keys()):
            return False
    return bool(found)


def _not_in_manifest(target: Path, limit: int = 10_000) -> list[str]:
    """Files under ``target`` (relative, ``/``-separated) that its manifest does not list: the user's own,
    added after headscope wrote the folder. ``--overwrite`` replaces the whole folder, so it must not
    run over them (a notes file or a data folder put beside the results was deleted)."""
    listed = set((read_manifest(target) or {}).get("files") or [])
    out: list[str] = []
    for root, dirs, files in os.walk(target):
        dirs.sort()
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(target).as_posix()
            if rel != MANIFEST and rel not in listed and not _is_temporary(name):
                out.append(rel)
        if len(out) >= limit:
            break
    return out


def _manifest(command: str, files: list[str]) -> str:
    """The manifest's text: which command and version wrote the folder, when, and its files."""
    manifest = {
        "command": command,
        "headscope": __version__,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "files": files,
    }
    return json.dumps(manifest, indent=2)


def read_manifest(target: Path) -> dict | None:
    """The manifest headscope wrote into ``target``, or None (none there, or not one headscope wrote)."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_temporary(name: str) -> bool:
    """A temporary file of :func:`headscope.atomic.write_atomic` (``.NAME.PID-XXXX.partial``)."""
    return re.match(r"^\..*\.\d+-[^.]*\.partial$", name) is not None


def check_resumable(target: Path, command: str, names: tuple[str, ...], earlier: Callable[[Path], bool]) -> None:
    """Refuse (exit 4) a ``target`` that ``command``, which adds to its folder instead of replacing it
    (the sweep: a rerun resumes it), may not write into.

    It may write into a new or empty folder, one whose manifest says ``command`` wrote it, or one
    an earlier version of it wrote before it wrote a manifest: nothing but ``names`` (and
    temporary files) there, and ``earlier(target)`` true. Anything else is refused, whatever
    ``--overwrite`` says: headscope never writes among files it did not write, nor into another
    command's result set.
    """
    if not target.is_dir():
        return
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    hint = (
        f"choose a new or empty directory for --out, or the --out of an earlier {command} to resume it "
        f"(headscope {command} writes only into its own folders)"
    )
    manifest = read_manifest(target)
    if manifest is not None:
        if manifest.get("command") == command:
            return
        raise OutputExists(
            f"--out {target} holds the results of `headscope {manifest.get('command')}` ({shown}), "
            f"not a {command}'s; nothing was written",
            hint=hint,
        )
    own = [n for n in entries if not _is_temporary(n)]
    if not own or (set(own) <= set(names) and earlier(target)):
        return
    raise OutputExists(
        f"--out {target} already holds files headscope did not write ({shown}); nothing was written",
        hint=hint,
    )


def mark_results(target: Path, command: str, files: list[str]) -> None:
    """Write ``command``'s manifest into ``target`` (a folder that ``command`` adds to, the sweep's)."""
    write_file_atomic(target / MANIFEST, _manifest(command, files))


class ResultFile:
    """One result file (the report page) written to a temporary sibling and renamed into place."""

    @staticmethod
    @contextlib.contextmanager
    def open(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Callable[[str], Path]]:
        """Check and lock ``out`` now; yields ``write(text)``, which stages and renames in one go."""
        target = Path(out)
        refuse_special(target)
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


def normal_permissions(root: Path) -> None:
    """Give ``root`` and everything under it the modes a file the user writes gets (0644/0755 under umask 022)."""
    _normal_permissions(root)


def _normal_permissions(root: Path) -> None:
    # mkdtemp creates 0700 folders; give the finished set the permissions any file the user writes gets.
    mask = _umask()
    root.chmod(0o777 & ~mask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
