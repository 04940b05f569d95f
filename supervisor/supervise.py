"""The supervisor's one loop: talk to the init, forward signals, stop on request, account.

``supervise`` runs from the moment the init exists until it has been reaped. It reads init's
messages (re-emitting init's log events as its own, with ``source=init`` and init's original
timestamps), optionally forwards the host's signals to the init (which relays them to the
workload), and turns cancellation into the stop sequence: the stop signal, then SIGKILL after
the stop timeout. Killing the init is enough to kill the whole container: when PID 1 of a PID
namespace dies, the kernel kills every other process in it.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import structlog
import trio
from pyctr.protocol import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Hello,
    Log,
    ProtocolError,
    Ready,
    SetupFailed,
    WorkloadExited,
    WorkloadStarted,
    decode,
)
from pyctr.protocol.codec import HEADER_SIZE

from .errors import EXIT_PYCTR_FAILED
from .result import ContainerResult
from .signals import FORWARDED_SIGNALS, STOP_SIGNALS, signal_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .config import ContainerConfig
    from .spawn import InitProcess

_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Supervision:
    """State of one supervised container; one instance per ``supervise`` call."""

    def __init__(self, init: InitProcess, config: ContainerConfig) -> None:
        self.init = init
        self.config = config
        self.result = ContainerResult(config.name, config.command)
        self.log = structlog.get_logger("pyctr").bind(container=config.name, source="supervisor")
        self.init_log = self.log.bind(source="init")
        self.greeted = False
        self.exited = False
        self.stop_requests = 0
        self.killed = False

    # -- signals sent to the container -----------------------------------------------------

    def send(self, signum: int) -> bool:
        try:
            os.kill(self.init.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def kill(self, reason: str) -> None:
        if not self.killed and self.send(signal.SIGKILL):
            self.killed = True
            self.log.warning("container.killed", reason=reason)

    async def stop(self, nursery: trio.Nursery, reason: str) -> None:
        """Ask the container to stop; escalate to SIGKILL after the stop timeout."""
        self.stop_requests += 1
        if self.stop_requests > 1:
            self.kill(f"second stop request ({reason})")
            return
        nursery.start_soon(self._kill_after_timeout, reason)

    async def _kill_after_timeout(self, reason: str) -> None:
        await trio.sleep(self.config.stop_timeout)
        self.kill(f"stop timeout of {self.config.stop_timeout:g}s expired after {reason}")

    async def forward_signals(self, nursery: trio.Nursery, early: list[int],
                              *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                              ) -> None:
        with trio.open_signal_receiver(*FORWARDED_SIGNALS) as received:
            task_status.started()
            for signum in early:  # forwarded by the CLI's handler before trio was running
                await self._forwarded(nursery, signum, delivered=True)
            async for signum in received:
                await self._forwarded(nursery, signum, delivered=self.send(signum))

    async def _forwarded(self, nursery: trio.Nursery, signum: int, *, delivered: bool) -> None:
        name = signal.Signals(signum).name
        self.log.info("signal.forwarded", signal=name, signal_number=int(signum),
                      to_pid=self.init.pid, delivered=delivered)
        if signum in STOP_SIGNALS:
            await self.stop(nursery, name)

    # -- messages from the init ---------------------------------------------------------

    async def read_messages(self) -> None:
        sock = trio.socket.from_stdlib_socket(self.init.sock)
        while True:
            data = await sock.recv(HEADER_SIZE + MAX_MESSAGE_SIZE + 1)
            if not data:
                return
            try:
                message = decode(data)
                self.handle(message)
            except ProtocolError as exc:
                self.fail("protocol.error", f"bad message from init: {exc}")
                self.kill("protocol error")
                return

    def drain_messages(self) -> None:
        """Handle what the init sent but ``read_messages`` was cancelled before reading."""
        while True:
            try:
                data = self.init.sock.recv(HEADER_SIZE + MAX_MESSAGE_SIZE + 1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not data:
                return
            try:
                self.handle(decode(data))
            except ProtocolError:
                return

    def handle(self, message: object) -> None:
        if not self.greeted:
            if not isinstance(message, Hello | SetupFailed):
                raise ProtocolError(f"expected hello from init, got {message!r}")
            if isinstance(message, Hello):
                if message.version != PROTOCOL_VERSION:
                    raise ProtocolError(f"init speaks protocol {message.version}, "
                                        f"supervisor {PROTOCOL_VERSION}")
                self.greeted = True
                return
        if isinstance(message, Log):
            self.relay_init_log(message)
        elif isinstance(message, Ready):
            self.log.info("container.ready", namespaces=message.namespaces,
                          mounts=message.mounts, init_pid=self.init.pid)
        elif isinstance(message, WorkloadStarted):
            self.result.pid = message.pid
            self.result.host_pid = _first_child(self.init.pid)
            self.log.info("workload.started", pid=message.pid, host_pid=self.result.host_pid,
                          command=self.config.command)
        elif isinstance(message, WorkloadExited):
            self.exited = True
            if message.signal is not None:
                self.result.signal = message.signal
                self.result.exit_code = 128 + message.signal
            else:
                self.result.exit_code = message.code if message.code is not None else 0
            self.result.duration = time.monotonic() - self.init.started
            self.log.info("workload.exited", exit_code=message.code,
                          signal=signal_name(message.signal),
                          duration_s=round(self.result.duration, 6))
        elif isinstance(message, SetupFailed):
            self.fail(message.error, message.message, message.exit_code)
        else:
            raise ProtocolError(f"unexpected message from init: {message!r}")

    def relay_init_log(self, message: Log) -> None:
        level = message.level if message.level in _LEVELS else "info"
        fields: dict[str, Any] = dict(message.fields)
        fields.pop("container", None)
        fields.pop("source", None)
        getattr(self.init_log, level)(message.event, timestamp=message.timestamp, **fields)

    def fail(self, error: str, message: str, exit_code: int = EXIT_PYCTR_FAILED) -> None:
        if self.result.error is None:
            self.result.error, self.result.message = error, message
            self.result.exit_code = exit_code
            self.log.error("container.failed", error=error, message=message,
                           exit_code=exit_code)

    # -- the end --------------------------------------------------------------------------

    async def reap(self) -> None:
        await trio.lowlevel.wait_readable(self.init.pidfd)
        _, status, usage = os.wait4(self.init.pid, 0)
        self.result.cpu_seconds = usage.ru_utime + usage.ru_stime
        self.result.max_rss_kib = usage.ru_maxrss
        if not self.result.duration:
            self.result.duration = time.monotonic() - self.init.started
        if self.exited or self.result.error is not None:
            return
        # The init died without telling us how the workload ended: it was killed (by our
        # escalation, by the OOM killer, by someone's kill -9).
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            self.result.signal = signum
            self.result.exit_code = 128 + signum
            self.log.warning("workload.exited", exit_code=None, signal=signal_name(signum),
                             duration_s=round(self.result.duration, 6),
                             reason="container killed")
        else:
            self.fail("init.exited", f"container init exited with status "
                      f"{os.waitstatus_to_exitcode(status)} before reporting the workload's exit")


def _first_child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            children = file.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


async def supervise(
    init: InitProcess,
    config: ContainerConfig,
    *,
    forward_signals: bool = False,
    early_signals: list[int] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> ContainerResult:
    """Supervise ``init`` until it has exited and been reaped; release it; return the result.

    Cancelling the caller stops the container (stop signal, then SIGKILL after the stop
    timeout) before the cancellation carries on. ``task_status.started`` receives the init's
    host pid, so a container can be started with ``nursery.start``.
    """
    state = _Supervision(init, config)
    state.log.info("container.created", init_pid=init.pid, rootfs=config.rootfs,
                   hostname=config.hostname, command=config.command)
    try:
        async with trio.open_nursery() as nursery:
            if forward_signals:
                await nursery.start(state.forward_signals, nursery, early_signals or [])
            task_status.started(init.pid)
            try:
                await state.read_messages()
                await state.reap()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await _stop_for_cancellation(state)
                raise
            nursery.cancel_scope.cancel()
    finally:
        init.close()
        state.log.info("container.cleanup_done", exit_code=state.result.exit_code)
    return state.result


async def _stop_for_cancellation(state: _Supervision) -> None:
    state.log.info("container.stopping", reason="cancelled",
                   stop_signal=signal_name(state.config.stop_signal))
    state.send(state.config.stop_signal)
    with trio.move_on_after(state.config.stop_timeout) as waiting:
        await trio.lowlevel.wait_readable(state.init.pidfd)
    if waiting.cancelled_caught:
        state.kill("stop timeout expired after cancellation")
        await trio.lowlevel.wait_readable(state.init.pidfd)
    state.drain_messages()
    await state.reap()
