"""Running containers from a trio program.

    import trio
    from pyctr.supervisor import ContainerConfig, run

    async def main():
        result = await run(ContainerConfig("./rootfs", ["/bin/echo", "hello"]),
                           capture_stdout=True)
        print(result.exit_code, result.stdout, result.wall_time_s)

        async with trio.open_nursery() as nursery:  # a long-running one, stopped later
            container = await nursery.start(run, ContainerConfig("./rootfs", ["sleep", "1d"]))
            ...
            container.stop()

    trio.run(main)

Each container's init is a fresh interpreter, never a fork of the calling program: PID 1 of
a container holds nothing of the caller's memory, and it is safe whatever threads the program
runs. Events go through the caller's structlog configuration.
"""

from __future__ import annotations

import functools

import structlog
import trio

from pyctr.protocol import LOG_LEVELS

from .cleanup import sweep_stale
from .errors import PyctrError
from .primer import keep_primed
from .spawn import ensure_template, spawn_init
from .supervise import Container, supervise

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import ContainerConfig
    from .result import ContainerResult


_swept = False


async def run(
    config: ContainerConfig,
    *,
    check: bool = False,
    capture_stdout: bool = False,
    capture_stderr: bool = False,
    stdin: bytes | None = None,
    forward_signals: bool = False,
    task_status: trio.TaskStatus[Container] = trio.TASK_STATUS_IGNORED,
) -> ContainerResult:
    """Run one container to completion and return how it ended, as ``trio.run_process`` runs
    a process.

    Raises PyctrError (with the one-line explanation) when the host cannot run it at all
    (not root, rootfs missing, ...). A container that was set up but whose command failed to
    start returns a result with ``error`` and ``message`` set; with ``check=True`` any non-zero
    exit raises ContainerFailed instead. ``capture_stdout``/``capture_stderr``: the workload's
    output, as bytes, in ``result.stdout``/``result.stderr`` (instead of this process's own
    stdout/stderr; not together with ``config.capture_output``, which makes log records of
    it). ``stdin``: bytes the workload reads on its stdin, which then ends. Cancelling the
    caller stops the container: its stop signal, SIGKILL after ``config.stop_timeout``.
    ``forward_signals=True`` relays the process's SIGINT, SIGTERM, SIGHUP, ... to the
    container, as the CLI does (main thread only). With ``nursery.start(run, config)`` the
    start value is a ``Container``, to signal or stop it while it runs.
    """
    collect = tuple(stream for stream, wanted in (("stdout", capture_stdout),
                                                  ("stderr", capture_stderr)) if wanted)
    if collect and config.capture_output:
        raise PyctrError("capture_stdout/capture_stderr and capture_output=True cannot be "
                         "combined: the output goes either to result or to log records",
                         error="usage.invalid")
    rootfs = config.check()
    global _swept
    if not _swept:  # what killed supervisors left (cgroups, layers, leases): once
        _swept = True
        sweep_stale()
    level = _shown_level()
    keep_primed()  # the init's move into its cgroup need not wait for the kernel
    ensure_template()  # here, on the event loop's thread: see its docstring
    # It waits for the kernel (the template's clone, the move into the cgroup: milliseconds
    # on cgroup v1), so on a thread, not on the event loop; shielded, because an init that
    # was started must reach ``supervise``, which stops it when the caller cancels.
    with trio.CancelScope(shield=True):
        init = await trio.to_thread.run_sync(functools.partial(
            spawn_init, config, rootfs, fork=False, collect=collect,
            stdin=stdin is not None, log_level=level))
    result = await supervise(init, config, forward_signals="trio" if forward_signals else None,
                             collect_output=collect, stdin=stdin, task_status=task_status)
    if check:
        result.check_returncode()
    return result


def _shown_level() -> str:
    """The least severe level the caller's structlog configuration lets through, when it
    says (filtering bound loggers do); else everything is sent."""
    level = getattr(structlog.get_logger("pyctr"), "get_effective_level", None)
    if level is None:
        return "debug"
    number = level()  # the logging module's numbers: 10 for debug, 20 for info, ...
    return next((name for index, name in enumerate(LOG_LEVELS) if number <= 10 * (index + 1)),
                "critical")
