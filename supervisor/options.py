"""The command line: ``pyctr-supervise [OPTIONS] ROOTFS COMMAND [ARG...]``, ``pyctr-supervise
[OPTIONS] --bundle DIR`` and ``pyctr-supervise spec [OPTIONS] [ROOTFS COMMAND [ARG...]]``.

A small table-driven parser rather than argparse, for two reasons: options stop at the first
positional argument (everything after ROOTFS belongs to the command, dashes included, as with
``docker run``), and argparse with its dependencies costs ~10 ms to import, which would sit
between the user pressing Enter and the workload starting.
"""

from __future__ import annotations

from pyctr.linux import signal
from pyctr.protocol import LOG_LEVELS as ALL_LEVELS
from pyctr.spec.docker import DEFAULT_STOP_TIMEOUT

from .errors import UsageError
from .signals import parse_signal

PROG = "pyctr-supervise"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = tuple(level for level in ALL_LEVELS if level != "critical")


class Option:
    __slots__ = ("dest", "help", "long", "metavar", "short")

    def __init__(self, short: str | None, long: str, dest: str, metavar: str | None,
                 help: str) -> None:
        self.short, self.long, self.dest, self.metavar, self.help = (
            short, long, dest, metavar, help
        )

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None


OPTIONS = (
    Option("-h", "--hostname", "hostname", "NAME",
           "hostname inside the container (default: the container id)"),
    Option(None, "--name", "name", "ID",
           "container id used in logs (default: 12 random hex digits)"),
    Option("-e", "--env", "env", "KEY=VALUE",
           "set an environment variable for the command (repeatable)"),
    Option(None, "--env-file", "env_files", "FILE",
           "read environment variables from FILE, one NAME=VALUE a line (repeatable)"),
    Option("-w", "--workdir", "workdir", "DIR",
           "working directory inside the container (default: /; created when missing)"),
    Option("-u", "--user", "user", "USER[:GROUP]",
           "run as USER (name or uid) and GROUP, from the rootfs's /etc/passwd and /etc/group"),
    Option("-v", "--volume", "volumes", "SRC:DST[:ro]",
           "bind-mount host path (or named volume) SRC on DST (repeatable)"),
    Option(None, "--tmpfs", "tmpfs", "DST[:OPTS]",
           "mount a tmpfs on DST, e.g. /run:size=64m,mode=755 (repeatable)"),
    Option(None, "--mount", "mounts", "type=...,...",
           "docker's --mount: type=bind|tmpfs|volume,source=...,target=...[,readonly]"),
    Option(None, "--read-only", "read_only", None,
           "make the root filesystem read-only (/tmp, /dev and /dev/shm stay writable)"),
    Option(None, "--ulimit", "ulimits", "NAME=SOFT[:HARD]",
           "set a resource limit, e.g. nofile=1024:2048 (repeatable)"),
    Option(None, "--cap-add", "cap_add", "CAP",
           "add a capability to docker's default set, e.g. NET_ADMIN, or ALL (repeatable)"),
    Option(None, "--cap-drop", "cap_drop", "CAP",
           "drop a capability from the default set, or ALL (repeatable)"),
    Option(None, "--privileged", "privileged", None,
           "every capability, no seccomp filter, no masked paths, every device allowed"),
    Option(None, "--security-opt", "security_opt", "OPT",
           "no-new-privileges[=true|false] or seccomp=unconfined|PROFILE.json (repeatable)"),
    Option(None, "--device", "devices", "HOST[:CTR[:rwm]]",
           "give the container the host's device node HOST (repeatable)"),
    Option("-m", "--memory", "memory", "SIZE",
           "memory limit, e.g. 512m or 2g (docker's; at least 6m); swap defaults to as much"),
    Option(None, "--memory-swap", "memory_swap", "SIZE",
           "memory plus swap limit (at least --memory), or -1 for unlimited swap"),
    Option(None, "--cpus", "cpus", "N",
           "CPU time limit in CPUs, e.g. 0.5 (throttled, not killed; see --ulimit cpu=)"),
    Option("-c", "--cpu-shares", "cpu_shares", "N",
           "relative CPU weight against other containers (default 1024)"),
    Option(None, "--pids-limit", "pids_limit", "N",
           "most processes and threads the container may have (0 or -1: no limit)"),
    Option(None, "--cpuset-cpus", "cpuset_cpus", "LIST",
           "CPUs the container may run on, e.g. 0-1 or 0,2"),
    Option(None, "--cpuset-mems", "cpuset_mems", "LIST",
           "memory nodes the container may use, e.g. 0"),
    Option(None, "--network", "network", "none|host|bridge",
           "none: only lo (default); host: the host's network; bridge: an address on pyctr0"),
    Option("-p", "--publish", "publish", "[IP:][HOST:]CTR[/udp]",
           "with --network bridge: forward host port HOST (on 127.0.0.1) to CTR (repeatable)"),
    Option(None, "--overlay", "overlay", None,
           "write to a throwaway overlay over ROOTFS (ROOTFS:O too): the rootfs stays unchanged"),
    Option(None, "--overlay-upper", "overlay_upper", "DIR",
           "with the overlay, keep the container's changes in DIR/upper (DIR must exist)"),
    Option(None, "--bundle", "bundle", "DIR",
           "run the OCI bundle DIR (DIR/config.json) instead of ROOTFS COMMAND"),
    Option(None, "--chroot", "chroot", None,
           "change root with chroot(2) instead of pivot_root(2) (weaker isolation)"),
    Option(None, "--stop-timeout", "stop_timeout", "SECONDS",
           "after SIGINT/SIGTERM, wait this long before SIGKILL (default: 10)"),
    Option("-t", "--tty", "tty", None,
           "give the command a pseudo-terminal; the host terminal is put in raw mode"),
    Option("-i", "--interactive", "interactive", None,
           "keep stdin attached even when it is a terminal (use -it for a shell)"),
    Option(None, "--stop-signal", "stop_signal", "SIGNAL",
           "send SIGNAL instead of a forwarded SIGINT/SIGTERM (e.g. QUIT)"),
    Option(None, "--signal-target", "signal_target", "group|main",
           "forward signals to the command's process group (default) or its main process"),
    Option(None, "--timeout", "timeout", "SECONDS",
           "stop the container after SECONDS of wall-clock time; exit status 124"),
    Option(None, "--status-file", "status_file", "PATH",
           "write the result record (one JSON object) to PATH at the end"),
    Option(None, "--status-fd", "status_fd", "N",
           "write the result record to the open file descriptor N at the end"),
    Option(None, "--capture-output", "capture_output", None,
           "log the command's stdout/stderr as records (one per line) instead of passing it"),
    Option(None, "--log-format", "log_format", "text|json",
           "log format (default: text on a terminal, json otherwise)"),
    Option(None, "--log-file", "log_file", "PATH",
           "append logs to PATH (created 0600) instead of stderr"),
    Option(None, "--log-max-size", "log_max_size", "SIZE",
           "with --log-file: rotate when the file would exceed SIZE (e.g. 10m, 512k)"),
    Option(None, "--log-max-files", "log_max_files", "N",
           "with --log-max-size: keep N files, PATH and PATH.1 .. PATH.N-1 (default: 1)"),
    Option(None, "--log-level", "log_level", "LEVEL",
           "debug, info, warning or error (default: info; warning when the logs go to a "
           "terminal)"),
    Option(None, "--verbose", "verbose", None, "the same as --log-level info"),
    Option(None, "--cleanup", "cleanup", None,
           "remove what killed supervisors left (cgroups, layers, leases) and an idle bridge"),
    Option(None, "--help", "help", None, "show this help and exit"),
    Option(None, "--version", "version", None, "show the version and exit"),
)
_REPEATABLE = ("env_files", "volumes", "tmpfs", "mounts", "ulimits", "cap_add", "cap_drop",
               "security_opt", "devices", "publish")
