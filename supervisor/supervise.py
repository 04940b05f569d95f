"""The supervisor's one loop: talk to the init, relay output, forward signals, stop, account.

``supervise`` runs from the moment the init exists until it has been reaped. It reads init's
messages (re-emitting init's log events as its own, with ``source=init`` and init's original
timestamps), turns captured output into records, optionally forwards the host's signals to
the init (which relays them to the workload), and turns cancellation into the stop sequence:
the stop signal, then SIGKILL after the stop timeout. Killing the init is enough to kill the
whole container: when PID 1 of a PID namespace dies, the kernel kills every other process in
it.

Nothing that arrives on init's socket is trusted: the workload may have taken it over. Every
message is decoded, range-checked (``Message.check``) and must be one the conversation
expects at that point (``Phase``); the descriptors that come with it must be the ones asked
for (only ``Terminal`` brings one, and only with a terminal). Any failure to handle a message,
whatever raised it, is a protocol error: the init is killed through its pidfd, the result
says ``protocol.error`` (status ``EXIT_PROTOCOL_ERROR``) and no more messages are read. Init's
log fields are re-emitted under ``source=init`` without ever replacing the record's own
fields (``relay_init_log``), text from inside reaches the user's terminal escaped
(``printable``), and an init that lingers after reporting the end is killed. Whatever
happens, ``supervise`` returns or raises only once the init has been reaped.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import time

import structlog
import trio

from pyctr.protocol import (
    Hello,
    Log,
    Message,
    ProtocolError,
    Ready,
    SetupFailed,
    Terminal,
    WorkloadExited,
    WorkloadStarted,
    check_hello,
    decode,
)
from pyctr.protocol.messages import EXIT_PROTOCOL_ERROR, printable

from . import channel
from .channel import Ancillary
from .errors import EXIT_OOM_KILLED, EXIT_PYCTR_FAILED, EXIT_TIMED_OUT
from .output import as_text, collect, feed, pump, pump_records
from .relay import copy_from_terminal, copy_input_to_pipe, copy_to_terminal
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
    from .records import OutputRecords
    from .spawn import InitProcess

LINGER_TIMEOUT = 3.0
"""Seconds an init may take to exit after it has reported the workload's exit or a setup
failure (it exits right after sending either); then it is killed. An init that lingers is
not ours any more: the workload may have sent the report."""
MESSAGE_LIMIT = 4096
"""Characters of a ``SetupFailed`` message shown (init's own are far shorter)."""
REASON_LIMIT = 300
"""Characters of a protocol error's reason, which may quote what init sent."""
INIT_FIELDS = "init_fields"
"""Where init's log fields go that would replace a field of the record itself."""
RESERVED_FIELDS = frozenset((
    # The record's own fields (schema/log-record.schema.json); ``message`` only when it is
    # not text, see ``_collides``.
    "timestamp", "level", "event", "container", "source",
    # Keys structlog's processors and renderers act on, and the logging methods' parameters.
    "exc_info", "exception", "stack", "stack_info", "positional_args", "logger",
    "logger_name", "log_level", "self", "method_name",
    INIT_FIELDS,
))
"""Keys of init's log fields that are moved under ``init_fields`` (also any key that starts
with an underscore, structlog's private keys such as ``_record``)."""
SUPERVISOR_EVENTS = frozenset((
    "container.created", "spec.field_not_applied", "container.ready", "workload.started",
    "workload.output", "signal.forwarded", "terminal.attached", "terminal.resized",
    "supervisor.suspended", "supervisor.resumed", "container.killed", "container.stopping",
    "workload.exited", "container.failed", "container.cleanup_done", "container.oom",
    "container.timed_out", "cgroup.unreadable", "cgroup.limit_not_applied",
    "network.attached", "network.connection_failed", "network.connection_reset",
    "network.accept_failed", "network.connections_full", "network.udp_flows_full",
    "network.datagram_dropped", "network.udp_flow_opened", "network.udp_flow_closed",
    "network.proxy_failed",
))
"""Events only the supervisor (or the workload's captured output) writes: init may not send
them, or a record with ``source=init`` could pass for one of ours."""


_OWN_FAULT_SIGNALS = frozenset((signal.SIGPIPE, signal.SIGXFSZ))
"""Signals the kernel sends a process for its own write (the CLI keeps them blocked, so they
reach its signalfd as if sent to the container, from its own pid)."""


class Phase:
    """Where the conversation with init is; each phase names the messages it accepts. The
    order is init's (``pyctr.protocol.messages``): hello, then log events, ready, the
    terminal (with one only), the workload's start and exit; a setup failure ends it at any
    point."""

    GREETING = "greeting"  # hello or setup_failed
    BUILDING = "building"  # log, ready, setup_failed
    READY = "ready"  # log, terminal (once, with a terminal), workload_started, setup_failed
    RUNNING = "running"  # log, workload_exited, setup_failed
    DONE = "done"  # nothing: init exits


def _collides(key: str, value: object) -> bool:
    """Whether init's log field ``key`` would replace (or disturb) a field of the record."""
    return key in RESERVED_FIELDS or key.startswith("_") or (
        key == "message" and not isinstance(value, str))


class Container:
    """A running container, as ``await nursery.start(run, config)`` returns it (the way
    ``nursery.start(trio.run_process, ...)`` returns a process)."""

    __slots__ = ("_state", "init_pid", "ip_address", "name", "published")

    def __init__(self, state: _Supervision) -> None:
        self._state = state
        self.name = state.config.name
        self.init_pid = state.init.pid
        """The init's pid as the host sees it."""
        network = state.init.network
        self.ip_address = None if network is None else network.ip_address
        """The container's address on the bridge (``network="bridge"``), else None."""
        self.published = [] if network is None else [str(listener.port)
                                                     for listener in network.listeners]
        """The published ports as bound, ``127.0.0.1:8080->80/tcp`` (a host port asked as 0
        shows the one the kernel chose)."""

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
        self.phase = Phase.GREETING
        self.broken = False
        """A protocol error happened: nothing more is read from the socket."""
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
        if self.send_kill():
            self.log.warning("container.killed", reason=reason)

    def kill_quietly(self, reason: str) -> None:
        """``kill`` for when supervision itself is failing: the record is written if it can
        be (the logging may be what failed; the kill is what matters)."""
        if self.send_kill():
            try:
                self.log.warning("container.killed", reason=reason)
            except Exception:
                pass

    def send_kill(self) -> bool:
        """SIGKILL through the pidfd, once; True when this call sent it (the record is the
        caller's to write, after the signal is on its way)."""
        if self.killed or not self.send(signal.SIGKILL):
            return False
        self.killed = True
        return True

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
        if sender_pid == os.getpid() and signum in _OWN_FAULT_SIGNALS:
            return  # our own write's (to a reader that went away): not the container's
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
        """Handle init's messages until its end of the socket closes or it exits, whichever
        comes first: the reading must not depend on a socket someone else may hold open.
        What it sent before it exited is handled all the same."""
        # A task of the outer nursery watches the pidfd (not a nursery of our own: a caller's
        # cancellation must come out of here as itself, not inside an exception group).
        assert self.nursery is not None
        with trio.CancelScope() as reading:
            watching = trio.CancelScope()

            async def stop_reading_at_exit() -> None:
                with watching:
                    if watching.cancel_called:
                        return  # the reading ended before this task ran: the pidfd is not ours
                    await trio.lowlevel.wait_readable(self.init.pidfd)
                    reading.cancel()

            self.nursery.start_soon(stop_reading_at_exit)
            try:
                await self._read_until_closed()
            finally:
                watching.cancel()  # before anyone else waits on the pidfd (``reap``)
        self.drain_messages()

    async def _read_until_closed(self) -> None:
        sock = trio.socket.from_stdlib_socket(self.init.sock)
        while not self.broken:
            try:
                frame = await channel.receive(sock)
            except ConnectionResetError:
                return  # the init closed its end with a message of ours unread: an end
            except OSError as exc:
                self.protocol_error(f"cannot read init's socket: {exc}")
                return
            if frame is None:
                return
            self.receive(*frame)

    def drain_messages(self) -> None:
        """Handle what the init has sent so far without waiting (at start, and after a
        cancelled ``read_messages``)."""
        while not self.broken:
            try:
                frame = channel.receive_now(self.init.sock)
            except ConnectionResetError:
                return  # the end (see _read_until_closed)
            except OSError as exc:
                self.protocol_error(f"cannot read init's socket: {exc}")
                return
            if frame is None:
                return
            self.receive(*frame)

    def receive(self, data: bytes, ancillary: Ancillary) -> None:
        """Handle one message. Whatever goes wrong with it (it does not decode, is out of
        range or out of place, brings descriptors, or handling it raises) is a protocol
        error: the container is killed."""
        try:
            message = decode(data)
            message.check()
            if ancillary.truncated:
                raise ProtocolError(f"{message.TYPE} message came with more descriptors or "
                                    f"control data than any message carries")
            if ancillary.fds and not isinstance(message, Terminal):
                raise ProtocolError(f"{message.TYPE} message came with {len(ancillary.fds)} "
                                    f"file descriptor(s); it carries none")
            self.handle(message, ancillary)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ProtocolError) else (
                f"handling it failed: {type(exc).__name__}: {exc}")
            self.protocol_error(f"bad message from init: {reason}")
        finally:
            ancillary.close()  # whatever descriptor was not taken is not ours to keep

    def protocol_error(self, reason: str) -> None:
        """Kill the container (first: whatever fails next, it is on its way), stop reading,
        and report ``protocol.error``, once, even over an earlier failure init reported."""
        if self.broken:
            return
        self.broken = True
        killed = self.send_kill()
        self.result.signal = None  # whatever init said about the workload's end is void
        try:
            self.fail("protocol.error", printable(reason, REASON_LIMIT), EXIT_PROTOCOL_ERROR,
                      replace=True)
        finally:
            if killed:
                self.log.warning("container.killed", reason="protocol error")

    def handle(self, message: Message, ancillary: Ancillary) -> None:
        phase = self.phase
        if isinstance(message, SetupFailed) and phase != Phase.DONE:
            self.phase = Phase.DONE
            self.fail(message.error, printable(message.message, MESSAGE_LIMIT),
                      message.exit_code)
            self.expect_exit("a setup failure")
        elif isinstance(message, Hello) and phase == Phase.GREETING:
            check_hello(message, "init")  # a VersionMismatch is a ProtocolError
            self.phase = Phase.BUILDING
        elif isinstance(message, Log) and phase in (Phase.BUILDING, Phase.READY,
                                                    Phase.RUNNING):
            self.relay_init_log(message)
        elif isinstance(message, Ready) and phase == Phase.BUILDING:
            self.phase = Phase.READY
            self.log.info("container.ready", namespaces=message.namespaces,
                          mounts=message.mounts, init_pid=self.init.pid)
        elif isinstance(message, Terminal) and phase == Phase.READY and self.master is None:
            if not self.config.tty:
                raise ProtocolError("terminal message, but the container has no terminal "
                                    "(-t / process.terminal)")
            if len(ancillary.fds) != 1:
                raise ProtocolError(f"terminal message with {len(ancillary.fds)} file "
                                    f"descriptors instead of one")
            master = ancillary.fds[0]
            if not (stat.S_ISCHR(os.fstat(master).st_mode) and os.isatty(master)):
                raise ProtocolError("terminal message with a descriptor that is not a "
                                    "terminal")
            self.attach_terminal(ancillary.fds.pop())
        elif isinstance(message, WorkloadStarted) and phase == Phase.READY:
            if self.config.tty and self.master is None:
                raise ProtocolError("workload_started before the terminal message")
            self.phase = Phase.RUNNING
            self.result.pid = message.pid
            # Sent with the workload's credentials: the kernel gave us its pid as the host
            # sees it (the init's own pid means the init could not name the workload).
            if ancillary.pid != self.init.pid:
                self.result.host_pid = ancillary.pid
            self.log.info("workload.started", pid=message.pid, host_pid=self.result.host_pid,
                          command=self.config.command)
        elif isinstance(message, WorkloadExited) and phase == Phase.RUNNING:
            self.phase = Phase.DONE
            self.exited = True
            if message.signal is not None:
                self.result.signal = message.signal
                self.result.exit_code = 128 + message.signal
            else:
                self.result.exit_code = message.code if message.code is not None else 0
            self.result.wall_time_s = message.wall_time_us / 1_000_000
            self.result.remaining_processes = message.remaining
            self.result.remaining_killed = message.killed
            self.expect_exit("the workload's exit")
        else:
            raise ProtocolError(f"unexpected {message.TYPE} message from init "
                                f"({_EXPECTED[phase]})")

    def expect_exit(self, what: str) -> None:
        """Init has said its last word and exits now; kill it if it does not."""
        if self.nursery is not None:
            self.nursery.start_soon(self._kill_if_lingering, what)

    async def _kill_if_lingering(self, what: str) -> None:
        await trio.sleep(LINGER_TIMEOUT)
        if not self.reaped:
            self.kill(f"init did not exit within {LINGER_TIMEOUT:g}s of reporting {what}")

    def relay_init_log(self, message: Log) -> None:
        """Re-emit init's event as ours, with ``source=init`` and init's timestamp. A field
        of init's that would replace one of the record's own (``timestamp``, ``level``,
        ``event``, ``container``, ``source``, a ``message`` that is not text, structlog's
        special keys, ``_``-prefixed keys, ``init_fields`` itself) is moved, unchanged, into
        the one field ``init_fields``; the rest stay as they are."""
        if message.event in SUPERVISOR_EVENTS:
            raise ProtocolError(f"init may not log the supervisor's event {message.event}")
        fields: dict[str, Any] = {}
        moved: dict[str, Any] = {}
        for key, value in message.fields.items():
            if _collides(key, value):
                moved[key] = value
            else:
                fields[key] = value
        if moved:
            fields[INIT_FIELDS] = moved
        getattr(self.init_log, message.level)(message.event, timestamp=message.timestamp,
                                              **fields)

    def fail(self, error: str, message: str, exit_code: int = EXIT_PYCTR_FAILED, *,
             replace: bool = False) -> None:
        """Record the failure in the result and log it, unless one is recorded already
        (``replace``: a protocol error, which makes an earlier report of init's suspect)."""
        if self.result.error is None or replace:
            self.result.error, self.result.message = error, message
            self.result.exit_code = exit_code
            self.log.error("container.failed", error=error, message=message,
                           exit_code=exit_code)

    # -- the end --------------------------------------------------------------------------

    def log_exit(self) -> None:
        """``workload.exited``, once, after the output has been drained (so it comes last)."""
        if self.exit_logged or self.broken or not (self.exited or self.exit_reason):
            return  # after a protocol error, what init said about the exit is not believed
        self.exit_logged = True
        signum = self.result.signal
        fields: dict[str, Any] = {
            "exit_code": None if signum is not None else self.result.exit_code,
            "signal": signal_name(signum),
            "duration_s": round(self.result.wall_time_s, 6),
        }
        if self.result.remaining_processes:
            fields["remaining_processes"] = self.result.remaining_processes
            fields["remaining_killed"] = self.result.remaining_killed
        if self.result.timed_out:
            fields["timed_out"] = True
        if self.result.oom_killed:
            fields["oom_killed"] = True
        if self.exit_reason:
            self.log.warning("workload.exited", reason=self.exit_reason, **fields)
        else:
            self.log.info("workload.exited", **fields)

    async def reap(self) -> None:
        await trio.lowlevel.wait_readable(self.init.pidfd)
        _, status, usage = os.wait4(self.init.pid, 0)
        self.reaped = True
        # The init's own accounting (it and the children it reaped): what the record says
        # where the cgroup cannot tell (``account``).
        self.result.cpu_time_s = usage.ru_utime + usage.ru_stime
        self.result.memory_peak_bytes = usage.ru_maxrss * 1024
        if not self.result.wall_time_s:
            self.result.wall_time_s = time.monotonic() - self.init.started
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

    def account(self) -> None:
        """Once the init is reaped: kill whatever is still in the container's cgroup (what
        the end of its PID namespace did not reach), read what the container used, and say
        how it ended: the timeout (124) or the OOM killer (137, ``container.oom``) decide the
        exit code of a workload that ran. Never raises: the cgroup is the host's to judge."""
        cgroup = self.init.cgroup
        if cgroup is None or not cgroup.paths:
            self._settle_exit_code()
            return
        try:
            left = cgroup.kill_all()
            if left:
                self.log.warning("container.killed", reason="processes left in its cgroup",
                                 processes=left)
            usage = cgroup.usage()
        except Exception as exc:  # a cgroup removed under us, a filesystem gone read-only
            self.log.warning("cgroup.unreadable", message=f"cannot read what the container "
                                                          f"used: {exc}")
            self._settle_exit_code()
            return
        if usage.cpu_time_s is not None:
            self.result.cpu_time_s = usage.cpu_time_s
        if usage.memory_peak_bytes is not None:
            self.result.memory_peak_bytes = usage.memory_peak_bytes
        if usage.oom_kills:
            self.result.oom_killed = True
            self.log.warning("container.oom", oom_kills=usage.oom_kills,
                             memory_peak_bytes=self.result.memory_peak_bytes,
                             message="the kernel's OOM killer killed a process of the "
                                     "container: it reached its memory limit")
        self._settle_exit_code()

    def _settle_exit_code(self) -> None:
        if self.result.error is not None or self.broken:
            return
        if self.result.timed_out:
            self.result.exit_code = EXIT_TIMED_OUT
        elif self.result.oom_killed:
            self.result.exit_code = EXIT_OOM_KILLED

    async def enforce_timeout(self, timeout: float) -> None:
        """The wall-clock limit, counted from the container's start: when it expires, the
        stop sequence (the stop signal, SIGKILL after the stop timeout) and ``timed_out``."""
        assert self.nursery is not None
        await trio.sleep(max(self.init.started + timeout - time.monotonic(), 0))
        if self.reaped or self.exited:
            return
        self.result.timed_out = True
        self.log.warning("container.timed_out", timeout_s=timeout,
                         stop_signal=signal_name(self.config.first_stop_signal))
        self.send(self.config.first_stop_signal)
        self.stop(self.nursery, f"timeout of {timeout:g}s")

    async def kill_and_reap(self) -> None:
        """The last resort, when supervision ends early (an exception, a bug): SIGKILL the
        init unless it has been reaped, wait for it and reap it, so that nothing of the
        container outlives ``supervise``."""
        if self.reaped:
            return
        with trio.CancelScope(shield=True):
            self.kill_quietly("supervision failed")
            await trio.lowlevel.wait_readable(self.init.pidfd)
            try:
                os.wait4(self.init.pid, 0)
            except ChildProcessError:
                pass  # reaped by someone else (it is gone either way)
            self.reaped = True


