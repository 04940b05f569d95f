"""What ``docker run`` means, as a spec: pyctr's defaults, which are docker's (its mounts,
plus the original program's ``/tmp``; a new namespace of every kind but user and time;
PATH; the stop timeout), and ``build_spec``, the one translation of docker's options (``-u``,
``--read-only``, and through ``spec.flags`` ``-v``, ``--tmpfs``, ``--mount``, ``--ulimit``)
into a spec. The CLI and the library's ``ContainerConfig`` both describe a container this way.
Every error is a SpecError with the one line to show, naming the flag and the bad value."""

from __future__ import annotations

import os

from .model import Linux, Mount, Namespace, Process, Rlimit, Spec, SpecError, User
from .security import SecurityOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .limits import ResourceOptions

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_TIMEOUT = 10.0
"""Seconds between the stop signal and SIGKILL."""
OCI_VERSION = "1.0.2"
NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")



_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]


def default_mounts() -> list[Mount]:
    """docker's list, in docker's order, and /tmp as a tmpfs (the original program had one)."""
    return [
        Mount("/proc", "proc", "proc", list(_NOSUID_NOEXEC_NODEV)),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount("/sys", "sysfs", "sysfs", [*_NOSUID_NOEXEC_NODEV, "ro"]),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup", [*_NOSUID_NOEXEC_NODEV, "relatime", "ro"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", list(_NOSUID_NOEXEC_NODEV)),
        Mount("/dev/shm", "tmpfs", "shm", [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"]),
        Mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
    ]


def default_linux() -> Linux:
    return Linux([Namespace(kind) for kind in NAMESPACES])


class DockerOptions:
    """A container as docker's options describe it (``ContainerConfig``'s keywords, the CLI's
    flags), kept as given until ``build`` turns it into a spec."""

    __slots__ = ("command", "env", "hostname", "limits", "mounts", "read_only", "security",
                 "tmpfs", "tty", "ulimits", "user", "volumes", "workdir")

    def __init__(self, command: list[str], *, hostname: str | None = None,
                 env: dict[str, str] | None = None, workdir: str = "/",
                 user: str | None = None, read_only: bool = False,
                 volumes: list[str] | tuple[str, ...] = (),
                 tmpfs: list[str] | tuple[str, ...] = (),
                 mounts: list[str] | tuple[str, ...] = (),
                 ulimits: list[str] | tuple[str, ...] = (), tty: bool = False,
                 security: SecurityOptions | None = None,
                 limits: ResourceOptions | None = None) -> None:
        self.command, self.hostname, self.env = list(command), hostname, dict(env or {})
        self.security = security or SecurityOptions()
        self.limits = limits
        self.workdir, self.user, self.read_only = workdir, user, read_only
        self.volumes, self.tmpfs = list(volumes), list(tmpfs)
        self.mounts, self.ulimits, self.tty = list(mounts), list(ulimits), tty

    def build(self, rootfs: str, *, term: str = "xterm", make_volumes: bool = True) -> Spec:
        return build_spec(rootfs, self.command, hostname=self.hostname, env=self.env,
                          workdir=self.workdir, user=self.user, read_only=self.read_only,
                          volumes=self.volumes, tmpfs=self.tmpfs, mounts=self.mounts,
                          ulimits=self.ulimits, tty=self.tty, term=term,
                          make_volumes=make_volumes, security=self.security,
                          limits=self.limits)


def build_spec(rootfs: str, command: list[str], *, hostname: str | None,
               env: dict[str, str] | None = None, workdir: str = "/", user: str | None = None,
               read_only: bool = False, volumes: list[str] | tuple[str, ...] = (),
               tmpfs: list[str] | tuple[str, ...] = (),
               mounts: list[str] | tuple[str, ...] = (),
               ulimits: list[str] | tuple[str, ...] = (), tty: bool = False,
               term: str = "xterm", make_volumes: bool = True,
               security: SecurityOptions | None = None,
               limits: ResourceOptions | None = None) -> Spec:
    """The spec of a container described with docker's options. ``user`` is looked up in the
    rootfs (which must exist then); ``make_volumes`` creates missing named volumes;
    ``security``: capabilities, no_new_privs, seccomp and devices (default: docker's);
    ``limits``: memory, CPU and pids limits (default: none)."""
    if not os.path.isabs(workdir):
        raise SpecError(f"working directory {workdir!r} must be an absolute path")
    account_user, home = User(), "/root"
    if user is not None:
        from .users import resolve_account

        account = resolve_account(rootfs, user)
        account_user, home = account.user, account.home
    environment = {"PATH": DEFAULT_PATH}
    if hostname is not None:
        environment["HOSTNAME"] = hostname
    environment["HOME"] = home
    if tty:
        environment["TERM"] = term
    environment.update(env or {})
    extra: list[Mount] = []
    rlimits: list[Rlimit] = []
    if volumes or tmpfs or mounts or ulimits:
        from .flags import parse_mount, parse_tmpfs, parse_ulimit, parse_volume

        extra = [parse_volume(text, make=make_volumes) for text in volumes]
        extra += [parse_tmpfs(text) for text in tmpfs]
        extra += [parse_mount(text, make=make_volumes) for text in mounts]
        rlimits = [parse_ulimit(text) for text in ulimits]
    process = Process(list(command), [f"{key}={value}" for key, value in environment.items()],
                      workdir, terminal=tty, user=account_user, rlimits=rlimits)
    spec = Spec(process, rootfs, root_readonly=read_only, hostname=hostname,
                mounts=_with_overrides(default_mounts(), extra), linux=default_linux(),
                oci_version=OCI_VERSION)
    from pyctr.linux.syscalls import held_capabilities

    (security or SecurityOptions()).apply(spec, held=held_capabilities())
    if limits is not None:
        limits.apply(spec)
    spec.check()
    return spec


def _with_overrides(defaults: list[Mount], extra: list[Mount]) -> list[Mount]:
    """A user mount on a default's destination replaces it (``--tmpfs /tmp`` with a size);
    two user mounts on one destination are a mistake."""
    seen: set[str] = set()
    for mount in extra:
        destination = os.path.normpath(mount.destination)
        if destination in seen:
            raise SpecError(f"two mounts on {destination}; keep one")
        seen.add(destination)
        mount.destination = destination
    return [mount for mount in defaults if mount.destination not in seen] + extra
