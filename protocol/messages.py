"""Every message the supervisor and init exchange, as data.

The conversation, in order:

    supervisor -> init   Hello(version)            handshake; init answers with its own Hello,
    init -> supervisor   Hello(version)            or SetupFailed if it cannot speak ours
    supervisor -> init   Config(...)               what to run and how
    init -> supervisor   Log(...)*                 init's log events, at any point
    init -> supervisor   Ready(...)                namespaces and root filesystem are set up
    init -> supervisor   Terminal()                with -t: the pty's master, as SCM_RIGHTS
    init -> supervisor   Created()                 with Config.start_fifo only: everything is
                                                   set up, init waits for the FIFO; a detached
                                                   init sends nothing more
    init -> supervisor   WorkloadStarted(pid)      the exec succeeded (pid inside); the
                                                   socket credentials name the workload, so
                                                   the supervisor learns its host pid
    init -> supervisor   WorkloadExited(...)       how it ended; init exits right after
    init -> supervisor   SetupFailed(...)          instead of the above, when setup fails

Messages are plain classes (not dataclasses) because this module sits on the supervisor's
start-up path and ``dataclasses`` costs more to import than the rest of the protocol.
"""

from __future__ import annotations

import time

from .codec import (
    MalformedMessage,
    UnknownMessage,
    VersionMismatch,
    decode_value,
    encode_value,
    frame,
    unframe,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

    from .codec import Value

PROTOCOL_VERSION = 9
EXIT_SETUP_FAILED = 125
"""pyctr could not run the container (the CLI's status, as docker's)."""
EXIT_CANNOT_EXECUTE = 126
"""The command exists but cannot be executed."""
EXIT_NOT_FOUND = 127
"""The command, its ELF loader, its interpreter or a library is missing from the rootfs."""
EXIT_PROTOCOL_ERROR = 125
"""The supervisor killed the container because its init broke the protocol (a message that
does not decode, is out of place or out of range, or brings descriptors it should not):
``error`` is ``protocol.error``. The same status as any other failure of pyctr's (docker's
125); the error name tells it apart."""
SETUP_EXIT_CODES = (EXIT_SETUP_FAILED, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND)
"""The only values ``SetupFailed.exit_code`` may take."""
MAX_EXIT_CODE = 255
MAX_SIGNAL = 64
"""Signals are 1-64 on Linux (``SIGRTMAX``)."""
MAX_PID = 1 << 22
"""PID_MAX_LIMIT on 64-bit Linux: no pid is larger."""
MAX_WALL_TIME_US = 10 * 365 * 86400 * 1_000_000
"""Ten years: no workload's wall time is longer."""
MAX_NAME_LENGTH = 128
"""Longest event or error name accepted from the peer."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""The values of ``Log.level`` and ``Config.log_level``, least severe first."""

_second_cache: list[object] = [-1, ""]


def utc_timestamp(now: float | None = None) -> str:
    """RFC 3339 in UTC with microseconds, the format of every timestamp pyctr writes
    (``Log.timestamp`` included). Without datetime, which init would have to import."""
    now = time.time() if now is None else now
    seconds = int(now)
    if _second_cache[0] != seconds:  # strftime costs more than the rest; once per second
        _second_cache[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second_cache[1]}.{int((now - seconds) * 1_000_000):06d}Z"


def is_dotted_name(text: str) -> bool:
    """Whether ``text`` is an event or error name as the log schema has them: lowercase words
    of ``a-z`` and ``_`` joined by dots, at least two (``rootfs.mounted``); not too long."""
    if not 0 < len(text) <= MAX_NAME_LENGTH:
        return False
    words = text.split(".")
    return len(words) >= 2 and all(
        word and all("a" <= char <= "z" or char == "_" for char in word) for word in words)


def is_timestamp(text: str) -> bool:
    """Whether ``text`` has the form ``utc_timestamp`` writes: ``2026-11-29T03:20:21.294133Z``
    (checked by hand: this module does not import ``re``)."""
    if len(text) != 27 or not text.isascii():
        return False
    separators = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: ".", 26: "Z"}
    return all(text[index] == separators[index] if index in separators
               else text[index].isdigit() for index in range(27))


_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str, limit: int | None = None) -> str:
    """``text`` from the other side of the socket, made safe to print on a terminal and to
    keep on one line: every character ``str.isprintable`` refuses (C0 and C1 controls such as
    ESC, DEL, newlines, bidirectional overrides, lone surrogates) is written as its escape,
    ``\\x1b``, ``\\n``, ``\\u202e``. With ``limit``, only the first ``limit`` characters are
    kept (``...`` marks the cut)."""
    cut = ""
    if limit is not None and len(text) > limit:
        text, cut = text[:limit], "..."
    if not text.isprintable():
        text = "".join(char if char.isprintable() else _escape(char) for char in text)
    return text + cut