_EXPECTED = {
    Phase.GREETING: "expected hello or setup_failed",
    Phase.BUILDING: "expected log events, ready or setup_failed",
    Phase.READY: "expected log events, terminal, workload_started or setup_failed",
    Phase.RUNNING: "expected log events, workload_exited or setup_failed",
    Phase.DONE: "it had already reported the end",
}


async def supervise(
    init: InitProcess,
    config: ContainerConfig,
    *,
    forward_signals: str | None = None,
    terminal: HostTerminal | None = None,
    commit_logs: Callable[[], None] | None = None,
    collect_output: tuple[str, ...] = (),
    stdin: bytes | None = None,
    output_records: OutputRecords | None = None,
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
    rather than to log records; ``stdin``: bytes for the init's stdin pipe.
    ``output_records``: where captured output goes as records instead of through structlog
    (the CLI's JSON logs, see ``records.py``). Cancelling the
    caller stops the container (stop signal, then SIGKILL after the stop timeout) before the
    cancellation carries on. ``task_status.started`` receives a ``Container``, so a
    container can be started with ``nursery.start``.
    """
    # spawn_init made our end with the C module (pyctr.linux); trio wants the class.
    try:
        init.sock = socket.socket(fileno=init.sock.detach())
        state = _Supervision(init, config, terminal, job_control=forward_signals == "signalfd",
                             commit_logs=commit_logs)
    except BaseException:
        init.abort()  # SIGKILL, reap, release: never return or raise with the init alive
        raise
    try:
        _announce(state)
        async with trio.open_nursery() as nursery:
            state.nursery = nursery
            if forward_signals == "signalfd":
                await nursery.start(state.forward_with_signalfd, nursery)
            elif forward_signals == "trio":
                await nursery.start(state.forward_with_trio, nursery)
            if init.stdin is not None and "stdin" in init.relayed:
                nursery.start_soon(copy_input_to_pipe, 0, init.stdin)
                init.stdin = None  # the copy closes it
            elif init.stdin is not None:
                nursery.start_soon(feed, init.stdin, stdin or b"")
                init.stdin = None  # feed closes it
            if config.timeout is not None:
                nursery.start_soon(state.enforce_timeout, config.timeout)
            network = init.network
            if network is not None and network.listeners and network.ip_address is not None:
                from .ports import serve_published

                nursery.start_soon(serve_published, network.listeners, network.ip_address,
                                   state.log)
            task_status.started(Container(state))
            # The output readers end by themselves at end of file, once every process of the
            # container is gone; this nursery waits for them.
            collected: dict[str, bytearray] = {}
            async with trio.open_nursery() as readers:
                state.readers = readers
                try:
                    # What the init has sent while we were starting (usually up to the
                    # workload's start) is logged before any of the workload's output.
                    state.drain_messages()
                    for stream, fd in init.output.items():
                        if stream in init.relayed:  # a terminal of ours, never handed in
                            target = 1 if stream == "stdout" else 2
                            readers.start_soon(copy_to_terminal, fd, target)
                        elif stream in collect_output:
                            collected[stream] = bytearray()
                            readers.start_soon(collect, fd, collected[stream])
                        elif output_records is not None:
                            readers.start_soon(pump_records, fd, stream, output_records)
                        else:
                            readers.start_soon(pump, fd, stream, state.emit_output)
                    init.output = {}  # the readers own (and close) them now
                    await state.read_messages()
                    await state.reap()
                except trio.Cancelled:
                    with trio.CancelScope(shield=True):
                        await _stop_for_cancellation(state)
                    raise
                except BaseException:
                    # The readers end only once every process of the container is gone.
                    state.kill_quietly("supervision failed")
                    raise
            if "stdout" in collected:
                state.result.stdout = bytes(collected["stdout"])
            if "stderr" in collected:
                state.result.stderr = bytes(collected["stderr"])
            nursery.cancel_scope.cancel()
    finally:
        try:
            await state.kill_and_reap()  # a no-op unless supervision ended early
            state.account()
            state.log_exit()
        finally:
            if state.master is not None:
                os.close(state.master)
            if terminal is not None:
                terminal.restore()
            init.close()
        state.log.info("container.cleanup_done", exit_code=state.result.exit_code)
    return state.result


def _announce(state: _Supervision) -> None:
    """``container.created``, and a warning for each spec field not applied and for devices
    the kernel cannot restrict here."""
    config = state.config
    state.log.info("container.created", init_pid=state.init.pid, rootfs=config.rootfs,
                   hostname=config.hostname, command=config.command,
                   capture_output=config.capture_output)
    if state.init.network is not None:
        state.log.info("network.attached", **state.init.network.describe())
    for field in config.spec.pending_fields() if config.spec is not None else ():
        state.log.warning("spec.field_not_applied", field=field,
                          message=f"{field} is accepted but not applied yet: the container "
                                  f"runs without it")
    cgroup = state.init.cgroup
    for skipped in cgroup.skipped if cgroup is not None else ():
        state.log.warning("cgroup.limit_not_applied", limit=skipped,
                          message="this host's cgroups have no such file (no swap "
                                  "accounting, or no such hierarchy mounted): the container "
                                  "runs without this setting")
    if cgroup is not None and not cgroup.devices_enforced:
        state.log.warning("devices.not_enforced", reason=cgroup.unenforced_reason,
                          message="the kernel cannot hold this container to its devices here; "
                                  "every mount but /dev is nodev instead")
    caps = config.spec.process.capabilities if config.spec is not None else None
    if caps is not None and caps.unraisable():
        state.log.warning("spec.field_not_applied", field="process.capabilities.ambient",
                          capabilities=caps.unraisable(),
                          message="ambient capabilities must be permitted and inheritable too; "
                                  "these are not raised")


async def _stop_for_cancellation(state: _Supervision) -> None:
    state.send_stop_signal("cancelled")
    with trio.move_on_after(state.config.stop_timeout) as waiting:
        await trio.lowlevel.wait_readable(state.init.pidfd)
    if waiting.cancelled_caught:
        state.kill("stop timeout expired after cancellation")
        await trio.lowlevel.wait_readable(state.init.pidfd)
    state.drain_messages()
    await state.reap()
