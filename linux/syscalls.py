"""The kernel calls init makes, in one place.

Everything init does to the kernel goes through an object with these methods, so the order of
mounts and namespace flags can be unit-tested with a recording double (tests/fakes.py), the way
youki's ``Syscall`` trait is. Python 3.11 has no ``os.unshare``/``os.setns`` and no binding for
mount(2), umount2(2), pivot_root(2) or prctl(2), so those go through ``libc``; every call checks
its result and turns a failure into ``SyscallError`` naming the operation and the path.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import struct

from . import libc
from .cmodules import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Syscalls(Protocol):
        """What the mount plan and init need from the kernel."""

        def unshare(self, flags: int) -> None: ...
        def mount(
            self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
        ) -> None: ...
        def umount2(self, target: str, flags: int) -> None: ...
        def pivot_root(self, new_root: str, put_old: str) -> None: ...
        def chroot(self, path: str) -> None: ...
        def chdir(self, path: str) -> None: ...
        def mkdir(self, path: str, mode: int) -> None: ...
        def mknod(self, path: str, mode: int, major: int, minor: int) -> None: ...
        def symlink(self, target: str, path: str) -> None: ...
        def sethostname(self, name: str) -> None: ...
        def link_up(self, interface: str) -> None: ...


# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000

# Mount flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# pivot_root's system call number by architecture: the C library does not wrap it.
_MACHINE = os.uname().machine
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


class SyscallError(OSError):
    """A kernel call failed. ``str()`` reads like crun's errors: ``mount `/r/proc`: EPERM``."""

    def __init__(self, err: int, operation: str, path: str = "") -> None:
        super().__init__(err, os.strerror(err))
        self.operation = operation
        self.path = path

    def __str__(self) -> str:
        where = f" `{self.path}`" if self.path else ""
        return f"{self.operation}{where}: {self.strerror}"


def _check(result: int, operation: str, path: str = "") -> None:
    if result < 0:
        raise SyscallError(libc.errno(), operation, path)


def _os_call(operation: str, path: str, call: object, *args: object) -> None:
    try:
        call(*args)  # type: ignore[operator]
    except OSError as exc:
        raise SyscallError(exc.errno or errno_codes.EIO, operation, path) from None


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def unshare(flags: int) -> None:
    _check(libc.unshare(flags), "unshare", f"flags=0x{flags:x}")


def setns(fd: int, nstype: int) -> None:
    _check(libc.setns(fd, nstype), "setns", f"fd={fd}")


def set_parent_death_signal(signum: int) -> None:
    _check(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_process_name(name: str) -> None:
    """Name shown by ps/top (comm), so the init is recognisable on the host."""
    libc.prctl_string(PR_SET_NAME, os.fsencode(name)[:15], 0, 0, 0)


class LinuxSyscalls:
    """The real kernel."""

    def unshare(self, flags: int) -> None:
        unshare(flags)

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        result = libc.mount(_b(source), os.fsencode(target), _b(fstype), flags, _b(data))
        _check(result, f"mount {fstype or source or 'none'} on", target)

    def umount2(self, target: str, flags: int) -> None:
        _check(libc.umount2(os.fsencode(target), flags), "umount", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        number = _SYS_PIVOT_ROOT.get(_MACHINE)
        if number is None:
            raise SyscallError(errno_codes.ENOSYS, "pivot_root", new_root)
        _check(libc.syscall(number, _b(new_root), _b(put_old)), "pivot_root", new_root)

    def chroot(self, path: str) -> None:
        _os_call("chroot", path, os.chroot, path)

    def chdir(self, path: str) -> None:
        _os_call("chdir", path, os.chdir, path)

    def mkdir(self, path: str, mode: int) -> None:
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not os.path.isdir(path):
                raise SyscallError(errno_codes.ENOTDIR, "create mount point", path) from None
        except OSError as exc:
            raise SyscallError(exc.errno or errno_codes.EIO, "create mount point", path) from None

    def mknod(self, path: str, mode: int, major: int, minor: int) -> None:
        _os_call("mknod", path, os.mknod, path, mode, os.makedev(major, minor))
        # mknod's mode is filtered through the umask; devices must end up exactly as asked.
        _os_call("chmod", path, os.chmod, path, mode & 0o7777)

    def symlink(self, target: str, path: str) -> None:
        _os_call("symlink", path, os.symlink, target, path)

    def sethostname(self, name: str) -> None:
        raw = os.fsencode(name)
        _check(libc.sethostname(raw, len(raw)), "sethostname", name)

    def link_up(self, interface: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            request = struct.pack("16sH14x", interface.encode(), 0)
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
                (flags,) = struct.unpack_from("H", reply, 16)
                request = struct.pack("16sH14x", interface.encode(), flags | _IFF_UP)
                fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, request)
            except OSError as exc:
                raise SyscallError(exc.errno or errno_codes.EIO, "bring up", interface) from None
        finally:
            sock.close()
