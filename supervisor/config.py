"""What a caller asks for: ``ContainerConfig``, validated against the machine by ``check``.

Plain classes, not dataclasses: the CLI builds one before it forks the init, and everything
imported before that fork delays the workload's start.
"""

from __future__ import annotations

import os
import signal

from pyctr.protocol import Config

from .errors import PyctrError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAMESPACE_FILES = ("pid", "mnt", "uts", "ipc", "net")


class ContainerConfig:
    """One container to run.

    ``rootfs`` is a directory holding the root filesystem, ``command`` the program and its
    arguments (looked up in the container's PATH). ``hostname`` defaults to the container id
    (``name``, itself random by default), as docker does. ``env`` adds to or overrides the
    default environment (PATH, HOSTNAME, HOME). ``stop_signal`` is sent when the container must
    stop (cancellation, or the CLI's SIGINT/SIGTERM), SIGKILL follows ``stop_timeout`` seconds
    later. With ``capture_output`` the command's stdout and stderr become log records
    (``workload.output``, one per line) instead of passing through.
    """

    __slots__ = ("capture_output", "chroot", "command", "env", "hostname", "name", "rootfs",
                 "stop_signal", "stop_timeout", "workdir")

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
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
        capture_output: bool = False,
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
        env.update(self.env)
        return env

    def to_message(self, rootfs: str) -> Config:
        return Config(
            container=self.name,
            rootfs=rootfs,
            argv=self.command,
            env=self.environment(),
            cwd=self.workdir,
            hostname=self.hostname,
            chroot=self.chroot,
        )
