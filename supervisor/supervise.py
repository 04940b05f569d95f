"""The supervisor's one loop: talk to the init, relay output, forward signals, stop, account.

``supervise`` runs from the moment the init exists until it has been reaped. It reads init's
messages (re-emitting init's log events as its own, with ``source=init`` and init's original
timestamps), turns captured output into records, optionally forwards the host's signals to
the init (which relays them to the workload), and turns cancellation into the stop sequence:
the stop signal, then SIGKILL after the stop timeout. Killing the init is enough to kill the
whole container: when PID 1 of a PID namespace dies, the kernel kills every other process in
it.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import structlog
import trio

from pyctr.protocol import (
    LOG_LEVELS,
    Hello,
    Log,
    ProtocolError,
    Ready,
    SetupFailed,
    Terminal,
    WorkloadExited,
    WorkloadStarted,
    check_hello,
    decode,
)

from . import channel
from .channel import Ancillary
from .errors import EXIT_PYCTR_FAILED
from .output import as_text, collect, feed, pump
from .relay import copy_from_terminal, copy_to_terminal
from .result import ContainerResult
from .signalfd import describe_sender, open_signalfd, read_signals
from .signals import (
    CLI_FORWARDED_SIGNALS,
    JOB_CONTROL_SIGNALS,
    LIBRARY_FORWARDED_SIGNALS,
    STOP_SIGNALS,
    signal_name,
)
from .terminal import HostTerminal, copy_window_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .config import ContainerConfig
    from .spawn import InitProcess

class Container:
    """A running container, as ``await nursery.start(run, config)`` returns it (the way
    ``nursery.start(trio.run_process, ...)`` returns a process)."""

    __slots__ = ("_state", "init_pid", "name")

    def __init__(self, state: _Supervision) -> None:
        self._state = state
        self.name = state.config.name
        self.init_pid = state.init.pid
        """The init's pid as the host sees it."""

    def send_signal(self, signum: int) -> bool:
        """Send ``signum`` into the container (the init relays it to the workload, as a
        forwarded signal); False when the container is already gone."""
        return self._state.send(signum)

    def stop(self) -> None:
        """Ask the container to stop: its stop signal, then SIGKILL after the stop timeout (a
        second call kills at once). ``run`` returns once it has exited."""
        assert self._state.nursery is not None
        self._state.send_stop_signal("stop requested")
        self._state.stop(self._state.nursery, "stop requested")

    def __repr__(self) -> str:
        return f"<Container {self.name} init_pid={self.init_pid}>"


