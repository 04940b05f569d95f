"""The kernel calls init makes, in one place, and paths resolved inside a root (below).

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
import stat
import struct

from . import libc, socket
from .procfs import read_proc_file

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
        def setdomainname(self, name: str) -> None: ...
        def link_up(self, interface: str) -> None: ...
        def setns(self, path: str, nstype: int) -> None: ...
        def resolve(self, root: str, path: str, create: str | None,
                    refuse_symlink: bool) -> str: ...
        def release(self, target: str) -> None: ...
        def set_recursive(self, target: str, flags: int) -> None: ...
        def mount_flags(self, target: str) -> int: ...
        def is_directory(self, target: str) -> bool: ...
        def write_file(self, target: str, data: str) -> None: ...
        def chown(self, path: str, uid: int, gid: int) -> None: ...


# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWCGROUP = 0x02000000

# Mount flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 0x2
_AT_RECURSIVE = 0x8000
_ST_RELATIME = 0x1000  # statvfs's; the other ST_* flags have their MS_* values
# mount_setattr's MOUNT_ATTR_* values happen to equal the MS_* ones for these four.
RECURSIVE_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4
_KEYCTL_JOIN_SESSION_KEYRING = 1

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# System call numbers by architecture, for the calls the C library does not wrap (or, for
# rt_sigaction, wraps with a refusal of the two signals glibc keeps for itself).
_MACHINE = os.uname().machine
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_SYS_SETDOMAINNAME = {"x86_64": 171, "aarch64": 162, "riscv64": 162, "ppc64le": 122,
                      "s390x": 121}
_SYS_PRLIMIT64 = {"x86_64": 302, "aarch64": 261, "riscv64": 261, "ppc64le": 325, "s390x": 334}
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134, "riscv64": 134, "ppc64le": 173,
                     "s390x": 174}
# clone(2): the raw call, for CLONE_PARENT, which fork() cannot do. (s390x takes the stack
# first; it is left out.)
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120}
_SIGCHLD = 17
CLONE_PARENT = 0x00008000
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}
_SYS_MOUNT_SETATTR = dict.fromkeys(("x86_64", "aarch64", "riscv64", "ppc64le", "s390x"), 442)


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


def _open(path: str, flags: int, operation: str) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
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


def _number(table: dict[str, int], operation: str, path: str = "") -> int:
    number = table.get(_MACHINE)
    if number is None:
        raise SyscallError(errno_codes.ENOSYS, operation, path)
    return number


def set_rlimit(resource: int, soft: int, hard: int) -> None:
    """setrlimit for this process, 64-bit limits on every architecture."""
    limits = struct.pack("QQ", soft, hard)
    _check(libc.syscall(_number(_SYS_PRLIMIT64, "prlimit"), 0, resource, limits, None),
           "setrlimit", str(resource))


def reset_signal_disposition(signum: int) -> None:
    """Set ``signum``'s action to SIG_DFL, 32 and 33 included (glibc refuses those)."""
    # struct kernel_sigaction: handler (0 = SIG_DFL), flags, restorer, mask, all zero.
    _check(libc.syscall(_number(_SYS_RT_SIGACTION, "rt_sigaction"), signum, bytes(32), None, 8),
           "rt_sigaction", str(signum))


def clone_process(flags: int) -> int:
    """clone(2) with ``flags`` (CLONE_NEWPID, CLONE_PARENT, ...) and no new stack, like
    fork(2): 0 in the child, its pid in the parent. Only for a single-threaded process,
    and the child must not rely on the C library's idea of its thread id (it keeps the
    parent's): it may call os functions, fork and exec. Raises SyscallError."""
    pid = libc.syscall(_number(_SYS_CLONE, "clone"), flags | _SIGCHLD, 0, 0, 0, 0)
    _check(pid, "clone")
    return int(pid)


def set_not_dumpable() -> None:
    """No core dumps, and /proc/PID/{mem,maps,environ,fd,exe,...} and ptrace only for those
    with CAP_SYS_PTRACE: the init holds host paths and descriptors a workload must not reach."""
    _check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def join_new_session_keyring() -> None:
    """A new anonymous session keyring, so the container does not share the host session's
    keys (an unnamed one: a named keyring could be joined by another container)."""
    _check(libc.syscall(_number(_SYS_KEYCTL, "keyctl"), _KEYCTL_JOIN_SESSION_KEYRING, None),
           "keyctl(KEYCTL_JOIN_SESSION_KEYRING)")


