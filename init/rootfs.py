"""The container's root filesystem, as a plan of steps and one loop that applies them.

``plan_root`` turns the configuration into an ordered list of steps (as bubblewrap turns its
options into setup operations); ``apply_plan`` runs them against a ``Syscalls`` object. Tests
check the plan and the recorded calls without root; the real run uses ``LinuxSyscalls``.

The order matters and each step says why:

1. make ``/`` private, recursively, before mounting anything, or our mounts propagate to
   the host's mount namespace;
2. bind-mount the rootfs onto itself, because pivot_root needs the new root to be a mount
   point;
3. mount /proc (from inside the new PID namespace, so it shows the container's processes),
   /sys read-only, /tmp, and a minimal /dev, creating any missing mount point first;
4. pivot_root into it and detach the old root, so nothing of the host stays reachable
   (or, with ``chroot``, the original program's plain chroot).
"""

from __future__ import annotations

import os
import stat

from pyctr.linux.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_SLAVE,
    MS_STRICTATIME,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from pyctr.linux.syscalls import Syscalls

    Step: TypeAlias = "Mount | MakeDir | MakeDevice | Symlink | PivotRoot | Chroot"

# (name, major, minor): the character devices every container gets (as runc's defaults).
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


class Mount:
    __slots__ = ("data", "flags", "fstype", "source", "target")

    def __init__(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self.source, self.target, self.fstype, self.flags, self.data = (
            source, target, fstype, flags, data
        )

    def apply(self, sys: Syscalls) -> None:
        sys.mount(self.source, self.target, self.fstype, self.flags, self.data)

    def __repr__(self) -> str:
        return f"Mount({self.source!r}, {self.target!r}, {self.fstype!r}, {self.flags:#x})"


class MakeDir:
    """A mount point that must exist; created (0755) when missing."""

    __slots__ = ("mode", "path")

    def __init__(self, path: str, mode: int = 0o755) -> None:
        self.path, self.mode = path, mode

    def apply(self, sys: Syscalls) -> None:
        sys.mkdir(self.path, self.mode)

    def __repr__(self) -> str:
        return f"MakeDir({self.path!r})"


class MakeDevice:
    __slots__ = ("major", "minor", "path")

    def __init__(self, path: str, major: int, minor: int) -> None:
        self.path, self.major, self.minor = path, major, minor

    def apply(self, sys: Syscalls) -> None:
        sys.mknod(self.path, stat.S_IFCHR | 0o666, self.major, self.minor)

    def __repr__(self) -> str:
        return f"MakeDevice({self.path!r}, {self.major}, {self.minor})"


class Symlink:
    __slots__ = ("path", "target")

    def __init__(self, target: str, path: str) -> None:
        self.target, self.path = target, path

    def apply(self, sys: Syscalls) -> None:
        sys.symlink(self.target, self.path)

    def __repr__(self) -> str:
        return f"Symlink({self.target!r}, {self.path!r})"


class PivotRoot:
    """pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
    removes the old root without needing a directory for it (the way crun does it)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def apply(self, sys: Syscalls) -> None:
        sys.chdir(self.path)
        sys.pivot_root(".", ".")
        # Keep the detach below from propagating anywhere, whatever the host's propagation.
        sys.mount(None, ".", None, MS_SLAVE | MS_REC, None)
        sys.umount2(".", MNT_DETACH)
        sys.chdir("/")

    def __repr__(self) -> str:
        return f"PivotRoot({self.path!r})"


class Chroot:
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def apply(self, sys: Syscalls) -> None:
        sys.chdir(self.path)
        sys.chroot(".")
        sys.chdir("/")

    def __repr__(self) -> str:
        return f"Chroot({self.path!r})"


def plan_root(rootfs: str, *, chroot: bool = False) -> list[Step]:
    """The steps that turn the absolute path ``rootfs`` into the container's root."""
    if not os.path.isabs(rootfs):
        raise ValueError(f"rootfs must be an absolute path, not {rootfs!r}")
    root = rootfs.rstrip("/") or "/"
    dev = f"{root}/dev"
    nosuid_nodev = MS_NOSUID | MS_NODEV
    plan: list[Step] = [
        Mount(None, "/", None, MS_REC | MS_PRIVATE, None),
        Mount(root, root, None, MS_BIND | MS_REC, None),
        MakeDir(f"{root}/proc"),
        Mount("proc", f"{root}/proc", "proc", nosuid_nodev | MS_NOEXEC, None),
        MakeDir(f"{root}/sys"),
        Mount("sysfs", f"{root}/sys", "sysfs", nosuid_nodev | MS_NOEXEC | MS_RDONLY, None),
        MakeDir(f"{root}/tmp"),
        Mount("tmpfs", f"{root}/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
        MakeDir(dev),
        Mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
    ]
    plan += [MakeDevice(f"{dev}/{name}", major, minor) for name, major, minor in DEVICES]
    plan += [
        MakeDir(f"{dev}/pts"),
        Mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        MakeDir(f"{dev}/shm"),
        Mount("shm", f"{dev}/shm", "tmpfs", nosuid_nodev | MS_NOEXEC, "mode=1777,size=65536k"),
    ]
    plan += [Symlink(target, f"{dev}/{name}") for name, target in DEV_LINKS]
    plan.append(Chroot(root) if chroot else PivotRoot(root))
    return plan


def apply_plan(plan: list[Step], sys: Syscalls,
               on_mount: Callable[[str, str], None] | None = None) -> list[str]:
    """Run every step in order; return the mount points made, as seen inside the container.
    ``on_mount(mount point, fstype)`` is called after each filesystem is mounted."""
    root = next((step.path for step in plan if isinstance(step, PivotRoot | Chroot)), "")
    mounted: list[str] = []
    for step in plan:
        step.apply(sys)
        if isinstance(step, Mount) and step.fstype is not None:
            mounted.append(step.target[len(root):] or "/")
            if on_mount is not None:
                on_mount(mounted[-1], step.fstype)
    return mounted
