"""Shared by the failure-mode tests: a real tmpfs, and a model loader that must not be called.

Not a test module (no ``test_`` prefix); ``tests/test_failure_modes.py`` and
``tests/test_no_clobbering.py`` wrap these in their fixtures.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import headscope
import headscope.pipeline.sweep as sweep_mod


def run_root(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


@contextlib.contextmanager
def mounted_tmpfs(d: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``d`` (root only: skipped with the reason otherwise); always unmounted."""
    d.mkdir()
    r = run_root("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()}); these checks need root")
    try:
        yield d
    finally:
        run_root("umount", "-l", str(d))


def spy_on_loaders(monkeypatch, refused: str) -> list:
    """Replace every model loader by one that records the call and stops: the list must stay empty."""
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"the model was loaded although {refused} should have been refused first")

    monkeypatch.setattr(headscope.models, "load_model", spy)
    monkeypatch.setattr(sweep_mod, "load_model", spy)
    return calls
