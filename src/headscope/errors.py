"""Errors a person can act on.

Every failure that bad input or a broken environment can cause is raised as a
:class:`HeadscopeError`: a one-line statement of what was tried and what went wrong, plus a
hint saying what to do. The CLI prints these without a traceback (unless ``--debug``) and
exits with :attr:`HeadscopeError.exit_code`.
"""

from __future__ import annotations


class HeadscopeError(Exception):
    """A failure with a message meant for the user, not a bug."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class BadInput(HeadscopeError):
    """An argument or file the user gave cannot be used (exit code 2, like a usage error)."""

    exit_code = 2


class ModelLoadError(HeadscopeError):
    """A model could not be found, fetched, converted or wrapped."""

    exit_code = 3


class OutputExists(HeadscopeError):
    """Writing would overwrite results the user already has."""

    exit_code = 4


class OutputError(HeadscopeError):
    """Results cannot be written where asked: not a directory, read-only, full, or in another's hands (exit code 5)."""

    exit_code = 5


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs (the command line exits 143)."""


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread: staging folders and locks are removed
    and the earlier results stay as they were, as on Ctrl-C (Python's default would end the process
    on the spot, leaving them behind)."""
    import signal

    def handler(signum, frame):
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. an embedding application): leave it alone
        pass