def _escape(char: str) -> str:
    named = _ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class Message:
    """Base of all messages. ``FIELDS`` lists (name, kind) pairs; the kinds are checked on
    decode: ``int``, ``str``, ``bool``, ``int?`` (int or None), ``[str]`` (list of text),
    ``{str}`` (text to text), ``{any}`` (text to any encodable value). ``check`` then says
    whether the values make sense (ranges, names): ``decode`` checks only the shape, so that
    any message of the right shape still round-trips."""

    __slots__ = ()
    TYPE: ClassVar[str]
    FIELDS: ClassVar[tuple[tuple[str, str], ...]]

    def to_value(self) -> dict[str, Value]:
        return {name: getattr(self, name) for name, _ in self.FIELDS}

    def check(self) -> None:
        """Raise MalformedMessage when a value is out of its range (the receiver of a
        message from a peer it does not trust calls this after ``decode``)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and type(other) is type(self) and (
            self.to_value() == other.to_value()
        )

    def __hash__(self) -> int:
        return hash((self.TYPE, repr(self.to_value())))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name, _ in self.FIELDS)
        return f"{type(self).__name__}({args})"


class Hello(Message):
    __slots__ = ("version",)
    TYPE = "hello"
    FIELDS = (("version", "int"),)

    def __init__(self, version: int = PROTOCOL_VERSION) -> None:
        self.version = version


def check_hello(hello: Hello, peer: str) -> None:
    """The handshake, for either side: raise VersionMismatch when ``peer`` ("init" or
    "supervisor") speaks another version of the protocol than this side."""
    if hello.version != PROTOCOL_VERSION:
        raise VersionMismatch(f"{peer} speaks protocol {hello.version}, this side "
                              f"{PROTOCOL_VERSION}; install matching pyctr versions")


class Config(Message):
    """What init must build and run. ``spec`` is the container as a runtime-spec document
    (``pyctr.spec.Spec.to_value``), already checked by the supervisor, as JSON text, or empty
    when the init is a fork of the supervisor and has the checked spec in memory. JSON, not
    this codec's values: a spec is a few hundred strings, which the json module's C code
    writes and reads many times faster than this pure-Python codec, and the direction is the
    trusted one (from the supervisor); the supervisor never decodes JSON from init, and
    ``json`` is imported only where a spec is read, never on the CLI's way to the fork.
    ``rootfs`` is its root as an absolute host path. ``chroot``: change root with chroot(2),
    not pivot_root(2). ``signal_group``: relay signals to the workload's whole process group
    (else to its main process only). ``log_level``: the least severe of init's log events
    the supervisor will show; init does not send the others (each costs an encode and a send
    on the way to the exec). ``seccomp``: the workload's seccomp filter, compiled by the
    supervisor (classic BPF, in hex: the codec carries no raw bytes), or empty for none;
    ``seccomp_flags``: seccomp(2)'s flags for it; ``seccomp_fits_init``: the filter allows
    everything init does once the workload runs (it is pyctr's default profile), so init may
    install it on itself and start the workload with posix_spawn (see
    ``pyctr.init.workload.start``). ``nodev``: no device filter could be set up on this
    host, so every mount but ``/dev``, the root included, is made nodev. ``cgroups``: the
    container's cgroup directories (host paths): when there are any, init waits for
    CgroupJoined before it starts the workload. ``stop_signal``, ``stop_timeout_ms``: what
    init does with the processes still running when the workload's main process has exited:
    the signal, then SIGKILL after that many milliseconds. ``overlay_upper``,
    ``overlay_work``: host directories (made by the supervisor) for an overlayfs root whose
    read-only lower layer is ``rootfs``; both empty for the rootfs itself as the root.
    ``start_fifo``: a FIFO on the host (the OCI runtime's ``create``/``start``): once set
    up, init sends Created and waits until a byte arrives on it before it starts the
    workload. ``detached``: no supervisor stays (the OCI runtime's ``create`` exits): no
    parent-death signal, and init sends nothing after Created."""

    __slots__ = ("cgroups", "chroot", "container", "detached", "log_level", "nodev",
                 "overlay_upper", "overlay_work", "rootfs", "seccomp", "seccomp_fits_init",
                 "seccomp_flags", "signal_group", "spec", "start_fifo", "stop_signal",
                 "stop_timeout_ms")
    TYPE = "config"
    FIELDS = (
        ("container", "str"),
        ("rootfs", "str"),
        ("spec", "str"),
        ("chroot", "bool"),
        ("signal_group", "bool"),
        ("log_level", "str"),
        ("seccomp", "str"),
        ("seccomp_flags", "int"),
        ("seccomp_fits_init", "bool"),
        ("nodev", "bool"),
        ("cgroups", "[str]"),
        ("stop_signal", "int"),
        ("stop_timeout_ms", "int"),
        ("overlay_upper", "str"),
        ("overlay_work", "str"),
        ("start_fifo", "str"),
        ("detached", "bool"),
    )

    def __init__(self, container: str, rootfs: str, spec: str, *,
                 chroot: bool = False, signal_group: bool = True,
                 log_level: str = "debug", seccomp: str = "", seccomp_flags: int = 0,
                 seccomp_fits_init: bool = False, nodev: bool = False,
                 cgroups: list[str] | None = None,
                 stop_signal: int = 15, stop_timeout_ms: int = 10_000,
                 overlay_upper: str = "", overlay_work: str = "", start_fifo: str = "",
                 detached: bool = False) -> None:
        self.container = container
        self.rootfs = rootfs
        self.spec = spec
        self.chroot = chroot
        self.signal_group = signal_group
        self.log_level = log_level
        self.seccomp = seccomp
        self.seccomp_flags = seccomp_flags
        self.seccomp_fits_init = seccomp_fits_init
        self.nodev = nodev
        self.cgroups = list(cgroups or [])
        self.stop_signal = stop_signal
        self.stop_timeout_ms = stop_timeout_ms
        self.overlay_upper = overlay_upper
        self.overlay_work = overlay_work
        self.start_fifo = start_fifo
        self.detached = detached

    def check(self) -> None:
        if not 1 <= self.stop_signal <= MAX_SIGNAL:
            raise MalformedMessage(f"config.stop_signal {self.stop_signal} is outside "
                                   f"1-{MAX_SIGNAL}")
        if self.stop_timeout_ms < 0:
            raise MalformedMessage("config.stop_timeout_ms is negative")
        if bool(self.overlay_upper) != bool(self.overlay_work):
            raise MalformedMessage("config.overlay_upper and overlay_work go together")
        if self.detached and not self.start_fifo:
            raise MalformedMessage("config.detached needs config.start_fifo")


class Log(Message):
    """One log event from init; ``timestamp`` is when init logged it (RFC 3339, UTC)."""

    __slots__ = ("event", "fields", "level", "timestamp")
    TYPE = "log"
    FIELDS = (("timestamp", "str"), ("level", "str"), ("event", "str"), ("fields", "{any}"))

    def __init__(self, timestamp: str, level: str, event: str, fields: dict[str, Value]) -> None:
        self.timestamp = timestamp
        self.level = level
        self.event = event
        self.fields = fields

    def check(self) -> None:
        if self.level not in LOG_LEVELS:
            raise MalformedMessage(f"log.level '{printable(self.level, 40)}' is not one of "
                                   f"{', '.join(LOG_LEVELS)}")
        if not is_dotted_name(self.event):
            raise MalformedMessage(f"log.event '{printable(self.event, 80)}' is not a dotted "
                                   f"event name")
        if not is_timestamp(self.timestamp):
            raise MalformedMessage(f"log.timestamp '{printable(self.timestamp, 40)}' is not "
                                   f"an RFC 3339 UTC timestamp with microseconds")


class Ready(Message):
    """The container exists: namespaces entered, root filesystem built, root changed."""

    __slots__ = ("mounts", "namespaces")
    TYPE = "ready"
    FIELDS = (("namespaces", "[str]"), ("mounts", "[str]"))

    def __init__(self, namespaces: list[str], mounts: list[str]) -> None:
        self.namespaces = namespaces
        self.mounts = mounts


class CgroupJoined(Message):
    """From the supervisor: the init is in the container's cgroups now (``Config.cgroups``),
    so it may start the workload. The supervisor moves it after sending the config: on cgroup
    v1 a move waits for an RCU grace period, several milliseconds in which the init builds
    the root."""

    __slots__ = ()
    TYPE = "cgroup_joined"
    FIELDS = ()


class Created(Message):
    """With ``Config.start_fifo``: the container is built, the command found and runnable,
    the init in its cgroups; init now waits for the FIFO (the OCI runtime's ``start``)."""

    __slots__ = ()
    TYPE = "created"
    FIELDS = ()


class Terminal(Message):
    """The master side of the workload's pseudo-terminal travels with this message as an
    SCM_RIGHTS descriptor; it was opened inside the container, on its own /dev/pts."""

    __slots__ = ()
    TYPE = "terminal"
    FIELDS = ()


class WorkloadStarted(Message):
    """The workload's exec succeeded; ``pid`` is its pid inside the container. Init sends it
    with SCM_CREDENTIALS naming the workload instead of itself (root may), and the receiving
    kernel translates that pid into the supervisor's PID namespace: the host pid, known even
    if the workload has already exited."""

    __slots__ = ("pid",)
    TYPE = "workload_started"
    FIELDS = (("pid", "int"),)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def check(self) -> None:
        if not 1 <= self.pid <= MAX_PID:
            raise MalformedMessage(f"workload_started.pid {self.pid} is not a pid")


class WorkloadExited(Message):
    """Exactly one of ``code`` (normal exit) and ``signal`` (killed by it) is set.
    ``wall_time_us``: the workload's wall-clock time, from just before init started it to
    its reap. ``remaining``: processes still running in the container when the main process
    exited, which init then stopped (``Config.stop_signal``); ``killed``: how many of those
    needed SIGKILL after the stop timeout."""

    __slots__ = ("code", "killed", "remaining", "signal", "wall_time_us")
    TYPE = "workload_exited"
    FIELDS = (("code", "int?"), ("signal", "int?"), ("wall_time_us", "int"),
              ("remaining", "int"), ("killed", "int"))

    def __init__(self, code: int | None, signal: int | None, wall_time_us: int = 0,
                 remaining: int = 0, killed: int = 0) -> None:
        self.code = code
        self.signal = signal
        self.wall_time_us = wall_time_us
        self.remaining = remaining
        self.killed = killed

    def check(self) -> None:
        if (self.code is None) == (self.signal is None):
            raise MalformedMessage("workload_exited must have exactly one of code and signal")
        if self.code is not None and not 0 <= self.code <= MAX_EXIT_CODE:
            raise MalformedMessage(f"workload_exited.code {self.code} is outside "
                                   f"0-{MAX_EXIT_CODE}")
        if self.signal is not None and not 1 <= self.signal <= MAX_SIGNAL:
            raise MalformedMessage(f"workload_exited.signal {self.signal} is outside "
                                   f"1-{MAX_SIGNAL}")
        if not 0 <= self.wall_time_us <= MAX_WALL_TIME_US:
            raise MalformedMessage(f"workload_exited.wall_time_us {self.wall_time_us} is "
                                   f"outside 0-{MAX_WALL_TIME_US}")
        if not 0 <= self.killed <= self.remaining <= MAX_PID:
            raise MalformedMessage(f"workload_exited: killed {self.killed} and remaining "
                                   f"{self.remaining} must satisfy 0 <= killed <= remaining "
                                   f"<= {MAX_PID}")


class SetupFailed(Message):
    """Init could not build the container or start the command. ``message`` is the one line
    shown to the user; ``exit_code`` is EXIT_SETUP_FAILED, EXIT_CANNOT_EXECUTE or
    EXIT_NOT_FOUND."""

    __slots__ = ("error", "exit_code", "message")
    TYPE = "setup_failed"
    FIELDS = (("exit_code", "int"), ("error", "str"), ("message", "str"))

    def __init__(self, exit_code: int, error: str, message: str) -> None:
        self.exit_code = exit_code
        self.error = error
        self.message = message

    def check(self) -> None:
        # 0 would make a failure look like success, anything else a workload's own status.
        if self.exit_code not in SETUP_EXIT_CODES:
            raise MalformedMessage(f"setup_failed.exit_code {self.exit_code} is not one of "
                                   f"{', '.join(map(str, SETUP_EXIT_CODES))}")
        if not is_dotted_name(self.error):
            raise MalformedMessage(f"setup_failed.error '{printable(self.error, 80)}' is not a "
                                   f"dotted error name")


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Hello, Config, CgroupJoined, Log, Ready, Created, Terminal, WorkloadStarted,
                WorkloadExited, SetupFailed)
}


def encode(message: Message) -> bytes:
    """One complete frame for ``message``."""
    return frame(encode_value([message.TYPE, message.to_value()]))


def decode(data: bytes) -> Message:
    """Parse one complete frame. Raises only ``ProtocolError`` subclasses."""
    value = decode_value(unframe(data))
    if not (isinstance(value, list) and len(value) == 2):
        raise MalformedMessage("payload is not a [type, fields] pair")
    name, fields = value
    if not (isinstance(name, str) and isinstance(fields, dict)):
        raise MalformedMessage("payload is not a [type, fields] pair")
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise UnknownMessage(f"unknown message type {name!r}")
    expected = {field for field, _ in cls.FIELDS}
    if fields.keys() != expected:
        missing = sorted(expected - fields.keys())
        extra = sorted(fields.keys() - expected)
        raise MalformedMessage(f"{name}: missing fields {missing}, unexpected fields {extra}")
    for field, kind in cls.FIELDS:
        if not _has_kind(fields[field], kind):
            raise MalformedMessage(f"{name}.{field} is not of kind {kind}")
    return cls(**fields)


def _has_kind(value: Value, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "int?":
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "[str]":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "{str}":
        return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
    if kind == "{any}":
        return isinstance(value, dict)
    raise AssertionError(f"unknown field kind {kind!r}")