class _Supervision:
    """State of one supervised container; one instance per ``supervise`` call."""

    def __init__(self, init: InitProcess, config: ContainerConfig,
                 terminal: HostTerminal | None, *, job_control: bool,
                 commit_logs: Callable[[], None] | None = None) -> None:
        self.init = init
        self.config = config
        self.terminal = terminal
        self.job_control = job_control
        self.commit_logs = commit_logs
        self.master: int | None = None
        self.nursery: trio.Nursery | None = None
        self.readers: trio.Nursery | None = None
        self.result = ContainerResult(config.name, config.command)
        self.log = structlog.get_logger("pyctr").bind(container=config.name, source="supervisor")
        self.init_log = self.log.bind(source="init")
        self.output_log = self.log.bind(source="workload")
        self.greeted = False
        self.exited = False
        self.stop_requests = 0
        self.killed = False
        self.exit_reason: str | None = None
        self.exit_logged = False
        self.reaped = False

    # -- signals sent to the container -----------------------------------------------------

    def send(self, signum: int) -> bool:
        # Through the pidfd, and never after the reap: a reaped init's pid may already belong
        # to some other process of the host.
        if self.reaped:
            return False
        try:
            signal.pidfd_send_signal(self.init.pidfd, signum)
        except ProcessLookupError:
            return False
        return True

    def send_stop_signal(self, reason: str) -> None:
        """The first step of a stop asked for by the caller (not a forwarded signal)."""
        self.log.info("container.stopping", reason=reason,
                      stop_signal=signal_name(self.config.first_stop_signal))
        self.send(self.config.first_stop_signal)

    def kill(self, reason: str) -> None:
        if not self.killed and self.send(signal.SIGKILL):
            self.killed = True
            self.log.warning("container.killed", reason=reason)

    def stop(self, nursery: trio.Nursery, reason: str) -> None:
        """Ask the container to stop; escalate to SIGKILL after the stop timeout."""
        self.stop_requests += 1
        if self.stop_requests > 1:
            self.kill(f"second stop request ({reason})")
            return
        nursery.start_soon(self._kill_after_timeout, reason)

    async def _kill_after_timeout(self, reason: str) -> None:
        await trio.sleep(self.config.stop_timeout)
        self.kill(f"stop timeout of {self.config.stop_timeout:g}s expired after {reason}")

    async def forward_with_trio(self, nursery: trio.Nursery, *,
                                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                                ) -> None:
        """Forward through trio's signal receiver (the library: the sender stays unknown)."""
        with trio.open_signal_receiver(*LIBRARY_FORWARDED_SIGNALS) as received:
            task_status.started()
            async for signum in received:
                self.forward(nursery, signum)

    async def forward_with_signalfd(self, nursery: trio.Nursery, *,
                                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                                    ) -> None:
        """Forward the signals the CLI keeps blocked, naming who sent each one."""
        fd = open_signalfd(CLI_FORWARDED_SIGNALS)
        try:
            task_status.started()
            while True:
                for info in read_signals(fd):
                    self.forward(nursery, info.signum, sender_pid=info.sender_pid,
                                 sender_uid=info.sender_uid)
                await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)

    def forward(self, nursery: trio.Nursery, signum: int, *, sender_pid: int | None = None,
                sender_uid: int | None = None) -> None:
        sender = {} if sender_pid is None else {
            "sender_pid": sender_pid, "sender_uid": sender_uid,
            "sender": describe_sender(sender_pid)}
        if signum == signal.SIGWINCH and self.master is not None and self.terminal is not None:
            # The kernel signals the pty's foreground process group once the size changes.
            copy_window_size(self.terminal.fd, self.master)
            self.log.info("terminal.resized", **sender)
            return
        sent = signum
        if signum in STOP_SIGNALS and self.config.stop_signal is not None:
            sent = self.config.stop_signal
        delivered = self.send(sent)
        self.log.info("signal.forwarded", signal=signal_name(sent), signal_number=int(sent),
                      received=signal_name(signum), to_pid=self.init.pid, delivered=delivered,
                      **sender)
        if signum in STOP_SIGNALS:
            self.stop(nursery, str(signal_name(signum)))
        elif signum in JOB_CONTROL_SIGNALS and self.job_control:
            self.suspend(str(signal_name(signum)))

    def suspend(self, reason: str) -> None:
        """Stop ourselves like any foreground job (the workload got the signal already);
        carry on from here when continued (the SIGCONT is forwarded as it comes in)."""
        if self.terminal is not None:
            self.terminal.restore()
        self.log.info("supervisor.suspended", reason=reason)
        if self.commit_logs is not None:
            self.commit_logs()  # a batching sink: the record must be out before we stop
        os.kill(os.getpid(), signal.SIGSTOP)
        if self.terminal is not None and self.master is not None:
            self.terminal.raw()
            copy_window_size(self.terminal.fd, self.master)
        self.log.info("supervisor.resumed")

    # -- output of the workload -----------------------------------------------------------

    def attach_terminal(self, master: int) -> None:
        """Relay the container's pty to our stdin/stdout; raw mode when ours is a terminal."""
        os.set_blocking(master, False)
        self.master = master
        assert self.nursery is not None and self.readers is not None
        if self.terminal is not None:
            copy_window_size(self.terminal.fd, master)
            self.terminal.raw()
        self.readers.start_soon(copy_to_terminal, master, 1)
        if self.config.interactive:
            self.nursery.start_soon(copy_from_terminal, 0, master)
        self.log.info("terminal.attached", raw=self.terminal is not None,
                      interactive=self.config.interactive)

    def emit_output(self, stream: str, piece: bytes, partial: bool) -> None:
        text, raw = as_text(piece)
        if raw is None:
            self.output_log.info("workload.output", stream=stream, message=text,
                                 partial=partial)
        else:
            self.output_log.info("workload.output", stream=stream, message=text,
                                 partial=partial, raw_base64=raw)

    # -- messages from the init ---------------------------------------------------------

    async def read_messages(self) -> None:
        sock = trio.socket.from_stdlib_socket(self.init.sock)
        while (frame := await channel.receive(sock)) is not None:
            if not self.receive(*frame):
                return

    def drain_messages(self) -> None:
        """Handle what the init has sent so far without waiting (at start, and after a
        cancelled ``read_messages``)."""
        while (frame := channel.receive_now(self.init.sock)) is not None:
            if not self.receive(*frame):
                return

    def receive(self, data: bytes, ancillary: Ancillary) -> bool:
        """Handle one message; False when the conversation cannot go on."""
        try:
            self.handle(decode(data), ancillary)
        except ProtocolError as exc:
            self.fail("protocol.error", f"bad message from init: {exc}")
            self.kill("protocol error")
            return False
        finally:
            ancillary.close()  # whatever descriptor was not taken is not ours to keep
        return True

    def handle(self, message: object, ancillary: Ancillary) -> None:
        if not self.greeted:
            if not isinstance(message, Hello | SetupFailed):
                raise ProtocolError(f"expected hello from init, got {message!r}")
            if isinstance(message, Hello):
                check_hello(message, "init")  # a VersionMismatch is a ProtocolError
                self.greeted = True
                return
        if isinstance(message, Log):
            self.relay_init_log(message)
        elif isinstance(message, Ready):
            self.log.info("container.ready", namespaces=message.namespaces,
                          mounts=message.mounts, init_pid=self.init.pid)
        elif isinstance(message, Terminal):
            if not ancillary.fds:
                raise ProtocolError("terminal message without its descriptor")
            self.attach_terminal(ancillary.fds.pop(0))
        elif isinstance(message, WorkloadStarted):
            self.result.pid = message.pid
            # Sent with the workload's credentials: the kernel gave us its pid as the host
            # sees it (the init's own pid means the init could not name the workload).
            if ancillary.pid != self.init.pid:
                self.result.host_pid = ancillary.pid
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
        elif isinstance(message, SetupFailed):
            self.fail(message.error, message.message, message.exit_code)
        else:
            raise ProtocolError(f"unexpected message from init: {message!r}")

    def relay_init_log(self, message: Log) -> None:
        level = message.level if message.level in LOG_LEVELS else "info"
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

    def log_exit(self) -> None:
        """``workload.exited``, once, after the output has been drained (so it comes last)."""
        if self.exit_logged or not (self.exited or self.exit_reason):
            return
        self.exit_logged = True
        signum = self.result.signal
        fields: dict[str, Any] = {
            "exit_code": None if signum is not None else self.result.exit_code,
            "signal": signal_name(signum),
            "duration_s": round(self.result.duration, 6),
        }
        if self.exit_reason:
            self.log.warning("workload.exited", reason=self.exit_reason, **fields)
        else:
            self.log.info("workload.exited", **fields)

    async def reap(self) -> None:
        await trio.lowlevel.wait_readable(self.init.pidfd)
        _, status, usage = os.wait4(self.init.pid, 0)
        self.reaped = True
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
            self.exit_reason = "container killed"
        else:
            self.fail("init.exited", f"container init exited with status "
                      f"{os.waitstatus_to_exitcode(status)} before reporting the workload's exit")