# What describes the container itself, which a bundle's config.json says instead.
_CONTAINER_OPTIONS = ("hostname", "env", "env_files", "workdir", "user", "volumes", "tmpfs",
                      "mounts", "read_only", "ulimits", "tty", "cap_add", "cap_drop",
                      "privileged", "security_opt", "devices", "memory", "memory_swap", "cpus",
                      "cpu_shares", "pids_limit", "cpuset_cpus", "cpuset_mems")
_BY_NAME = {name: option for option in OPTIONS for name in (option.short, option.long) if name}


class CommandLine:
    """What the user asked for, before validation against the machine."""

    __slots__ = ("bundle", "cap_add", "cap_drop", "capture_output", "chroot", "cleanup",
                 "command", "cpu_shares", "cpus", "cpuset_cpus", "cpuset_mems", "devices",
                 "env", "env_files", "help", "hostname", "interactive", "log_file",
                 "log_format", "log_level", "log_max_files", "log_max_size", "memory",
                 "memory_swap", "mounts", "name", "network", "overlay", "overlay_upper",
                 "pids_limit", "print_spec", "privileged", "publish", "read_only", "rootfs",
                 "security_opt", "signal_target", "status_fd", "status_file",
                 "stop_signal", "stop_timeout", "timeout", "tmpfs", "tty", "ulimits", "user",
                 "verbose", "version", "volumes", "workdir")

    def __init__(self) -> None:
        self.rootfs: str = ""
        self.command: list[str] = []
        self.hostname: str | None = None
        self.name: str | None = None
        self.env: list[str] = []
        self.env_files: list[str] = []
        self.workdir: str = "/"
        self.user: str | None = None
        self.volumes: list[str] = []
        self.tmpfs: list[str] = []
        self.mounts: list[str] = []
        self.read_only = False
        self.ulimits: list[str] = []
        self.cap_add: list[str] = []
        self.cap_drop: list[str] = []
        self.privileged = False
        self.security_opt: list[str] = []
        self.devices: list[str] = []
        self.memory: str | None = None
        self.memory_swap: str | None = None
        self.cpus: str | None = None
        self.cpu_shares: str | None = None
        self.pids_limit: str | None = None
        self.cpuset_cpus: str | None = None
        self.cpuset_mems: str | None = None
        self.timeout: float | None = None
        self.status_file: str | None = None
        self.status_fd: int | None = None
        self.bundle: str | None = None
        self.overlay = False
        self.overlay_upper: str | None = None
        self.network: str | None = None
        self.publish: list[str] = []
        self.cleanup = False
        self.print_spec = False
        self.chroot = False
        self.stop_timeout: float = DEFAULT_STOP_TIMEOUT
        self.log_format: str | None = None
        self.log_file: str | None = None
        self.log_max_size: int | None = None
        self.log_max_files: int | None = None
        self.capture_output = False
        self.tty = False
        self.interactive = False
        self.stop_signal: int | None = None
        self.signal_target = "group"
        self.log_level: str | None = None
        """None: ``default_log_level`` decides."""
        self.verbose = False
        self.help = False
        self.version = False


