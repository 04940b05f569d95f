"""What a finished container leaves behind: how it ended and what it used."""

from __future__ import annotations

from .errors import EXIT_PYCTR_FAILED, PyctrError
from .signals import signal_name


class ContainerResult:
    """How a container ended, like ``subprocess.CompletedProcess`` plus resource use.

    ``exit_code`` follows the CLI's contract: the workload's own code, 128+N when signal N
    killed it, 124 when its ``timeout`` expired, 137 when the OOM killer killed one of its
    processes, 125/126/127 when pyctr could not start it. Because a workload may itself return
    125-127, ``error`` (a dotted name such as ``command.not_found``) and ``message`` tell a
    setup failure apart: they are None when the workload ran.

    ``error == "protocol.error"`` (``exit_code`` 125, ``signal`` None): the container's init
    broke the protocol (a message that does not decode, is out of place or out of range, or
    brings descriptors it should not), so the supervisor killed the container; it has been
    reaped by the time the result exists. ``message`` says what was wrong, on one line.
    ``message`` is always one printable line: what came from inside the container has its
    control characters escaped (``\\x1b``).

    The record of how it ended (``record()``, what ``--status-file`` gets): ``wall_time_s``,
    the workload's wall-clock time as its init measured it, from its start to its reap;
    ``cpu_time_s``, user plus system time of every process of the container, from its cgroup;
    ``memory_peak_bytes``, the container's highest memory charge, from its cgroup (page cache
    included, as the kernel counts it); ``oom_killed``, whether the kernel's OOM killer killed
    any of its processes for its memory limit (the exit code is then 137); ``timed_out``,
    whether its ``timeout`` expired (the exit code is then 124). Figures the host cannot give
    (no cgroup hierarchy for them) fall back to the init's own accounting: ``cpu_time_s``
    from its resource usage, ``memory_peak_bytes`` from its largest process's resident set.
    ``remaining_processes``: processes still running when the main process exited, which the
    init stopped; ``remaining_killed``: how many of them needed SIGKILL.
    """

    __slots__ = ("command", "container", "cpu_time_s", "error", "exit_code", "host_pid",
                 "memory_peak_bytes", "message", "oom_killed", "pid", "remaining_killed",
                 "remaining_processes", "signal", "stderr", "stdout", "timed_out",
                 "wall_time_s")

    def __init__(self, container: str, command: list[str]) -> None:
        self.container = container
        self.command = command
        self.exit_code = EXIT_PYCTR_FAILED
        self.signal: int | None = None
        self.error: str | None = None
        self.message: str | None = None
        self.pid: int | None = None
        self.host_pid: int | None = None
        self.wall_time_s = 0.0
        self.cpu_time_s = 0.0
        self.memory_peak_bytes = 0
        self.oom_killed = False
        self.timed_out = False
        self.remaining_processes = 0
        self.remaining_killed = 0
        self.stdout: bytes | None = None
        """What the workload wrote to stdout, with ``run(..., capture_stdout=True)``."""
        self.stderr: bytes | None = None

    def record(self) -> dict[str, object]:
        """The result record, as ``--status-file`` writes it (see the README)."""
        return {
            "container": self.container,
            "exit_code": self.exit_code,
            "signal": signal_name(self.signal),
            "wall_time_s": round(self.wall_time_s, 6),
            "cpu_time_s": round(self.cpu_time_s, 6),
            "memory_peak_bytes": self.memory_peak_bytes,
            "oom_killed": self.oom_killed,
            "timed_out": self.timed_out,
            "remaining_processes": self.remaining_processes,
            "remaining_killed": self.remaining_killed,
            "error": self.error,
            "message": self.message,
        }

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
               else "timed_out" if self.timed_out
               else "oom_killed" if self.oom_killed
               else f"signal={signal_name(self.signal)}" if self.signal
               else f"exit_code={self.exit_code}")
        return f"<ContainerResult {self.container} {how} wall_time={self.wall_time_s:.3f}s>"


class ContainerFailed(PyctrError):
    """Raised by ``run(..., check=True)`` when the container's exit code is not zero."""

    def __init__(self, result: ContainerResult) -> None:
        message = result.message or f"container {result.container} exited with {result.exit_code}"
        super().__init__(message, exit_code=result.exit_code,
                         error=result.error or "workload.failed")
        self.result = result