async def supervise(
    init: InitProcess,
    config: ContainerConfig,
    *,
    forward_signals: str | None = None,
    terminal: HostTerminal | None = None,
    commit_logs: Callable[[], None] | None = None,
    collect_output: tuple[str, ...] = (),
    stdin: bytes | None = None,
    task_status: trio.TaskStatus[Container] = trio.TASK_STATUS_IGNORED,
) -> ContainerResult:
    """Supervise ``init`` until it has exited and been reaped and its output is drained;
    release it; return the result.

    ``forward_signals`` is None (do not), ``"trio"`` (trio's receiver) or ``"signalfd"``
    (the CLI, whose forwarded signals are blocked in every thread; it also stops itself on
    SIGTSTP like a foreground job). ``terminal``: the user's terminal, put in raw mode while a
    ``tty`` container runs and restored after. ``commit_logs``: writes log records a batching
    sink holds, called before the supervisor stops itself (job control). ``collect_output``:
    the streams among ``init.output`` whose bytes go to ``result.stdout``/``result.stderr``
    rather than to log records; ``stdin``: bytes for the init's stdin pipe. Cancelling the
    caller stops the container (stop signal, then SIGKILL after the stop timeout) before the
    cancellation carries on. ``task_status.started`` receives a ``Container``, so a
    container can be started with ``nursery.start``.
    """
    # spawn_init made our end with the C module (pyctr.linux); trio wants the class.
    init.sock = socket.socket(fileno=init.sock.detach())
    state = _Supervision(init, config, terminal, job_control=forward_signals == "signalfd",
                         commit_logs=commit_logs)
    state.log.info("container.created", init_pid=init.pid, rootfs=config.rootfs,
                   hostname=config.hostname, command=config.command,
                   capture_output=config.capture_output)
    for field in config.spec.pending_fields() if config.spec is not None else ():
        state.log.warning("spec.field_not_applied", field=field,
                          message=f"{field} is accepted but not applied yet: the container "
                                  f"runs without it")
    caps = config.spec.process.capabilities if config.spec is not None else None
    if caps is not None and caps.unraisable():
        state.log.warning("spec.field_not_applied", field="process.capabilities.ambient",
                          capabilities=caps.unraisable(),
                          message="ambient capabilities must be permitted and inheritable too; "
                                  "these are not raised")
    try:
        async with trio.open_nursery() as nursery:
            state.nursery = nursery
            if forward_signals == "signalfd":
                await nursery.start(state.forward_with_signalfd, nursery)
            elif forward_signals == "trio":
                await nursery.start(state.forward_with_trio, nursery)
            if init.stdin is not None:
                nursery.start_soon(feed, init.stdin, stdin or b"")
                init.stdin = None  # feed closes it
            task_status.started(Container(state))
            # The output readers end by themselves at end of file, once every process of the
            # container is gone; this nursery waits for them.
            async with trio.open_nursery() as readers:
                state.readers = readers
                # What the init has sent while we were starting (usually up to the workload's
                # start) is logged before any of the workload's output.
                state.drain_messages()
                collected: dict[str, bytearray] = {}
                for stream, fd in init.output.items():
                    if stream in collect_output:
                        collected[stream] = bytearray()
                        readers.start_soon(collect, fd, collected[stream])
                    else:
                        readers.start_soon(pump, fd, stream, state.emit_output)
                init.output = {}  # the readers own (and close) them now
                try:
                    await state.read_messages()
                    await state.reap()
                except trio.Cancelled:
                    with trio.CancelScope(shield=True):
                        await _stop_for_cancellation(state)
                    raise
            if "stdout" in collected:
                state.result.stdout = bytes(collected["stdout"])
            if "stderr" in collected:
                state.result.stderr = bytes(collected["stderr"])
            nursery.cancel_scope.cancel()
    finally:
        state.log_exit()
        if state.master is not None:
            os.close(state.master)
        if terminal is not None:
            terminal.restore()
        init.close()
        state.log.info("container.cleanup_done", exit_code=state.result.exit_code)
    return state.result


async def _stop_for_cancellation(state: _Supervision) -> None:
    state.send_stop_signal("cancelled")
    with trio.move_on_after(state.config.stop_timeout) as waiting:
        await trio.lowlevel.wait_readable(state.init.pidfd)
    if waiting.cancelled_caught:
        state.kill("stop timeout expired after cancellation")
        await trio.lowlevel.wait_readable(state.init.pidfd)
    state.drain_messages()
    await state.reap()
