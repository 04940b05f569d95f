"""A supervisor that trusts nothing from inside: the test plays a hostile init.

The in-process tests hand ``supervise`` (and ``run``) an ``InitProcess`` whose process is a
real ``sleep 60`` started here (its pidfd is what the supervisor must kill, its wait status
what it must reap) and whose socket's other end is the test's, which sends forged messages.
Records go through the CLI's own structlog configuration into a file, and every one is
checked against the log schema. The CLI tests run ``pyctr-supervise`` with the init replaced
by a hostile one: a forked child that is PID 1 of a real PID namespace but speaks for itself.

Whatever init sends, the supervision must end with the container killed and reaped before
``supervise``, ``run`` or the CLI returns, with one ``container.failed`` record whose error is
``protocol.error`` (exit status 125), and no control character from inside on a terminal.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trio
from conftest import requires_root
from helpers import VALIDATOR, Run

import pyctr.supervisor.supervise as supervise_module
from pyctr.protocol import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Hello,
    Log,
    Message,
    Ready,
    SetupFailed,
    Terminal,
    WorkloadExited,
    WorkloadStarted,
    encode,
)
from pyctr.protocol.codec import encode_value, frame
from pyctr.protocol.messages import EXIT_PROTOCOL_ERROR, printable
from pyctr.supervisor import ContainerConfig, ContainerFailed, ContainerResult, api
from pyctr.supervisor.cgroup import ContainerCgroup, Layout
from pyctr.supervisor.logfile import LogFile
from pyctr.supervisor.logs import configure
from pyctr.supervisor.spawn import InitProcess
from pyctr.supervisor.supervise import supervise

TYPE_CHECKING = False
if TYPE_CHECKING:
    from structlog.typing import EventDict

    from pyctr.protocol.codec import Value

ESC = "\x1b"
TS = "2026-12-06T10:00:00.000001Z"
DEADLINE = 10.0
"""A container that was not killed would live 60 s; every test here ends well before."""


class FakeInit:
    """A 'container' (``sleep 60``, our child) and the init's end of the socketpair."""

    def __init__(self) -> None:
        self.pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], {})
        ours, self.peer = socket.socketpair(socket.AF_UNIX,
                                            socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.init = InitProcess(self.pid, ours, {})

    def send(self, *messages: Message | bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        for message in messages:
            data = message if isinstance(message, bytes) else encode(message)
            if fds:
                rights = struct.pack(f"{len(fds)}i", *fds)
                self.peer.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            else:
                self.peer.send(data)

    def start_workload(self) -> None:
        self.send(Hello(), Ready(["mount", "pid"], ["/proc"]), WorkloadStarted(2))

    def exit(self) -> None:
        """Init's own end: the socket closes and the process exits (not yet reaped)."""
        self.peer.close()
        os.kill(self.pid, signal.SIGTERM)

    def gone(self) -> bool:
        """Killed and reaped (by the supervisor: no zombie, no process, nothing to wait for)."""
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return not os.path.exists(f"/proc/{self.pid}")
        return False

    def close(self) -> None:
        self.peer.close()
        if not self.gone():  # a failed test: do not leave it behind
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


class Logs:
    """The CLI's structlog configuration, writing into a file; ``records`` reads it back."""

    def __init__(self, path: Path, log_format: str) -> None:
        self.path = path
        self.sink = LogFile(str(path))
        configure(log_format=log_format, level="debug", sink=self.sink)

    def data(self) -> bytes:
        self.sink.commit()
        return self.path.read_bytes()

    def records(self) -> list[dict[str, object]]:
        records = [json.loads(line) for line in self.data().splitlines()]
        for record in records:
            VALIDATOR.validate(record)
        return records


@pytest.fixture
def fake() -> Iterator[FakeInit]:
    fake = FakeInit()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    logs = Logs(tmp_path / "log.jsonl", "json")
    try:
        yield logs
    finally:
        logs.sink.close()
        structlog.reset_defaults()


@pytest.fixture
def text_logs(tmp_path: Path) -> Iterator[Logs]:
    logs = Logs(tmp_path / "log.txt", "text")
    try:
        yield logs
    finally:
        logs.sink.close()
        structlog.reset_defaults()


@pytest.fixture
def short_linger(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(supervise_module, "LINGER_TIMEOUT", 0.3)
    return 0.3


def container(*, tty: bool = False) -> ContainerConfig:
    return ContainerConfig("/nonexistent-rootfs", ["/bin/sleep", "60"], name="hostile",
                           tty=tty, interactive=False)


async def supervise_fake(fake: FakeInit, config: ContainerConfig | None = None
                         ) -> ContainerResult:
    """``supervise`` the fake; it must not return while the fake container lives."""
    began = time.monotonic()
    with trio.fail_after(DEADLINE):
        result = await supervise(fake.init, config or container())
    assert fake.gone(), "supervise returned while the container's process was still there"
    assert time.monotonic() - began < DEADLINE
    return result


def assert_protocol_error(result: ContainerResult, records: list[dict[str, object]],
                          *fragments: str) -> str:
    """The documented outcome: one protocol.error failure (error level, one printable line),
    exit status 125, the container killed; returns the reason."""
    assert EXIT_PROTOCOL_ERROR == 125
    assert (result.error, result.exit_code, result.signal) == ("protocol.error", 125, None)
    failures = [record for record in records if record["event"] == "container.failed"]
    protocol = [record for record in failures if record["error"] == "protocol.error"]
    assert len(protocol) == 1, failures
    [failure] = protocol
    assert failure["level"] == "error" and failure["exit_code"] == 125
    reason = failure["message"]
    assert isinstance(reason, str) and reason.isprintable() and reason == result.message
    for fragment in fragments:
        assert fragment in reason, reason
    killed = [record for record in records if record["event"] == "container.killed"]
    assert [record["reason"] for record in killed] == ["protocol error"]
    assert records[-1]["event"] == "container.cleanup_done"
    assert records[-1]["exit_code"] == 125
    return reason


# -- each kind of bad message kills the container ---------------------------------------------

GOOD_START = (Hello(), Ready(["mount", "pid"], ["/proc"]), WorkloadStarted(2))
BAD_MESSAGES: dict[str, tuple[tuple[Message | bytes, ...], str]] = {
    "undecodable bytes": ((Hello(), b"\x00\x00\x00\x03abc"), "unknown value tag"),
    "truncated frame": ((Hello(), b"\x00\x00"), "shorter than its header"),
    "oversized frame": ((Hello(), struct.pack("!I", MAX_MESSAGE_SIZE + 1) + b"x" * 64),
                        "limit is"),
    "unknown type": ((Hello(), frame(encode_value(["launch", {}]))), "unknown message type"),
    "wrong field type": ((frame(encode_value(["hello", {"version": "4"}])),), "not of kind"),
    "other version": ((Hello(PROTOCOL_VERSION + 1),), "speaks protocol"),
    "log before hello": ((Log(TS, "info", "init.early", {}),), "unexpected log message"),
    "ready twice": ((Hello(), Ready([], []), Ready([], [])), "unexpected ready message"),
    "started before ready": ((Hello(), WorkloadStarted(2)), "unexpected workload_started"),
    "exited before started": ((Hello(), Ready([], []), WorkloadExited(0, None)),
                              "unexpected workload_exited"),
    "exit code above 255": ((*GOOD_START, WorkloadExited(256, None)), "outside 0-255"),
    "negative exit code": ((*GOOD_START, WorkloadExited(-1, None)), "outside 0-255"),
    "huge exit code": ((*GOOD_START, WorkloadExited(1 << 40, None)), "outside 0-255"),
    "signal 0": ((*GOOD_START, WorkloadExited(None, 0)), "outside 1-64"),
    "signal 65": ((*GOOD_START, WorkloadExited(None, 65)), "outside 1-64"),
    "neither code nor signal": ((*GOOD_START, WorkloadExited(None, None)), "exactly one"),
    "code and signal": ((*GOOD_START, WorkloadExited(0, 9)), "exactly one"),
    # What init reports for the result record: a lie within range is possible, out of range
    # is refused.
    "negative wall time": ((*GOOD_START, WorkloadExited(0, None, -1)), "wall_time_us -1"),
    "wall time of centuries": ((*GOOD_START, WorkloadExited(0, None, 1 << 62)),
                               "wall_time_us"),
    "more killed than remaining": ((*GOOD_START, WorkloadExited(0, None, 5, 1, 2)),
                                   "killed 2 and remaining 1"),
    "negative remaining": ((*GOOD_START, WorkloadExited(0, None, 5, -1, 0)),
                           "remaining -1"),
    "remaining beyond any pid": ((*GOOD_START, WorkloadExited(0, None, 5, 1 << 40, 0)),
                                 "remaining"),
    "pid 0": ((Hello(), Ready([], []), WorkloadStarted(0)), "is not a pid"),
    "setup failure that exits 0": ((Hello(), SetupFailed(0, "setup.failed", "no")),
                                   "exit_code 0"),
    "setup failure with a workload's status": ((Hello(), SetupFailed(1, "setup.failed", "x")),
                                               "exit_code 1"),
    "setup failure above 255": ((Hello(), SetupFailed(300, "setup.failed", "x")),
                                "exit_code 300"),
    "setup failure with an escape in its name": (
        (Hello(), SetupFailed(127, f"command.{ESC}[31m", "x")), "\\x1b[31m"),
    "message after the exit": ((*GOOD_START, WorkloadExited(0, None),
                                Log(TS, "info", "init.late", {})),
                               "unexpected log message"),
    "second setup failure": ((Hello(), SetupFailed(127, "command.not_found", "a"),
                              SetupFailed(126, "command.not_executable", "b")),
                             "unexpected setup_failed"),
    "unknown log level": ((Hello(), Log(TS, "loud", "init.note", {})), "log.level"),
    "event that is not a name": ((Hello(), Log(TS, "info", "Hello world", {})), "log.event"),
    "escape codes in the event": ((Hello(), Log(TS, "info", f"init.{ESC}]0;owned{ESC}\\", {})),
                                  "\\x1b]0;owned"),
    "bad timestamp": ((Hello(), Log("yesterday", "info", "init.note", {})), "log.timestamp"),
    "the supervisor's own event": ((Hello(), Log(TS, "error", "container.failed",
                                                 {"error": "x", "message": "y",
                                                  "exit_code": 0})),
                                   "supervisor's event"),
    "forged workload output": ((Hello(), Log(TS, "info", "workload.output",
                                             {"stream": "stdout", "message": "x",
                                              "partial": False})),
                               "supervisor's event"),
    "terminal without -t": ((Hello(), Ready([], []), Terminal()), "has no terminal"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
async def test_a_bad_message_kills_the_container(fake: FakeInit, logs: Logs, case: str) -> None:
    messages, fragment = BAD_MESSAGES[case]
    fake.send(*messages)
    result = await supervise_fake(fake)
    reason = assert_protocol_error(result, logs.records(), "bad message from init", fragment)
    assert ESC not in reason and "\n" not in reason


async def test_an_empty_datagram_is_not_the_end_of_the_conversation(fake: FakeInit,
                                                                    logs: Logs) -> None:
    # SOCK_SEQPACKET carries empty records; the peer is still there, so it is a bad message,
    # not an end of file after which the supervisor would stop listening.
    fake.start_workload()
    fake.peer.send(b"")
    result = await supervise_fake(fake)
    assert_protocol_error(result, logs.records(), "shorter than its header")


async def test_the_container_is_killed_whenever_the_bad_message_comes(fake: FakeInit,
                                                                      logs: Logs) -> None:
    # Not only in what is drained at the start: a message that arrives while the supervisor
    # waits is handled (and refused) the same way.
    fake.start_workload()

    async def late() -> None:
        await trio.sleep(0.3)
        fake.send(WorkloadExited(999, None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(late)
        result = await supervise_fake(fake)
    assert_protocol_error(result, logs.records(), "999")


# -- descriptors ------------------------------------------------------------------------------


def _closed_everywhere(read_end: int) -> bool:
    """Whether every write end of the pipe is closed (the reader sees end of file)."""
    os.set_blocking(read_end, False)
    try:
        return os.read(read_end, 1) == b""
    except BlockingIOError:
        return False


@pytest.mark.parametrize("carrier", ["hello", "ready", "log", "workload_started"])
async def test_a_descriptor_nobody_asked_for_is_closed_and_kills(fake: FakeInit, logs: Logs,
                                                                carrier: str) -> None:
    read_end, write_end = os.pipe()
    try:
        messages: list[Message] = [Hello(), Ready([], []), WorkloadStarted(2)]
        if carrier == "log":
            messages.insert(1, Log(TS, "info", "init.note", {}))
        index = {"hello": 0, "ready": 1, "log": 1, "workload_started": 2}[carrier]
        fake.send(*messages[:index])
        fake.send(messages[index], fds=[write_end])
        fake.send(*messages[index + 1:])
        os.close(write_end)
        write_end = -1
        result = await supervise_fake(fake)
        assert_protocol_error(result, logs.records(), f"{carrier} message came with 1 file")
        assert _closed_everywhere(read_end), "the supervisor kept the descriptor"
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)


async def test_more_descriptors_than_room_for_them(fake: FakeInit, logs: Logs) -> None:
    pipes = [os.pipe() for _ in range(8)]
    try:
        fake.send(Hello())
        fake.send(Ready([], []), fds=[write_end for _, write_end in pipes])
        for _, write_end in pipes:
            os.close(write_end)
        result = await supervise_fake(fake)
        assert_protocol_error(result, logs.records(), "more descriptors")
        assert all(_closed_everywhere(read_end) for read_end, _ in pipes)
    finally:
        for read_end, _ in pipes:
            os.close(read_end)


@pytest.mark.parametrize("what", ["none", "two", "a pipe"])
async def test_a_terminal_message_must_bring_one_terminal(fake: FakeInit, logs: Logs,
                                                         what: str) -> None:
    master, slave = os.openpty()
    read_end, write_end = os.pipe()
    try:
        fds = {"none": [], "two": [master, master], "a pipe": [write_end]}[what]
        fake.send(Hello(), Ready([], []))
        fake.send(Terminal(), fds=fds)
        fake.send(WorkloadStarted(2))
        os.close(write_end)
        write_end = -1
        result = await supervise_fake(fake, container(tty=True))
        fragment = "not a terminal" if what == "a pipe" else (
            f"with {len(fds)} file descriptors instead of one")
        assert_protocol_error(result, logs.records(), fragment)
        assert _closed_everywhere(read_end)
    finally:
        for fd in (master, slave, read_end, write_end):
            if fd != -1:
                os.close(fd)


async def test_a_terminal_without_tty_is_refused_and_its_descriptor_closed(
        fake: FakeInit, logs: Logs) -> None:
    master, slave = os.openpty()
    try:
        fake.send(Hello(), Ready([], []))
        fake.send(Terminal(), fds=[master])
        os.close(master)
        master = -1
        result = await supervise_fake(fake)
        assert_protocol_error(result, logs.records(), "has no terminal (-t / process.terminal)")
        # The supervisor's copy of the master is closed: the slave sees a hang-up.
        poller = select.poll()
        poller.register(slave, select.POLLHUP)
        assert any(events & select.POLLHUP for _, events in poller.poll(1000))
    finally:
        for fd in (master, slave):
            if fd != -1:
                os.close(fd)


async def test_with_tty_the_terminal_is_accepted_once_before_the_start(fake: FakeInit,
                                                                       logs: Logs) -> None:
    master, slave = os.openpty()
    try:
        fake.send(Hello(), Ready([], []))
        fake.send(Terminal(), fds=[master])
        fake.send(WorkloadStarted(2), WorkloadExited(4, None))
        os.close(master)
        os.close(slave)  # the pty's last user: the supervisor's relay ends (EIO)
        master = slave = -1
        fake.exit()
        result = await supervise_fake(fake, container(tty=True))
        assert (result.error, result.exit_code) == (None, 4)
        events = [record["event"] for record in logs.records()]
        assert "terminal.attached" in events and "container.failed" not in events
    finally:
        for fd in (master, slave):
            if fd != -1:
                os.close(fd)


async def test_with_tty_the_start_without_a_terminal_is_refused(fake: FakeInit,
                                                                logs: Logs) -> None:
    fake.start_workload()
    result = await supervise_fake(fake, container(tty=True))
    assert_protocol_error(result, logs.records(), "workload_started before the terminal")


# -- log fields --------------------------------------------------------------------------------


async def test_init_log_fields_never_replace_the_records_own(fake: FakeInit,
                                                             logs: Logs) -> None:
    forged: dict[str, Value] = {
        "timestamp": "forged", "event": "forged", "level": "forged", "container": "forged",
        "source": "supervisor", "message": 5, "exc_info": True, "stack_info": True,
        "self": "forged", "method_name": "forged", "_record": "forged",
        "init_fields": "forged",
    }
    fake.start_workload()
    fake.send(Log(TS, "warning", "init.note",
                  {**forged, "path": "/ok", "count": 3}),
              Log(TS, "info", "init.text", {"message": "a line of init's"}),
              WorkloadExited(0, None))
    fake.exit()
    result = await supervise_fake(fake)
    assert (result.error, result.exit_code) == (None, 0)
    records = logs.records()  # each one valid against the schema
    [note] = [record for record in records if record["event"] == "init.note"]
    assert (note["timestamp"], note["level"], note["container"], note["source"]) == (
        TS, "warning", "hostile", "init")
    assert note["path"] == "/ok" and note["count"] == 3
    assert note["init_fields"] == forged
    assert "message" not in note and "exception" not in note and "stack" not in note
    [text] = [record for record in records if record["event"] == "init.text"]
    assert text["message"] == "a line of init's" and "init_fields" not in text


async def test_fields_that_break_the_callers_logging_kill_rather_than_crash(
        fake: FakeInit, logs: Logs) -> None:
    # Whatever raises while a message is handled (here: the caller's structlog chain, on one
    # of init's events) is a protocol error, not an exception out of the supervision.
    def refuse(_: object, __: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("event") == "init.poison":
            raise ValueError("cannot log this")
        return event_dict

    config = structlog.get_config()
    structlog.configure(processors=[refuse, *config["processors"]])
    fake.start_workload()
    fake.send(Log(TS, "info", "init.poison", {}))
    result = await supervise_fake(fake)
    assert_protocol_error(result, logs.records(), "ValueError: cannot log this")


async def test_a_supervision_that_fails_outright_still_kills_and_reaps_first(
        fake: FakeInit, logs: Logs) -> None:
    # Even when reporting the protocol error fails too, supervise raises only once the
    # container is dead and reaped.
    def refuse(_: object, __: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("event") in ("init.poison", "container.failed"):
            raise ValueError("logging is broken")
        return event_dict

    config = structlog.get_config()
    structlog.configure(processors=[refuse, *config["processors"]])
    fake.start_workload()
    fake.send(Log(TS, "info", "init.poison", {}))
    with pytest.raises(BaseException) as caught, trio.fail_after(DEADLINE):
        await supervise(fake.init, container())
    error = caught.value
    assert isinstance(error, ValueError) or (
        isinstance(error, BaseExceptionGroup) and error.subgroup(ValueError) is not None), error
    assert fake.gone()
    events = [record["event"] for record in logs.records()]
    assert "container.killed" in events and events[-1] == "container.cleanup_done"


# -- text from inside --------------------------------------------------------------------------

HOSTILE_TEXT = f"{ESC}]0;owned{ESC}\\{ESC}[2J\x9b31m\x7f\u202e\nsecond line"


async def test_a_forged_setup_failure_is_shown_escaped_and_its_init_not_left_running(
        fake: FakeInit, logs: Logs, short_linger: float) -> None:
    # A setup failure of the right shape is believed (init may report one at any time), but
    # its text is escaped and one line, and an init that does not exit after it is killed.
    fake.start_workload()
    fake.send(SetupFailed(127, "command.not_found", f"not found: {HOSTILE_TEXT}"))
    began = time.monotonic()
    result = await supervise_fake(fake)
    assert time.monotonic() - began >= short_linger
    assert (result.error, result.exit_code) == ("command.not_found", 127)
    assert result.message == f"not found: {printable(HOSTILE_TEXT)}"
    assert result.message.isprintable() and "\\x1b]0;owned" in result.message
    records = logs.records()
    [failed] = [record for record in records if record["event"] == "container.failed"]
    assert failed["message"] == result.message
    [killed] = [record for record in records if record["event"] == "container.killed"]
    assert "did not exit" in str(killed["reason"])


async def test_an_init_that_lingers_after_the_exit_is_killed(fake: FakeInit, logs: Logs,
                                                             short_linger: float) -> None:
    fake.start_workload()
    fake.send(WorkloadExited(3, None))
    result = await supervise_fake(fake)
    assert (result.error, result.exit_code) == (None, 3)
    events = [record["event"] for record in logs.records()]
    assert "container.killed" in events and "workload.exited" in events


async def test_the_text_format_escapes_what_comes_from_inside(fake: FakeInit,
                                                              text_logs: Logs) -> None:
    fake.start_workload()
    fake.send(Log(TS, "info", "init.note", {"plain": HOSTILE_TEXT.replace(" ", ""),
                                            "spaced": f"a b{ESC}[31m",
                                            f"key{ESC}[1m": "value",
                                            "nested": [f"x{ESC}y"]}),
              SetupFailed(126, "command.not_executable", f"cannot run {ESC}[5mx"))
    fake.exit()
    result = await supervise_fake(fake)
    assert result.error == "command.not_executable"
    output = text_logs.data().decode()
    lines = output.splitlines()
    assert all(line.isprintable() for line in lines), [line for line in lines
                                                        if not line.isprintable()]
    [note] = [line for line in lines if "init.note" in line]
    assert "\\x1b]0;owned" in note and "\\x9b31m" in note and "\\u202e" in note
    assert "\\nsecondline" in note and "key\\x1b[1m=value" in note
    assert "spaced='a b\\x1b[31m'" in note and "nested=['x\\x1by']" in note
    # Escaped once already (the failure's message is one printable line for the user), and
    # quoted by the renderer for its space, which shows its backslash doubled.
    [failed] = [line for line in lines if "container.failed" in line]
    assert "message='cannot run \\\\x1b[5mx'" in failed


async def test_json_escapes_c1_controls_and_del_too(fake: FakeInit, logs: Logs) -> None:
    fake.start_workload()
    fake.send(Log(TS, "info", "init.note", {"text": f"\x9b31m\x7f{ESC}é"}),
              WorkloadExited(0, None))
    fake.exit()
    await supervise_fake(fake)
    data = logs.data()
    assert b"\xc2\x9b" not in data and b"\x7f" not in data and b"\x1b" not in data
    assert b'"text":"\\u009b31m\\u007f\\u001b\xc3\xa9"' in data  # é stays as it is
    [note] = [record for record in logs.records() if record["event"] == "init.note"]
    assert note["text"] == f"\x9b31m\x7f{ESC}é"  # the value itself is exact


# -- the library's run() -----------------------------------------------------------------------


@requires_root
@pytest.mark.parametrize("check", [False, True])
async def test_run_returns_only_once_the_container_is_dead(
        fake: FakeInit, logs: Logs, rootfs: Path, monkeypatch: pytest.MonkeyPatch,
        check: bool) -> None:
    def spawn_fake(*_: object, **__: object) -> InitProcess:
        return fake.init

    monkeypatch.setattr(api, "spawn_init", spawn_fake)
    fake.start_workload()
    fake.send(WorkloadExited(None, 200))
    config = ContainerConfig(rootfs, ["/bin/true"], name="hostile")
    with trio.fail_after(DEADLINE):
        if check:
            with pytest.raises(ContainerFailed) as caught:
                await api.run(config, check=True)
            result = caught.value.result
            assert caught.value.error == "protocol.error"
        else:
            result = await api.run(config)
    assert fake.gone()
    assert_protocol_error(result, logs.records(), "outside 1-64")


# -- the command line --------------------------------------------------------------------------

HOSTILE_CLI = '''
import os, socket, struct, sys, time

import pyctr.init
from pyctr.protocol import (Created, Hello, Log, Ready, SetupFailed, Terminal,
                            WorkloadExited, WorkloadStarted, encode, utc_timestamp)

ESC = "\\x1b"


def hostile(sock, started, spec, keep_fds=0):
    """PID 1 of the container's PID namespace, as the CLI forks it, but not pyctr's init."""
    scenario = os.environ["HOSTILE_SCENARIO"]
    send = lambda message: sock.send(encode(message))
    for _ in ("hello", "config"):  # as pyctr's init, wait for them (1 MiB at most each)
        sock.recv((1 << 20) + 4)
    send(Hello())
    if scenario == "setup_failed":
        send(SetupFailed(127, "command.not_found",
                         f"{ESC}[2J{ESC}]0;owned{ESC}\\\\ not found\\nsecond line"))
        os._exit(127)
    send(Ready(["mount", "pid"], ["/proc"]))
    if scenario == "created":  # the OCI runtime's message, to a supervisor that asked none
        send(Created())
    if scenario == "terminal":
        master, slave = os.openpty()
        sock.sendmsg([encode(Terminal())],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master))])
    send(WorkloadStarted(2))
    if started != -1:
        os.close(started)
    if scenario == "fields":
        send(Log(utc_timestamp(), "info", "init.note",
                 {"timestamp": "forged", "event": "forged", "source": "supervisor",
                  "title": f"{ESC}]0;owned{ESC}\\\\"}))
        send(WorkloadExited(7, None))
        os._exit(7)
    if scenario == "exit_code":
        send(WorkloadExited(300, None))
    time.sleep(60)  # the supervisor must kill us
    os._exit(0)


pyctr.init.run = hostile  # what the CLI's forked child calls
from pyctr.supervisor.cli import main

main(sys.argv[1:])
'''


def run_hostile_cli(tmp_path: Path, rootfs: Path, scenario: str, *options: str) -> Run:
    script = tmp_path / "hostile_cli.py"
    script.write_text(HOSTILE_CLI)
    began = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(script), "--name", "hostile", *options, str(rootfs), "/bin/true"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOSTILE_SCENARIO": scenario})
    assert time.monotonic() - began < DEADLINE, "the hostile init was not killed"
    run = Run(completed)  # every JSON record is checked against the schema
    assert "Traceback" not in run.stderr, run.stderr
    assert ESC not in run.stderr and "\x9b" not in run.stderr
    return run


def one_error_line(run: Run) -> str:
    [line] = run.other_stderr
    assert line.startswith("pyctr-supervise: error: ") and line.isprintable(), line
    return line


@requires_root
@pytest.mark.parametrize(("scenario", "fragment"), [
    ("exit_code", "workload_exited.code 300 is outside 0-255"),
    ("terminal", "terminal message, but the container has no terminal"),
    ("created", "unexpected created message from init"),
])
def test_cli_kills_a_container_whose_init_breaks_the_protocol(
        tmp_path: Path, rootfs: Path, scenario: str, fragment: str) -> None:
    run = run_hostile_cli(tmp_path, rootfs, scenario)
    assert run.returncode == 125
    assert fragment in one_error_line(run)
    [failed] = [record for record in run.records if record["event"] == "container.failed"]
    assert (failed["error"], failed["level"], failed["exit_code"]) == (
        "protocol.error", "error", 125)
    assert run.record("container.killed")["reason"] == "protocol error"
    assert run.records[-1]["event"] == "container.cleanup_done"


@requires_root
def test_cli_keeps_init_fields_apart(tmp_path: Path, rootfs: Path) -> None:
    run = run_hostile_cli(tmp_path, rootfs, "fields")
    assert (run.returncode, run.other_stderr) == (7, [])
    note = run.record("init.note")
    assert (note["source"], note["container"]) == ("init", "hostile")
    assert note["init_fields"] == {"timestamp": "forged", "event": "forged",
                                   "source": "supervisor"}
    assert note["title"] == f"{ESC}]0;owned{ESC}\\"  # exact in JSON, escaped by the encoder


@requires_root
def test_cli_text_format_escapes_init_fields(tmp_path: Path, rootfs: Path) -> None:
    run = run_hostile_cli(tmp_path, rootfs, "fields", "--log-format", "text")
    assert run.returncode == 7 and run.records == []
    [note] = [line for line in run.other_stderr if "init.note" in line]
    assert "title=\\x1b]0;owned\\x1b\\" in note


@requires_root
def test_cli_prints_a_forged_setup_failure_escaped(tmp_path: Path, rootfs: Path) -> None:
    run = run_hostile_cli(tmp_path, rootfs, "setup_failed")
    assert run.returncode == 127
    line = one_error_line(run)
    assert line == ("pyctr-supervise: error: \\x1b[2J\\x1b]0;owned\\x1b\\ not found\\nsecond "
                    "line")
    assert run.record("container.failed")["message"] == line.removeprefix(
        "pyctr-supervise: error: ")



async def test_a_host_that_cannot_restrict_devices_is_one_warning(fake: FakeInit,
                                                                  logs: Logs) -> None:
    # The cgroup of a host with neither a devices controller nor a device program: the
    # supervisor says so once, as a warning (the init makes the mounts nodev instead).
    fake.init.cgroup = ContainerCgroup("hostile", Layout("none"), [], devices_enforced=False,
                                       unenforced_reason="no devices controller here")
    fake.start_workload()
    fake.send(WorkloadExited(0, None))
    fake.exit()
    result = await supervise_fake(fake)
    assert (result.error, result.exit_code) == (None, 0)
    [warning] = [record for record in logs.records()
                 if record["event"] == "devices.not_enforced"]
    assert warning["level"] == "warning" and warning["reason"] == "no devices controller here"
