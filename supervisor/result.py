"""What a finished container leaves behind: how it ended and what it used."""

from __future__ import annotations

from .errors import EXIT_PYCTR_FAILED, PyctrError
from .signals import signal_name


class ContainerResult:
    """How a container ended, like ``subprocess.CompletedProcess`` plus resource use.

    ``exit_code`` follows the CLI's contract: the workload's own code, 128+N when signal N
    killed it, 125/126/127 when pyctr could not start it. Because a workload may itself return
    125-127, ``error`` (a dotted name such as ``command.not_found``) and ``message`` tell a
    setup failure apart: they are None when the workload ran.

    ``error == "protocol.error"`` (``exit_code`` 125, ``signal`` None): the container's init
    broke the protocol (a message that does not decode, is out of place or out of range, or
    brings descriptors it should not), so the supervisor killed the container; it has been
    reaped by the time the result exists. ``message`` says what was wrong, on one line.
    ``message`` is always one printable line: what came from inside the container has its
    control characters escaped (``\\x1b``).
    """

    __slots__ = ("command", "container", "cpu_seconds", "duration", "error", "exit_code",
                 "host_pid", "max_rss_kib", "message", "pid", "signal", "stderr", "stdout")

    def __init__(self, container: str, command: list[str]) -> None:
        self.container = container
        self.command = command
        self.exit_code = EXIT_PYCTR_FAILED
        self.signal: int | None = None
        self.error: str | None = None
        self.message: str | None = None
        self.pid: int | None = None
        self.host_pid: int | None = None
        self.duration = 0.0
        self.cpu_seconds = 0.0
        self.max_rss_kib = 0
        self.stdout: bytes | None = None
        """What the workload wrote to stdout, with ``run(..., capture_stdout=True)``."""
        self.stderr: bytes | None = None

    @property
    def returncode(self) -> int:
        """Same as ``exit_code``; the name ``subprocess`` and trio use."""
        return self.exit_code

    @property
    def started(self) -> bool:
        """Whether the workload ran at all (as opposed to a setup failure)."""
        return self.pid is not None

    def check_returncode(self) -> None:
        """Raise ContainerFailed when the exit code is not zero."""
        if self.exit_code != 0:
            raise ContainerFailed(self)

    def __repr__(self) -> str:
        how = (f"error={self.error!r}" if self.error
               else f"signal={signal_name(self.signal)}" if self.signal
               else f"exit_code={self.exit_code}")
        return f"<ContainerResult {self.container} {how} duration={self.duration:.3f}s>"


class ContainerFailed(PyctrError):
    """Raised by ``run(..., check=True)`` when the container's exit code is not zero."""

    def __init__(self, result: ContainerResult) -> None:
        message = result.message or f"container {result.container} exited with {result.exit_code}"
        super().__init__(message, exit_code=result.exit_code,
                         error=result.error or "workload.failed")
        self.result = result