def parse(argv: list[str]) -> CommandLine:
    """Parse ``argv`` (without the program name). Raises UsageError."""
    line = CommandLine()
    index = 0
    if argv[:1] == ["spec"]:
        line.print_spec = True
        index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        index += 1
        if arg.startswith("--"):
            name, equals, inline = arg.partition("=")
            option = _option(name)
            if option.takes_value:
                value, index = (inline, index) if equals else _next_value(argv, index, name)
                _set(line, option, value)
            elif equals:
                raise UsageError(f"option {name} takes no value")
            else:
                setattr(line, option.dest, True)
            continue
        # Short options cluster as with getopt: -it is -i -t; -hNAME and -h NAME both work.
        for position in range(1, len(arg)):
            name = "-" + arg[position]
            option = _option(name)
            if not option.takes_value:
                setattr(line, option.dest, True)
                continue
            if position + 1 < len(arg):
                _set(line, option, arg[position + 1:])
            else:
                value, index = _next_value(argv, index, name)
                _set(line, option, value)
            break
    rest = argv[index:]
    if line.help or line.version:
        return line
    if line.cleanup:
        if rest or line.print_spec:
            raise UsageError("--cleanup takes no ROOTFS or COMMAND: it runs no container")
        return line
    if line.bundle is not None:
        described = [option.long for option in OPTIONS if option.dest in _CONTAINER_OPTIONS
                     and getattr(line, option.dest) != getattr(CommandLine(), option.dest)]
        if rest or described:
            raise UsageError(f"--bundle takes the container from DIR/config.json: drop "
                             f"{' '.join(described + rest[:1])} and edit the config instead")
    elif line.print_spec and not rest:
        rest = ["rootfs", "sh"]  # `runc spec`'s template
    elif not rest:
        raise UsageError(f"missing ROOTFS and COMMAND; usage: {usage()}")
    elif len(rest) < 2:
        raise UsageError(f"missing COMMAND after ROOTFS {rest[0]}; usage: {usage()}")
    if line.verbose:
        if line.log_level not in (None, "info"):
            raise UsageError(f"--verbose is --log-level info; drop one of it and --log-level "
                             f"{line.log_level}")
        line.log_level = "info"
    if line.log_max_size is not None and line.log_file is None:
        raise UsageError("--log-max-size needs --log-file")
    if line.log_max_files is not None and line.log_max_size is None:
        raise UsageError("--log-max-files needs --log-max-size")
    if rest:
        line.rootfs, line.command = rest[0], rest[1:]
        if line.rootfs.endswith(":O"):  # podman's spelling of --overlay
            line.rootfs, line.overlay = line.rootfs[:-2], True
    return line


