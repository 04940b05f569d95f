"""What a caller asks for: ``ContainerConfig``, validated against the machine by ``check``.

Plain classes, not dataclasses: the CLI builds one before it forks the init, and everything
imported before that fork delays the workload's start.
"""

from __future__ import annotations

import os

from pyctr.linux.cmodules import signal
from pyctr.protocol import Config

from .errors import PyctrError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAMESPACE_FILES = ("pid", "mnt", "uts", "ipc", "net")


class ContainerConfig:
    """One container to run.

    ``rootfs`` is a directory holding the root filesystem, ``command`` the program and its
    arguments (looked up in the container's PATH). ``hostname`` defaults to the container id
    (``name``, itself random by default), as docker does. ``env`` adds to or overrides the
    default environment (PATH, HOSTNAME, HOME, and TERM with a tty). When the container must
    stop, SIGKILL follows the first stop signal after ``stop_timeout`` seconds. With
    ``capture_output`` the command's stdout and stderr become log records
    (``workload.output``, one per line) instead of passing through.

    ``stop_signal`` is what a stop sends first: on cancellation (default SIGTERM), and in
    place of a forwarded SIGINT/SIGTERM when set (otherwise those are forwarded as they are).
    ``signal_group``: signals go to the workload's whole process group (default) or, when
    False, to its main process only. ``tty``: the command gets a pseudo-terminal, relayed to
    this process's stdin/stdout; ``interactive``: keep stdin attached (without it, a terminal
    on stdin is replaced by /dev/null, as with docker).
    """

    __slots__ = ("capture_output", "chroot", "command", "env", "hostname", "interactive", "name",
                 "rootfs", "signal_group", "stop_signal", "stop_timeout", "tty", "workdir")

    def __init__(
        self,
        rootfs: str | os.PathLike[str],
        command: list[str],
        *,
        hostname: str | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
        workdir: str = "/",
        chroot: bool = False,
        stop_signal: int | None = None,
        stop_timeout: float = 10.0,
        capture_output: bool = False,
        signal_group: bool = True,
        tty: bool = False,
        interactive: bool = True,
    ) -> None:
        self.rootfs = os.fspath(rootfs)
        self.command = list(command)
        self.name = name or os.urandom(6).hex()
        self.hostname = hostname or self.name[:63]
        self.env = dict(env or {})
        self.workdir = workdir
        self.chroot = chroot
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.capture_output = capture_output
        self.signal_group = signal_group
        self.tty = tty
        self.interactive = interactive

    def __repr__(self) -> str:
        return f"ContainerConfig({self.rootfs!r}, {self.command!r}, name={self.name!r})"

    def check(self) -> str:
        """Check everything that can be checked from the host; return the rootfs's absolute,
        symlink-free path. Raises PyctrError with a one-line explanation."""
        if not self.command or not self.command[0]:
            raise PyctrError("no command given; say what to run after the rootfs",
                             error="usage.invalid")
        if os.geteuid() != 0:
            raise PyctrError(
                "pyctr must run as root: it creates namespaces and mounts; "
                "run it again with sudo", error="host.not_root")
        rootfs = os.path.realpath(self.rootfs)
        if not os.path.exists(rootfs):
            raise PyctrError(
                f"rootfs {self.rootfs} does not exist; build one with `make rootfs` or "
                f"`rootfs-scripts/build-rootfs {self.rootfs}`", error="rootfs.missing")
        if not os.path.isdir(rootfs):
            raise PyctrError(
                f"rootfs {self.rootfs} is not a directory; give the directory that holds the "
                f"container's root filesystem", error="rootfs.not_directory")
        if rootfs == "/":
            raise PyctrError("rootfs / is the host's own root; give a separate directory",
                             error="rootfs.is_host_root")
        if not 0 < len(self.hostname.encode()) <= 64:
            raise PyctrError(f"hostname {self.hostname!r} must be 1 to 64 bytes long",
                             error="usage.invalid")
        if self.tty and self.capture_output:
            raise PyctrError("--tty and --capture-output cannot be combined: a terminal's output "
                             "is one stream; drop one of them", error="usage.invalid")
        if not os.path.isabs(self.workdir):
            raise PyctrError(f"working directory {self.workdir!r} must be an absolute path",
                             error="usage.invalid")
        for namespace in NAMESPACE_FILES:
            if not os.path.exists(f"/proc/self/ns/{namespace}"):
                raise PyctrError(
                    f"the kernel lacks the {namespace} namespace (/proc/self/ns/{namespace} "
                    f"is missing); use a kernel built with it", error="host.no_namespace")
        return rootfs

    def environment(self) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname, "HOME": "/root"}
        if self.tty:
            env["TERM"] = os.environ.get("TERM", "xterm")
        env.update(self.env)
        return env

    @property
    def first_stop_signal(self) -> int:
        return signal.SIGTERM if self.stop_signal is None else self.stop_signal

    def to_message(self, rootfs: str, rows: int = 0, columns: int = 0,
                   log_level: str = "debug") -> Config:
        return Config(
            container=self.name,
            rootfs=rootfs,
            argv=self.command,
            env=self.environment(),
            cwd=self.workdir,
            hostname=self.hostname,
            chroot=self.chroot,
            signal_group=self.signal_group,
            tty=self.tty,
            rows=rows,
            columns=columns,
            log_level=log_level,
        )
