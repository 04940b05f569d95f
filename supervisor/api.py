"""Running containers from a trio program.

    import trio
    from pyctr.supervisor import ContainerConfig, run

    async def main():
        result = await run(ContainerConfig("./rootfs", ["/bin/echo", "hello"]))
        print(result.exit_code, result.duration)

    trio.run(main)

The init is started from a fresh interpreter (not forked), so this is safe in a program that
has threads. Events go through the caller's structlog configuration.
"""

from __future__ import annotations

import trio

from .spawn import spawn_init
from .supervise import supervise

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import ContainerConfig
    from .result import ContainerResult


async def run(
    config: ContainerConfig,
    *,
    check: bool = False,
    forward_signals: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> ContainerResult:
    """Run one container to completion and return how it ended.

    Raises PyctrError (with the one-line explanation) when the host cannot run it at all
    (not root, rootfs missing, ...). A container that was set up but whose command failed to
    start returns a result with ``error`` and ``message`` set; with ``check=True`` any non-zero
    exit raises ContainerFailed instead. Cancelling the caller stops the container: its stop
    signal, SIGKILL after ``config.stop_timeout``. ``forward_signals=True`` relays the
    process's SIGINT, SIGTERM, SIGHUP, ... to the container, as the CLI does (main thread
    only). With ``nursery.start(run, config)`` the start value is the init's host pid.
    """
    rootfs = config.check()
    init = spawn_init(config, rootfs, fork=False)
    result = await supervise(init, config, forward_signals="trio" if forward_signals else None,
                             task_status=task_status)
    if check:
        result.check_returncode()
    return result
