"""The command line: ``pyctr-supervise [OPTIONS] ROOTFS COMMAND [ARG...]``.

A small table-driven parser rather than argparse, for two reasons: options stop at the first
positional argument (everything after ROOTFS belongs to the command, dashes included, as with
``docker run``), and argparse with its dependencies costs ~10 ms to import, which would sit
between the user pressing Enter and the workload starting.
"""

from __future__ import annotations

from .errors import UsageError
from .logfile import parse_size

PROG = "pyctr-supervise"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    Option("-w", "--workdir", "workdir", "DIR",
           "working directory of the command inside the container (default: /)"),
    Option(None, "--chroot", "chroot", None,
           "change root with chroot(2) instead of pivot_root(2) (weaker isolation)"),
    Option(None, "--stop-timeout", "stop_timeout", "SECONDS",
           "after SIGINT/SIGTERM, wait this long before SIGKILL (default: 10)"),
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
           "debug, info, warning or error (default: info)"),
    Option(None, "--help", "help", None, "show this help and exit"),
    Option(None, "--version", "version", None, "show the version and exit"),
)
_BY_NAME = {name: option for option in OPTIONS for name in (option.short, option.long) if name}


class CommandLine:
    """What the user asked for, before validation against the machine."""

    __slots__ = ("capture_output", "chroot", "command", "env", "help", "hostname", "log_file",
                 "log_format", "log_level", "log_max_files", "log_max_size", "name", "rootfs",
                 "stop_timeout", "version", "workdir")

    def __init__(self) -> None:
        self.rootfs: str = ""
        self.command: list[str] = []
        self.hostname: str | None = None
        self.name: str | None = None
        self.env: list[str] = []
        self.workdir: str = "/"
        self.chroot = False
        self.stop_timeout: float = 10.0
        self.log_format: str | None = None
        self.log_file: str | None = None
        self.log_max_size: int | None = None
        self.log_max_files: int | None = None
        self.capture_output = False
        self.log_level = "info"
        self.help = False
        self.version = False


def parse(argv: list[str]) -> CommandLine:
    """Parse ``argv`` (without the program name). Raises UsageError."""
    line = CommandLine()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, has_inline, inline = arg.partition("=") if arg.startswith("--") else (
            arg[:2], len(arg) > 2, arg[2:])
        option = _BY_NAME.get(name)
        if option is None:
            raise UsageError(f"unknown option {name}; see {PROG} --help")
        if option.takes_value:
            if has_inline:
                value = inline
            elif index + 1 < len(argv):
                index += 1
                value = argv[index]
            else:
                raise UsageError(f"option {name} needs a value ({option.metavar})")
            _set(line, option, value)
        elif has_inline:
            raise UsageError(f"option {name} takes no value")
        else:
            setattr(line, option.dest, True)
        index += 1
    if line.help or line.version:
        return line
    rest = argv[index:]
    if not rest:
        raise UsageError(f"missing ROOTFS and COMMAND; usage: {usage()}")
    if len(rest) < 2:
        raise UsageError(f"missing COMMAND after ROOTFS {rest[0]}; usage: {usage()}")
    if line.log_max_size is not None and line.log_file is None:
        raise UsageError("--log-max-size needs --log-file")
    if line.log_max_files is not None and line.log_max_size is None:
        raise UsageError("--log-max-files needs --log-max-size")
    line.rootfs, line.command = rest[0], rest[1:]
    return line


def _set(line: CommandLine, option: Option, value: str) -> None:
    if option.dest == "env":
        if "=" not in value or value.startswith("="):
            raise UsageError(f"--env needs KEY=VALUE, got {value!r}")
        line.env.append(value)
    elif option.dest == "stop_timeout":
        try:
            line.stop_timeout = float(value)
        except ValueError:
            raise UsageError(f"--stop-timeout needs a number of seconds, got {value!r}") from None
        if not 0 <= line.stop_timeout < 1e9:
            raise UsageError(f"--stop-timeout must be zero or more seconds, got {value!r}")
    elif option.dest == "log_max_size":
        line.log_max_size = parse_size(value)
    elif option.dest == "log_max_files":
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"--log-max-files needs a whole number of 1 or more, got {value!r}")
        line.log_max_files = int(value)
    elif option.dest == "log_format" and value not in LOG_FORMATS:
        raise UsageError(f"--log-format must be text or json, got {value!r}")
    elif option.dest == "log_level" and value not in LOG_LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    else:
        setattr(line, option.dest, value)


def usage() -> str:
    return f"{PROG} [OPTIONS] ROOTFS COMMAND [ARG...]"


def help_text() -> str:
    lines = [
        f"usage: {usage()}",
        "",
        "Run COMMAND in a new container whose root filesystem is the directory ROOTFS,",
        "with its own PID, mount, UTS, IPC and network namespaces. Must run as root.",
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
        "exit status: the command's own; 128+N if signal N killed it; 125 if pyctr failed;",
        "126 if the command cannot be executed; 127 if it is not found in ROOTFS.",
    ]
    return "\n".join(lines)
