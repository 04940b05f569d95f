"""``pyctr``: an OCI runtime with runc's command line, for podman, containerd and CRI-O.

    pyctr [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup]
          COMMAND [OPTIONS] ID ...

The commands are runc's (``create``, ``start``, ``run``, ``state``, ``kill``, ``delete``,
``list``, ``exec``, ``pause``, ``resume``, ``ps``, ``spec``, ``features``), with its flags
and its habits: a failure is one line on stderr and in the ``--log`` file (runc's JSON lines
with ``--log-format json``: ``level``, ``msg``, ``time``), and the exit status is 1.
Flags may also be written with one dash (``-pid-file``), as runc's parser takes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pyctr.supervisor.errors import PyctrError

from .state import DEFAULT_ROOT, ContainerState, RuntimeError_, container_ids

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

PROG = "pyctr"
VERSION = "0.1.0"
OCI_VERSION = "1.0.2"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise RuntimeError_(f"{self.prog}: {message}", error="usage.invalid")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="An OCI runtime with runc's command line.",
                     allow_abbrev=False)
    parser.add_argument("--root", default=DEFAULT_ROOT,
                        help=f"where containers' state is kept (default {DEFAULT_ROOT})")
    parser.add_argument("--log", help="append errors (and with --debug, more) to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="accepted: pyctr writes the cgroup files itself, and reads a "
                             "SLICE:PREFIX:NAME cgroupsPath the way systemd nests slices")
    parser.add_argument("--rootless", default="auto", help="accepted; pyctr runs as root")
    parser.add_argument("--criu", help="accepted; checkpoint/restore is not supported")
    parser.add_argument("--version", "-v", action="store_true")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, allow_abbrev=False)

    def creating(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--bundle", "-b", default=".")
        sub.add_argument("--pid-file")
        sub.add_argument("--console-socket")
        sub.add_argument("--no-pivot", action="store_true")
        sub.add_argument("--no-new-keyring", action="store_true")
        sub.add_argument("--preserve-fds", type=int, default=0)
        sub.add_argument("id")

    creating(command("create", "set a container up; its process waits for start"))
    sub = command("run", "create and start a container, and wait for its end")
    creating(sub)
    sub.add_argument("--detach", "-d", action="store_true")
    sub.add_argument("--keep", action="store_true")
    command("start", "start the process of a created container").add_argument("id")
    command("state", "print a container's state (JSON)").add_argument("id")
    sub = command("kill", "send a signal to a container's process (default TERM)")
    sub.add_argument("--all", "-a", action="store_true")
    sub.add_argument("id")
    sub.add_argument("signal", nargs="?", default="TERM")
    sub = command("delete", "remove a stopped container (--force: kill it first)")
    sub.add_argument("--force", "-f", action="store_true")
    sub.add_argument("id")
    sub = command("list", "list the containers")
    sub.add_argument("--format", "-f", choices=("table", "json"), default="table")
    sub.add_argument("--quiet", "-q", action="store_true")
    sub = command("exec", "run another process in a running container")
    sub.add_argument("--process", "-p")
    sub.add_argument("--tty", "-t", action="store_true")
    sub.add_argument("--detach", "-d", action="store_true")
    sub.add_argument("--pid-file")
    sub.add_argument("--console-socket")
    sub.add_argument("--cwd")
    sub.add_argument("--env", "-e", action="append", default=[])
    sub.add_argument("--user", "-u")
    sub.add_argument("--additional-gids", "-g", action="append", default=[])
    sub.add_argument("--cap", "-c", action="append", default=[])
    sub.add_argument("--no-new-privs", action="store_true")
    sub.add_argument("--preserve-fds", type=int, default=0)
    sub.add_argument("--process-label")
    sub.add_argument("--apparmor")
    sub.add_argument("--cgroup", action="append", default=[])
    sub.add_argument("id")
    sub.add_argument("args", nargs=argparse.REMAINDER)
    command("pause", "freeze a container's processes").add_argument("id")
    command("resume", "thaw a paused container").add_argument("id")
    sub = command("ps", "list a container's processes")
    sub.add_argument("--format", "-f", choices=("table", "json"), default="table")
    sub.add_argument("id")
    sub.add_argument("ps_args", nargs=argparse.REMAINDER)
    sub = command("spec", "write a default config.json")
    sub.add_argument("--bundle", "-b", default=".")
    sub.add_argument("--rootless", action="store_true")
    command("features", "print what this runtime supports (JSON)")
    return parser


def _long_flags(argv: list[str]) -> list[str]:
    """runc's parser takes ``-pid-file`` as ``--pid-file``; argparse does not."""
    fixed = []
    for arg in argv:
        if arg == "--":
            fixed.append(arg)
            break
        if len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[1:2].isalpha() \
                and len(arg.split("=", 1)[0]) > 2:
            arg = "-" + arg
        fixed.append(arg)
    return fixed + argv[len(fixed):]


