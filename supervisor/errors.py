"""Expected failures: each carries the one line the user sees and the exit code."""

from __future__ import annotations

EXIT_PYCTR_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_TIMED_OUT = 124
"""The container's ``--timeout`` expired (timeout(1)'s status)."""
EXIT_OOM_KILLED = 137
"""The OOM killer killed one of the container's processes for its memory limit (128 + SIGKILL,
what docker reports with ``OOMKilled``)."""


class PyctrError(Exception):
    """pyctr could not run the container. ``str()`` is the one-line explanation: what
    failed, on what path, what to do. ``error`` is a stable dotted name for logs."""

    def __init__(self, message: str, *, exit_code: int = EXIT_PYCTR_FAILED,
                 error: str = "pyctr.failed") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.error = error


class UsageError(PyctrError):
    """The command line is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error="usage.invalid")