def hide_command_line_and_environment(title: str) -> None:
    """Overwrite the memory /proc/PID/cmdline and /proc/PID/environ read from (the argument
    and environment strings the process was started with) and empty the environment: a
    forked init would otherwise show the supervisor's command line, with host paths, to
    anyone in the container, and keep the host shell's environment. ``title`` becomes the
    command line, cut to fit."""
    os.environ.clear()  # unsetenv each: libc's environ no longer points into that memory
    with open("/proc/self/stat", "rb") as file:
        stat = file.read()
    # Fields after the command name (which may hold spaces) in proc(5)'s numbering from 3;
    # arg_start, arg_end, env_start and env_end are fields 48-51.
    fields = stat[stat.rindex(b")") + 2:].split()
    arg_start, arg_end, env_start, env_end = (int(value) for value in fields[45:49])
    text = os.fsencode(title)[:max(arg_end - arg_start - 1, 0)]
    with open("/proc/self/mem", "r+b", buffering=0) as memory:
        if env_end > env_start:
            memory.seek(env_start)
            memory.write(bytes(env_end - env_start))
        if arg_end > arg_start:
            # A last byte that is not NUL tells the kernel the title was rewritten in place
            # (setproctitle's convention): cmdline then ends at the first NUL, the title's.
            memory.seek(arg_start)
            memory.write((text + b"\0").ljust(arg_end - arg_start, b" "))


def set_process_name(name: str) -> None:
    """Name shown by ps/top (comm), so the init is recognisable on the host."""
    libc.prctl_string(PR_SET_NAME, os.fsencode(name)[:15], 0, 0, 0)


# -- Paths inside a container's root, resolved without leaving it ------------------------
#
# The rootfs is hostile input: ``/tmp`` in it may be a symlink to ``../../etc`` or ``/etc``, and
# following it from the host would mount (or mkdir) on the host's ``/etc`` (runc's
# CVE-2021-30465). openat2(2) with RESOLVE_IN_ROOT makes the kernel resolve every symlink and
# ``..`` as if the rootfs were ``/``, in one atomic walk that a concurrent rename cannot trick, so
# nothing here ever touches a path string joined onto the host rootfs. Mounting on
# ``/proc/self/fd/N`` of the result then lands on exactly the inode that was checked.

# linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# openat2's system call number by architecture: glibc before 2.40 does not wrap it. Every
# architecture on the unified syscall table got 437 (Linux 5.6).
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


class LinuxSyscalls:
    """The real kernel."""

    def __init__(self) -> None:
        self._root: tuple[str, int] | None = None

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
        self._forget_root()
        number = _SYS_PIVOT_ROOT.get(_MACHINE)
        if number is None:
            raise SyscallError(errno_codes.ENOSYS, "pivot_root", new_root)
        _check(libc.syscall(number, _b(new_root), _b(put_old)), "pivot_root", new_root)

    def chroot(self, path: str) -> None:
        self._forget_root()
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
        """A node of exactly ``mode``: the init runs with umask 0, which mknod would apply."""
        _os_call("mknod", path, os.mknod, path, mode, os.makedev(major, minor))

    def symlink(self, target: str, path: str) -> None:
        _os_call("symlink", path, os.symlink, target, path)

    def sethostname(self, name: str) -> None:
        raw = os.fsencode(name)
        _check(libc.sethostname(raw, len(raw)), "sethostname", name)

    def setdomainname(self, name: str) -> None:
        raw = os.fsencode(name)
        _check(libc.syscall(_number(_SYS_SETDOMAINNAME, "setdomainname"), raw, len(raw)),
               "setdomainname", name)

    def setns(self, path: str, nstype: int) -> None:
        fd = _open(path, os.O_RDONLY, "open namespace")
        try:
            _check(libc.setns(fd, nstype), "setns", path)
        finally:
            os.close(fd)

    def resolve(self, root: str, path: str, create: str | None, refuse_symlink: bool) -> str:
        """A name for ``path`` inside ``root`` that cannot lead out of it (``resolve_in_root``):
        ``/proc/self/fd/N`` of a descriptor held until ``release``. The root's own descriptor
        is opened on the first call (after the root was bound onto itself: one opened before
        names the host's mount, which mount(2) refuses) and kept until the root changes."""
        if self._root is None or self._root[0] != root:
            self._forget_root()
            self._root = (root, open_root(root))
        return fd_path(resolve_in_root(self._root[1], path, create=create,
                                       refuse_symlink=refuse_symlink))

    def _forget_root(self) -> None:
        if self._root is not None:
            os.close(self._root[1])
            self._root = None

    def release(self, target: str) -> None:
        os.close(int(target.rpartition("/")[2]))

    def set_recursive(self, target: str, flags: int) -> None:
        """Set ``flags`` (of RECURSIVE_FLAGS: read-only, nosuid, nodev, noexec) on the mount
        at ``target`` and on every mount below it, in one call."""
        attributes = struct.pack("QQQQ", flags & RECURSIVE_FLAGS, 0, 0, 0)
        _check(libc.syscall(_number(_SYS_MOUNT_SETATTR, "mount_setattr"), -100,
                            os.fsencode(target), _AT_RECURSIVE, attributes, len(attributes)),
               "make read-only", target)

    def mount_flags(self, target: str) -> int:
        """The MS_* flags of the mount at ``target`` that a remount would otherwise clear."""
        try:
            flags = os.statvfs(target).f_flag
        except OSError as exc:
            raise SyscallError(exc.errno or errno_codes.EIO, "statvfs", target) from None
        same = flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
        return same | (MS_RELATIME if flags & _ST_RELATIME else 0)

    def is_directory(self, target: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(target).st_mode)
        except OSError as exc:
            raise SyscallError(exc.errno or errno_codes.EIO, "stat", target) from None

    def write_file(self, target: str, data: str) -> None:
        fd = _open(target, os.O_WRONLY, "open")
        try:
            os.write(fd, data.encode())
        except OSError as exc:
            raise SyscallError(exc.errno or errno_codes.EIO, "write", target) from None
        finally:
            os.close(fd)

    def chown(self, path: str, uid: int, gid: int) -> None:
        _os_call("chown", path, os.chown, path, uid, gid)

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