class _Log:
    """``--log`` in ``--log-format``, and stderr for errors."""

    def __init__(self, path: str | None, json_format: bool, debug: bool) -> None:
        self.path, self.json_format, self.debug_on = path, json_format, debug
        self.fd = -1

    def hold(self) -> None:
        """Open the file now, for writes after this process has left the host's mount
        namespace (``exec``)."""
        if self.path is not None and self.fd == -1:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                                  os.O_CLOEXEC, 0o600)
            except OSError:
                pass

    def write(self, level: str, message: str) -> None:
        if self.path is None:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now % 1 * 1e9):09d}Z"
        if self.json_format:
            line = json.dumps({"level": level, "msg": message, "time": stamp})
        else:
            line = f"time={json.dumps(stamp)} level={level} msg={json.dumps(message)}"
        try:
            if self.fd != -1:
                os.write(self.fd, (line + "\n").encode())
            else:
                with open(self.path, "a") as file:
                    file.write(line + "\n")
        except OSError:
            pass  # the caller's log is gone: stderr still has the error

    def debug(self, message: str) -> None:
        if self.debug_on:
            self.write("debug", message)

    def error(self, message: str) -> None:
        self.write("error", message)
        print(f"{PROG}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> NoReturn:
    arguments = sys.argv[1:] if argv is None else argv
    log = _Log(None, False, False)
    try:
        options = _parser().parse_args(_long_flags(arguments))
        log = _Log(options.log, options.log_format == "json", options.debug)
        log.debug(f"{PROG} {' '.join(arguments)}")
        code = _dispatch(options, log)
    except PyctrError as exc:
        log.error(exc.message)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    os._exit(code)


def _dispatch(options: argparse.Namespace, log: _Log) -> int:
    if options.version:
        print(f"{PROG} version {VERSION}\nspec: {OCI_VERSION}")
        return 0
    if options.command is None:
        raise RuntimeError_("no command given; see pyctr --help", error="usage.invalid")
    if options.command in ("spec", "features"):
        print(_spec(options.bundle) if options.command == "spec" else _features())
        return 0
    if os.geteuid() != 0:
        raise RuntimeError_("pyctr must run as root (rootless containers are not supported)",
                            error="host.not_root")
    from . import runtime

    root = options.root
    command = options.command
    if command in ("create", "run", "exec") and not 0 <= options.preserve_fds < 1 << 16:
        raise RuntimeError_(f"--preserve-fds must be a count of descriptors, got "
                            f"{options.preserve_fds}", error="usage.invalid")
    if command == "create":
        runtime.create(root, options.id, options.bundle, pid_file=options.pid_file,
                       console_socket=options.console_socket, no_pivot=options.no_pivot,
                       preserve_fds=options.preserve_fds,
                       debug=log.debug if options.debug else None)
    elif command == "run":
        return runtime.run(root, options.id, options.bundle, pid_file=options.pid_file,
                           console_socket=options.console_socket, no_pivot=options.no_pivot,
                           detach=options.detach, preserve_fds=options.preserve_fds,
                           debug=log.debug if options.debug else None)
    elif command == "start":
        runtime.start(root, options.id)
    elif command == "state":
        print(json.dumps(ContainerState(root, options.id).load().oci_state(), indent=2))
    elif command == "kill":
        runtime.kill(root, options.id, _signal_number(options.signal),
                     all_processes=options.all)
    elif command == "delete":
        runtime.delete(root, options.id, force=options.force)
    elif command == "list":
        _list(root, options.format, options.quiet)
    elif command in ("pause", "resume"):
        runtime.pause(root, options.id, frozen=command == "pause")
    elif command == "ps":
        _ps(runtime.processes(root, options.id), options.format, options.ps_args)
    elif command == "exec":
        from .execute import execute

        return execute(root, options, before_joining=log.hold)
    return 0


def _signal_number(text: str) -> int:
    import signal

    if text.isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        value = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if value is not None:
            return int(value)
    raise RuntimeError_(f"unknown signal {text!r}: give a name (TERM, SIGKILL) or a number",
                        error="usage.invalid")


def _list(root: str, output: str, quiet: bool) -> None:
    states = []
    for container_id in container_ids(root):
        try:
            states.append(ContainerState(root, container_id).load().oci_state())
        except PyctrError:
            continue  # deleted meanwhile
    if quiet:
        print("\n".join(str(state["id"]) for state in states))
    elif output == "json":
        print(json.dumps(states))
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} {'CREATED':<31} OWNER")
        for state in states:
            print(f"{state['id']!s:<20} {state['pid']!s:<8} {state['status']!s:<10} "
                  f"{state['bundle']!s:<40} {state['created']!s:<31} root")


def _ps(pids: list[int], output: str, ps_args: list[str]) -> None:
    if output == "json":
        print(json.dumps(pids))
        return
    import subprocess

    listing = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                             check=False)
    lines = listing.stdout.splitlines()
    if not lines:
        raise RuntimeError_(f"ps failed: {listing.stderr.strip()}")
    header = lines[0].split()
    column = header.index("PID") if "PID" in header else 1
    print(lines[0])
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
            print(line)


def _spec(bundle: str) -> str:
    """Write ``bundle/config.json`` as ``runc spec`` does (pyctr's defaults are docker's);
    say where."""
    from pyctr.supervisor.config import ContainerConfig

    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise RuntimeError_(f"File {path} exists. Remove it first", error="usage.invalid")
    config = ContainerConfig("rootfs", ["sh"], name="pyctr", tty=True)
    spec = config.build_spec(make_volumes=False)
    with open(path, "w") as file:
        json.dump(spec.to_value(), file, indent=2)
        file.write("\n")
    return f"wrote {path}"


def _features() -> str:
    from pyctr.init.main import NAMESPACES
    from pyctr.init.rootfs import FLAG_OPTIONS, PROPAGATION_OPTIONS
    from pyctr.spec.seccomp import ACTIONS
    from pyctr.spec.security import ALL_CAPABILITIES

    document = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": sorted([*FLAG_OPTIONS, *PROPAGATION_OPTIONS]),
        "linux": {
            "namespaces": sorted(["pid", *(name for name, _ in NAMESPACES)]),
            "capabilities": sorted(ALL_CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": sorted(ACTIONS),
                        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                                      "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ",
                                      "SCMP_CMP_NE"]},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false"},
    }
    return json.dumps(document, indent=2)