def _option(name: str) -> Option:
    option = _BY_NAME.get(name)
    if option is None:
        raise UsageError(f"unknown option {name}; see {PROG} --help")
    return option


def _next_value(argv: list[str], index: int, name: str) -> tuple[str, int]:
    if index >= len(argv):
        raise UsageError(f"option {name} needs a value ({_BY_NAME[name].metavar})")
    return argv[index], index + 1


def _set(line: CommandLine, option: Option, value: str) -> None:
    if option.dest == "env":
        if "=" not in value or value.startswith("="):
            raise UsageError(f"--env needs KEY=VALUE, got {value!r}")
        line.env.append(value)
    elif option.dest in _REPEATABLE:
        getattr(line, option.dest).append(value)
    elif option.dest == "stop_timeout":
        try:
            line.stop_timeout = float(value)
        except ValueError:
            raise UsageError(f"--stop-timeout needs a number of seconds, got {value!r}") from None
        if not 0 <= line.stop_timeout < 1e9:
            raise UsageError(f"--stop-timeout must be zero or more seconds, got {value!r}")
    elif option.dest == "timeout":
        try:
            line.timeout = float(value)
        except ValueError:
            raise UsageError(f"--timeout needs a number of seconds, got {value!r}") from None
        if not 0 < line.timeout < 1e9:
            raise UsageError(f"--timeout must be more than zero seconds, got {value!r}")
    elif option.dest == "status_fd":
        if not (value.isascii() and value.isdigit()):
            raise UsageError(f"--status-fd needs a file descriptor number, got {value!r}")
        line.status_fd = int(value)
    elif option.dest == "stop_signal":
        number = parse_signal(value)
        if number is None or number in (signal.SIGKILL, signal.SIGSTOP):
            raise UsageError(f"--stop-signal needs a signal name or number such as TERM or 15 "
                             f"(not KILL or STOP), got {value!r}")
        line.stop_signal = number
    elif option.dest == "signal_target":
        if value not in ("group", "main"):
            raise UsageError(f"--signal-target must be group or main, got {value!r}")
        line.signal_target = value
    elif option.dest == "log_max_size":
        from .logfile import parse_size  # only for this option: not on the way to the exec

        line.log_max_size = parse_size(value)
    elif option.dest == "log_max_files":
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise UsageError(f"--log-max-files needs a whole number of 1 or more, got {value!r}")
        line.log_max_files = int(value)
    elif option.dest == "network":
        if value not in ("none", "host", "bridge"):
            raise UsageError(f"--network must be none, host or bridge, got {value!r}")
        line.network = value
    elif option.dest == "log_format" and value not in LOG_FORMATS:
        raise UsageError(f"--log-format must be text or json, got {value!r}")
    elif option.dest == "log_level" and value not in LOG_LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    else:
        setattr(line, option.dest, value)


def usage() -> str:
    return (f"{PROG} [OPTIONS] ROOTFS COMMAND [ARG...]  |  {PROG} [OPTIONS] --bundle DIR"
            f"  |  {PROG} spec [OPTIONS] [ROOTFS COMMAND [ARG...]]")


def help_text() -> str:
    lines = [
        f"usage: {usage()}",
        "",
        "Run COMMAND in a new container whose root filesystem is the directory ROOTFS,",
        "with its own PID, mount, UTS, IPC and network namespaces, or the OCI bundle DIR.",
        "`spec` prints the OCI config.json that the same options would run. Must run as root.",
        "",
        "options (they go before ROOTFS; everything after ROOTFS is the command):",
    ]
    for option in OPTIONS:
        names = ", ".join(n for n in (option.short, option.long) if n)
        if option.metavar:
            names += f" {option.metavar}"
        lines.append(f"  {names:<26} {option.help}")
    lines += [
        "",
        "exit status: the command's own; 128+N if signal N killed it; 124 if --timeout",
        "expired; 137 if the OOM killer killed a process of it; 125 if pyctr failed;",
        "126 if the command cannot be executed; 127 if it is not found in ROOTFS.",
    ]
    return "\n".join(lines)


def default_log_level(line: CommandLine, *, to_terminal: bool) -> str:
    """``--log-level``, or when not given: ``warning`` when the records go to a terminal (a
    person reading the command's own output there wants only what went wrong, as with
    docker), else ``info`` (log shippers see every lifecycle event). ``--capture-output``
    asks for the output as records, which are ``info``: then ``info`` on a terminal too."""
    if line.log_level is not None:
        return line.log_level
    return "warning" if to_terminal and not line.capture_output else "info"