# Capabilities by name (linux/capability.h).
CAPABILITIES = {name: number for number, name in enumerate((
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
))}
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91, "riscv64": 91, "ppc64le": 184, "s390x": 185}


def _capability_fields(*names: str) -> list[int]:
    """The masks /proc/self/status gives for ``names`` (``"CapPrm"``, ...), in order."""
    found = {}
    for line in read_proc_file("/proc/self/status").splitlines():
        name, _, value = line.partition(":")
        if name in names:
            found[name] = int(value, 16)
    return [found.get(name, 0) for name in names]


def held_capabilities() -> list[str]:
    """The names of the capabilities this process holds (its permitted set): all a container
    can be given, since nobody can grant more than they have."""
    [held] = _capability_fields("CapPrm")
    return [name for name, number in CAPABILITIES.items() if held >> number & 1]


def capability_masks() -> tuple[int, int]:
    """This process's effective and permitted sets, as bit masks by capability number."""
    effective, permitted = _capability_fields("CapEff", "CapPrm")
    return effective, permitted


def last_capability() -> int:
    """The highest capability this kernel knows."""
    try:
        return int(read_proc_file("/proc/sys/kernel/cap_last_cap"))
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def drop_bounding(capabilities: list[int]) -> None:
    """Remove ``capabilities`` from the bounding set (what an exec may ever grant)."""
    for number in capabilities:
        _check(libc.prctl(_PR_CAPBSET_DROP, number, 0, 0, 0), "drop from the bounding set",
               str(number))


def keep_capabilities(keep: bool) -> None:
    """Whether the permitted set survives the change from uid 0 to another."""
    _check(libc.prctl(_PR_SET_KEEPCAPS, int(keep), 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")


def set_capabilities(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of this thread, each set a bit mask by capability number."""
    header = struct.pack("Ii", _CAPABILITY_VERSION_3, 0)
    data = struct.pack("IIIIII", effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF,
                       inheritable & 0xFFFFFFFF, effective >> 32, permitted >> 32,
                       inheritable >> 32)
    _check(libc.syscall(_number(_SYS_CAPSET, "capset"), header, data), "capset")


def set_ambient(capabilities: list[int]) -> None:
    """Clear the ambient set, then raise ``capabilities`` in it (each must be permitted and
    inheritable already)."""
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    for number in capabilities:
        _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, number, 0, 0),
               "raise ambient", str(number))


def set_no_new_privileges() -> None:
    """No exec from here on can grant privileges (setuid bits, file capabilities)."""
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


# Resource limits by their OCI names (asm-generic/resource.h; the same on x86 and arm).
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
