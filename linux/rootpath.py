"""Paths inside a container's root filesystem, resolved without leaving it.

The rootfs is hostile input: ``/tmp`` in it may be a symlink to ``../../etc`` or ``/etc``, and
following it from the host would mount (or mkdir) on the host's ``/etc`` (runc's
CVE-2021-30465). openat2(2) with RESOLVE_IN_ROOT makes the kernel resolve every symlink and
``..`` as if the rootfs were ``/``, in one atomic walk that a concurrent rename cannot trick, so
nothing here ever touches a path string joined onto the host rootfs. Mounting on
``/proc/self/fd/N`` of the result then lands on exactly the inode that was checked.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat
import struct

from . import libc
from .syscalls import SyscallError

# linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# openat2's system call number by architecture: glibc before 2.40 does not wrap it. Every
# architecture on the unified syscall table got 437 (Linux 5.6).
_MACHINE = os.uname().machine
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}

# The kernel answers EAGAIN when a rename or mount raced the walk and it cannot prove the result
# is still inside the root; a retry almost always succeeds. The same bound caps create loops.
_RETRIES = 8
_PATH = os.O_PATH | os.O_CLOEXEC
_IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
# Magic links (/proc/self/root, /proc/N/cwd) jump anywhere, even under RESOLVE_BENEATH.
_NO_FOLLOW = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


def open_root(path: str) -> int:
    """O_PATH|O_DIRECTORY|O_CLOEXEC descriptor of the rootfs directory (a host path, trusted)."""
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SyscallError(exc.errno or errno_codes.EIO, "open rootfs", path) from None


def fd_path(fd: int) -> str:
    """What to give mount(2) as the target so that it mounts on exactly the resolved inode."""
    return f"/proc/self/fd/{fd}"


def resolve_in_root(root_fd: int, path: str, *, create: str | None = None, mode: int = 0o755,
                    refuse_symlink: bool = False) -> int:
    """An O_PATH|O_CLOEXEC descriptor (the caller closes it) of ``path``, as the container sees
    it, under ``root_fd`` taken as ``/``: ``..`` stops at it and symlinks resolve inside it.

    ``create`` None: the path must exist. ``"dir"``: missing components are made directories
    (``mode``, less the umask). ``"file"``: missing parents are made directories and the last
    an empty regular file (0644), to bind-mount a file on. An existing last component of the
    wrong kind raises; so does a dangling symlink where something must be made, rather than
    guess where its target belongs. ``refuse_symlink``: raise ELOOP if the last component is
    itself a symlink, as runc does for /proc, /sys and /dev.
    """
    if create not in (None, "dir", "file"):
        raise ValueError(f"create must be None, 'dir' or 'file', not {create!r}")
    shown = path if path.startswith("/") else "/" + path
    if "\0" in path:
        raise SyscallError(errno_codes.EINVAL, "resolve", shown)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        fd = _directory(root_fd, [], False, mode, shown)
    elif create is None and not refuse_symlink:
        fd = _openat2(root_fd, "/".join(parts), _PATH, _IN_ROOT)
        if fd < 0:
            raise SyscallError(-fd, "resolve", shown)
    else:
        parent = _directory(root_fd, parts[:-1], create is not None, mode, shown)
        try:
            fd = _component(root_fd, parent, parts, create, mode, shown, _PATH, refuse_symlink)
        finally:
            os.close(parent)
    if create is not None and stat.S_ISDIR(os.fstat(fd).st_mode) != (create == "dir"):
        os.close(fd)
        err = errno_codes.ENOTDIR if create == "dir" else errno_codes.EISDIR
        raise SyscallError(err, "create mount point", shown)
    return fd


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """The new descriptor, or minus the errno: callers branch on ENOENT, exceptions would cost
    a try per component."""
    number = _SYS_OPENAT2.get(_MACHINE)
    if number is None:
        return -errno_codes.ENOSYS
    how = struct.pack("=QQQ", flags, 0, resolve)  # struct open_how {u64 flags, mode, resolve}
    raw = os.fsencode(path)
    for _ in range(_RETRIES):
        fd = libc.syscall(number, dirfd, raw, how, len(how))
        if fd >= 0:
            return fd
        err = libc.errno()
        if err != errno_codes.EAGAIN:
            return -err
    return -errno_codes.EAGAIN


def _directory(root_fd: int, parts: list[str], make: bool, mode: int, shown: str) -> int:
    """Descriptor of the directory ``parts`` names, its missing components made if ``make``."""
    flags = _PATH | os.O_DIRECTORY
    fd = _openat2(root_fd, "/".join(parts) or ".", flags, _IN_ROOT)
    if fd >= 0:
        return fd
    if -fd != errno_codes.ENOENT or not make:
        raise SyscallError(-fd, "resolve", shown)
    fd = _openat2(root_fd, ".", flags, _IN_ROOT)
    if fd < 0:
        raise SyscallError(-fd, "resolve", shown)
    try:
        # One component at a time, each looked up from the root again: a symlink met on the way
        # must resolve inside the root, which a lookup relative to the parent would not do.
        for end in range(1, len(parts) + 1):
            child = _component(root_fd, fd, parts[:end], "dir", mode, shown, flags, False)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _component(root_fd: int, parent_fd: int, parts: list[str], make: str | None, mode: int,
               shown: str, flags: int, no_symlink: bool) -> int:
    """Descriptor of ``parts``, whose last component lives in ``parent_fd``; made if missing."""
    name = parts[-1]
    for _ in range(_RETRIES):
        if no_symlink and name != "..":
            # From the parent, one component: RESOLVE_NO_SYMLINKS then refuses exactly that one
            # being a symlink, atomically, where an lstat first would leave a window.
            fd = _openat2(parent_fd, name, flags, _NO_FOLLOW)
            if fd == -errno_codes.ELOOP:
                raise SyscallError(errno_codes.ELOOP, "refuse symlinked mount point", shown)
        else:
            fd = _openat2(root_fd, "/".join(parts), flags, _IN_ROOT)
        if fd >= 0:
            return fd
        if -fd != errno_codes.ENOENT or make is None or name == "..":
            raise SyscallError(-fd, "resolve", shown)
        try:
            if make == "dir":
                os.mkdir(name, mode, dir_fd=parent_fd)
            else:
                creating = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC
                os.close(os.open(name, creating, 0o644, dir_fd=parent_fd))
        except FileExistsError:
            # A racing creator (look again), or a dangling symlink: making its target would
            # mean resolving it by hand, and refusing is as safe.
            if _is_symlink(parent_fd, name):
                raise SyscallError(errno_codes.ENOENT, "create mount point", shown) from None
        except OSError as exc:
            raise SyscallError(exc.errno or errno_codes.EIO, "create mount point", shown) from None
    raise SyscallError(errno_codes.EAGAIN, "resolve", shown)


def _is_symlink(parent_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
