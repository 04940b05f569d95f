"""Seccomp profiles: pyctr's default, docker's profile format, and the runtime spec's
``linux.seccomp``.

A profile in docker's format is written once for every container: some rules hold only for
a container that has a capability (``includes.caps``), lacks one (``excludes.caps``), runs on
some architectures or on a kernel at least so new (``includes.minKernel``). What init
installs is the runtime spec's ``linux.seccomp``: the rules that hold for *this* container,
on *this* machine, and nothing conditional. ``profile_to_linux_seccomp`` is the one place
that turns the first into the second; the supervisor compiles the result to BPF
(``pyctr.supervisor.seccomp``) and init installs the program right before exec.

``DEFAULT_PROFILE`` has the effect of docker's default profile: an allowlist of the calls
ordinary programs make, and the calls that act on the whole machine (mounts, modules, the
clock, the kernel keyring, swap, reboot) allowed only when the container was given the
capability that lets the kernel honour them anyway. Calls it refuses fail with EPERM; calls it
does not know (newer than the profile) fail with ENOSYS, which the compiler adds, so that a
newer libc falls back to an older call instead of failing (runc PR 2746).

This module is imported while the CLI builds a container, before the init is forked: it
needs only ``os`` (``json`` comes in with ``read_profile``, when a user gives a file).
"""

from __future__ import annotations

import marshal
import os

from .model import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pyctr.protocol.codec import Value

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
"""What a rule can do; SCMP_ACT_NOTIFY (a listener on the host decides) is refused."""
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
ARCHITECTURES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)
FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
EPERM = 1
ENOSYS = 38
_MAX_ERRNO = 4095
_UINT64_MAX = (1 << 64) - 1

# What an architecture is called: os.uname().machine, Go's GOARCH (docker's profiles say
# "amd64" in includes.arches), libseccomp's token. The first of each is the machine's name.
_ARCH_NAMES = (
    ("x86_64", "amd64", "SCMP_ARCH_X86_64"),
    ("aarch64", "arm64", "SCMP_ARCH_AARCH64"),
    ("i686", "i386", "386", "x86", "SCMP_ARCH_X86"),
    ("armv7l", "arm", "SCMP_ARCH_ARM"),
    ("ppc64le", "SCMP_ARCH_PPC64LE"),
    ("ppc64", "SCMP_ARCH_PPC64"),
    ("s390x", "SCMP_ARCH_S390X"),
    ("s390", "SCMP_ARCH_S390"),
    ("riscv64", "SCMP_ARCH_RISCV64"),
)


def _rule(names: str, action: str = "SCMP_ACT_ALLOW", **fields: Value) -> dict[str, Value]:
    rule: dict[str, Value] = {"names": list(names.split()), "action": action}
    rule.update(fields)
    return rule


def _refused(names: str) -> dict[str, Value]:
    return _rule(names, "SCMP_ACT_ERRNO", errnoRet=EPERM)


def _with(*caps: str) -> dict[str, Value]:
    return {"caps": list(caps)}


_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""
_AF_ALG, _AF_NFC, _AF_VSOCK = 38, 39, 40

DEFAULT_PROFILE: dict[str, Value] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": EPERM,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64",
         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        # Files, directories and descriptors: permissions are the kernel's business.
        _rule("access cachestat chdir chmod chown chown32 close close_range copy_file_range "
              "creat dup dup2 dup3 faccessat faccessat2 fadvise64 fadvise64_64 fallocate "
              "fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 "
              "fdatasync fgetxattr flistxattr flock fremovexattr fsetxattr fstat fstat64 "
              "fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd "
              "getdents getdents64 getxattr getxattrat lchown lchown32 lgetxattr link linkat "
              "listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr "
              "lstat lstat64 mkdir mkdirat mknod mknodat name_to_handle_at newfstatat open "
              "openat openat2 pread64 preadv preadv2 pwrite64 pwritev pwritev2 read readahead "
              "readlink readlinkat readv removexattr removexattrat rename renameat renameat2 "
              "rmdir sendfile sendfile64 setxattr setxattrat splice stat stat64 statfs "
              "statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs tee "
              "truncate truncate64 umask unlink unlinkat utime utimensat utimensat_time64 "
              "utimes vmsplice write writev"),
        # Waiting for events, pipes, asynchronous I/O (io_uring is refused below).
        _rule("epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 "
              "epoll_wait epoll_wait_old eventfd eventfd2 fanotify_mark inotify_add_watch "
              "inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents "
              "io_pgetevents io_pgetevents_time64 io_setup io_submit ioctl memfd_create "
              "memfd_secret pipe pipe2 poll ppoll ppoll_time64 pselect6 pselect6_time64 "
              "select _newselect signalfd signalfd4 timerfd_create timerfd_gettime "
              "timerfd_gettime64 timerfd_settime timerfd_settime64"),
        # The process's own memory.
        _rule("brk madvise map_shadow_stack membarrier mincore mlock mlock2 mlockall mmap "
              "mmap2 mprotect mremap mseal msync munlock munlockall munmap pkey_alloc "
              "pkey_free pkey_mprotect remap_file_pages"),
        # Processes, threads and signals (clone, clone3, personality: argument rules below).
        _rule("alarm capget capset execve execveat exit exit_group fork futex futex_requeue "
              "futex_time64 futex_wait futex_waitv futex_wake get_robust_list get_thread_area "
              "getcpu getpgid getpgrp getpid getppid getpriority getrandom getrlimit getrusage "
              "getsid gettid kill landlock_add_rule landlock_create_ruleset "
              "landlock_restrict_self pause pidfd_open pidfd_send_signal prctl prlimit64 "
              "process_mrelease restart_syscall rseq rt_sigaction rt_sigpending "
              "rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait "
              "rt_sigtimedwait_time64 rt_tgsigqueueinfo seccomp set_robust_list "
              "set_thread_area set_tid_address setpgid setpriority setrlimit setsid "
              "sigaltstack sigprocmask sigreturn sysinfo tgkill times tkill ugetrlimit uname "
              "uretprobe vfork wait4 waitid waitpid"),
        # Identities: the kernel checks CAP_SETUID/CAP_SETGID itself.
        _rule("getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 "
              "getresgid getresgid32 getresuid getresuid32 getuid getuid32 setfsgid setfsgid32 "
              "setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setregid setregid32 "
              "setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setuid setuid32"),
        # Scheduling and I/O priority of the container's own processes.
        _rule("ioprio_get ioprio_set sched_get_priority_max sched_get_priority_min "
              "sched_getaffinity sched_getattr sched_getparam sched_getscheduler "
              "sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity "
              "sched_setattr sched_setparam sched_setscheduler sched_yield"),
        # Reading clocks, sleeping, timers; adjtimex and clock_adjtime only change the clock
        # when the kernel sees CAP_SYS_TIME, and read it otherwise.
        _rule("adjtimex clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 "
              "clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 getitimer "
              "gettimeofday nanosleep setitimer time timer_create timer_delete "
              "timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64"),
        # Sockets in the container's own network namespace (socket itself: below).
        _rule("accept accept4 bind connect getpeername getsockname getsockopt listen recv "
              "recvfrom recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto "
              "setsockopt shutdown socketcall socketpair"),
        # System V IPC and POSIX message queues, in the container's own IPC namespace.
        _rule("ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 "
              "mq_timedsend mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl "
              "semget semop semtimedop semtimedop_time64 shmat shmctl shmdt shmget"),
        # Calls of one architecture family.
        _rule("arch_prctl modify_ldt", includes={"arches": ["amd64", "x32", "x86"]}),
        _rule("arm_fadvise64_64 arm_sync_file_range breakpoint cacheflush set_tls "
              "sync_file_range2", includes={"arches": ["arm", "arm64"]}),
        _rule("riscv_flush_icache riscv_hwprobe", includes={"arches": ["riscv64"]}),
        _rule("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
              includes={"arches": ["s390", "s390x"]}),
        _rule("swapcontext sync_file_range2", includes={"arches": ["ppc64le"]}),
        # Execution domains: only the plain Linux ones, 32-bit and UNAME26, and the query.
        *(_rule("personality", args=[{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}])
          for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)),
        # Sockets of every family but the kernel's crypto API (AF_ALG, a frequent source of
        # kernel bugs) and vsock (which reaches the host's hypervisor).
        _rule("socket", args=[{"index": 0, "value": _AF_ALG, "op": "SCMP_CMP_LT"}]),
        _rule("socket", args=[{"index": 0, "value": _AF_NFC, "op": "SCMP_CMP_EQ"}]),
        _rule("socket", args=[{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_GT"}]),
        # New processes and threads, but no new namespaces, without CAP_SYS_ADMIN; s390
        # passes the flags second.
        _rule("clone", args=[{"index": 0, "value": _NAMESPACE_FLAGS, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}],
              excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
        _rule("clone", args=[{"index": 1, "value": _NAMESPACE_FLAGS, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}],
              includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}),
        # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes the libc
        # fall back to clone, whose flags the rule above sees.
        _rule("clone3", "SCMP_ACT_ERRNO", errnoRet=ENOSYS, excludes=_with("CAP_SYS_ADMIN")),
        # Mounts, namespaces, the hostname, BPF, perf, fanotify, quotas, the LSMs' attributes:
        # CAP_SYS_ADMIN.
        _rule("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie "
              "lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr "
              "move_mount open_tree perf_event_open pivot_root quotactl quotactl_fd "
              "setdomainname sethostname setns syslog umount umount2 unshare",
              includes=_with("CAP_SYS_ADMIN")),
        # The narrower capabilities that newer kernels accept for BPF and perf, and the log.
        _rule("bpf", includes=_with("CAP_BPF")),
        _rule("perf_event_open", includes=_with("CAP_PERFMON")),
        _rule("syslog", includes=_with("CAP_SYSLOG")),
        # Kernel modules.
        _rule("delete_module finit_module init_module", includes=_with("CAP_SYS_MODULE")),
        # Rebooting: in a PID namespace, that ends the container's init.
        _rule("reboot", includes=_with("CAP_SYS_BOOT")),
        # Reading and changing other processes (4.8: before it, a tracer could rewrite a
        # call after the filter had allowed it).
        _rule("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
              includes={"caps": ["CAP_SYS_PTRACE"], "minKernel": "4.8"}),
        # Setting the machine's clock.
        _rule("clock_settime clock_settime64 settimeofday stime",
              includes=_with("CAP_SYS_TIME")),
        # Opening any file of a filesystem by its handle, past every directory's permissions.
        _rule("open_by_handle_at", includes=_with("CAP_DAC_READ_SEARCH")),
        _rule("chroot", includes=_with("CAP_SYS_CHROOT")),
        _rule("acct", includes=_with("CAP_SYS_PACCT")),
        _rule("ioperm iopl", includes=_with("CAP_SYS_RAWIO")),
        _rule("vhangup", includes=_with("CAP_SYS_TTY_CONFIG")),
        # NUMA placement, which reaches past the container's cpuset.
        _rule("get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
              includes=_with("CAP_SYS_NICE")),
        # Refused always, named so that they fail with EPERM and not as unknown. The kernel
        # keyring is not namespaced; kexec loads a kernel for the host, not for a PID
        # namespace as reboot does; swap is the machine's; io_uring and userfaultfd are a
        # record of kernel exploits; the rest are obsolete.
        _refused("add_key keyctl request_key"),
        _refused("kexec_file_load kexec_load"),
        _refused("swapoff swapon"),
        _refused("io_uring_enter io_uring_register io_uring_setup userfaultfd"),
        _refused("create_module get_kernel_syms migrate_pages move_pages nfsservctl "
                 "query_module _sysctl sysfs uselib ustat vm86 vm86old"),
    ],
}
"""pyctr's default profile, in docker's format. Docker's effect (moby/profiles, 2026), with two
differences: ptrace and its relatives need CAP_SYS_PTRACE (docker allows them on any kernel
since 4.8), and pivot_root is allowed with CAP_SYS_ADMIN, like mount (docker refuses it
always)."""


# -- From a profile to linux.seccomp ------------------------------------------------------


def native_architecture(arch: str | None = None) -> str:
    """libseccomp's name (``SCMP_ARCH_X86_64``) of ``arch`` (a machine name, GOARCH or that
    name; default: this machine's), or ``""`` for one it does not know."""
    wanted = os.uname().machine if arch is None else arch
    for names in _ARCH_NAMES:
        if wanted in names:
            return names[-1]
    return ""


def _arch_aliases(arch: str | None) -> frozenset[str]:
    wanted = os.uname().machine if arch is None else arch
    for names in _ARCH_NAMES:
        if wanted in names:
            return frozenset(names)
    return frozenset((wanted,))


def _kernel_version(release: str) -> tuple[int, ...]:
    """(6, 1) of ``6.1.0-18-amd64``; missing or odd parts read as 0."""
    parts: list[int] = []
    for part in release.split("-", 1)[0].split(".")[:3]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    return tuple(parts)


def _capability(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _strings(value: Value) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _values(items: Iterable[str]) -> list[Value]:
    values: list[Value] = []
    values.extend(items)
    return values


def _applies(rule: Mapping[str, Value], caps: frozenset[str], aliases: frozenset[str],
             kernel: tuple[int, ...]) -> bool:
    includes = rule.get("includes")
    if isinstance(includes, dict):
        if not all(_capability(cap) in caps for cap in _strings(includes.get("caps"))):
            return False
        arches = _strings(includes.get("arches"))
        if arches and aliases.isdisjoint(arches):
            return False
        minimum = includes.get("minKernel")
        if isinstance(minimum, str) and minimum and kernel < _kernel_version(minimum):
            return False
    excludes = rule.get("excludes")
    if isinstance(excludes, dict):
        if any(_capability(cap) in caps for cap in _strings(excludes.get("caps"))):
            return False
        if not aliases.isdisjoint(_strings(excludes.get("arches"))):
            return False
    return True


def profile_to_linux_seccomp(profile: Mapping[str, Value], capabilities: Iterable[str],
                             arch: str | None = None) -> dict[str, Value]:
    """The runtime spec's ``linux.seccomp`` for a container holding ``capabilities`` (the
    ``CAP_SYS_ADMIN`` spelling; the bounding set is what counts) on ``arch`` (default: this
    machine), from ``profile`` in docker's format (``DEFAULT_PROFILE``, ``read_profile``'s
    result) or already a ``linux.seccomp``. Rules whose includes/excludes do not hold are
    left out; ``archMap`` gives the architectures: the native one and its sub-architectures
    (32-bit and x32 programs on x86_64). The profile is assumed checked (``read_profile``)."""
    caps = frozenset(_capability(name) for name in capabilities)
    aliases = _arch_aliases(arch)
    kernel = _kernel_version(os.uname().release)
    result: dict[str, Value] = {"defaultAction": profile.get("defaultAction")}
    if profile.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    architectures = _strings(profile.get("architectures"))
    arch_map = profile.get("archMap")
    if isinstance(arch_map, list) and arch_map:
        native = native_architecture(arch)
        architectures = [native] if native else []
        for entry in arch_map:
            if isinstance(entry, dict) and entry.get("architecture") in aliases:
                architectures = [str(entry["architecture"]),
                                 *_strings(entry.get("subArchitectures"))]
                break
    if architectures:
        result["architectures"] = _values(architectures)
    flags = _strings(profile.get("flags"))
    if flags:
        result["flags"] = _values(flags)
    syscalls: list[Value] = []
    rules = profile.get("syscalls")
    for rule in rules if isinstance(rules, list) else []:
        if not isinstance(rule, dict) or not _applies(rule, caps, aliases, kernel):
            continue
        names = _strings(rule.get("names"))
        if not names and isinstance(rule.get("name"), str):
            names = [str(rule["name"])]
        if not names:
            continue
        converted: dict[str, Value] = {"names": _values(names), "action": rule.get("action")}
        if rule.get("errnoRet") is not None:
            converted["errnoRet"] = rule["errnoRet"]
        args = rule.get("args")
        if isinstance(args, list) and args:
            converted["args"] = [_argument(arg) for arg in args if isinstance(arg, dict)]
        syscalls.append(converted)
    result["syscalls"] = syscalls
    return result


_default_for: dict[frozenset[str], tuple[dict[str, Value], bytes]] = {}


def default_linux_seccomp(capabilities: Iterable[str]) -> dict[str, Value]:
    """``profile_to_linux_seccomp(DEFAULT_PROFILE, capabilities)`` for this machine, worked
    out once per set of capabilities in a process (a program that runs many containers
    through the library pays for the conversion once) and handed out as a copy of its own
    each time, so a caller may change it."""
    copied: dict[str, Value] = marshal.loads(_default(capabilities)[1])
    return copied


def is_default_linux_seccomp(value: Value, capabilities: Iterable[str]) -> bool:
    """Whether ``value`` is what ``default_linux_seccomp(capabilities)`` gives."""
    return value == _default(capabilities)[0]


def _default(capabilities: Iterable[str]) -> tuple[dict[str, Value], bytes]:
    """The default profile for ``capabilities``, and the same marshalled: the cheapest deep
    copy of it (marshal is built in, and its C code copies a few hundred names in
    microseconds)."""
    caps = frozenset(_capability(name) for name in capabilities)
    known = _default_for.get(caps)
    if known is None:
        converted = profile_to_linux_seccomp(DEFAULT_PROFILE, caps)
        known = _default_for[caps] = converted, marshal.dumps(converted)
    return known


def _argument(arg: Mapping[str, Value]) -> dict[str, Value]:
    converted: dict[str, Value] = {"index": arg.get("index"), "value": arg.get("value", 0)}
    if arg.get("valueTwo") is not None:
        converted["valueTwo"] = arg["valueTwo"]
    converted["op"] = arg.get("op")
    return converted


# -- Checking -----------------------------------------------------------------------------


class _Checker:
    """Checks one document. An error is one line: ``prefix`` and the dotted field, or
    ``whole`` for the document itself, then the problem."""

    def __init__(self, prefix: str, whole: str) -> None:
        self.prefix = prefix
        self.whole = whole

    def fail(self, field: str, problem: str) -> SpecError:
        where = f"{self.prefix}{field}" if field else self.whole
        return SpecError(f"{where}: {problem}")

    def obj(self, value: Value, field: str, known: tuple[str, ...]) -> dict[str, Value]:
        if not isinstance(value, dict):
            raise self.fail(field, "must be an object")
        for key in value:
            if key not in known:
                raise self.fail(f"{field}.{key}" if field else key,
                                f"unknown field (known: {', '.join(known)})")
        return value

    def strings(self, value: Value, field: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(field, "must be a list of strings")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{field}[{index}]", "must be a string")
        return [item for item in value if isinstance(item, str)]

    def choices(self, value: Value, field: str, choices: tuple[str, ...], what: str) -> None:
        for index, item in enumerate(self.strings(value, field)):
            if item not in choices:
                raise self.fail(f"{field}[{index}]", f"unknown {what} {item!r}")

    def number(self, value: Value, field: str, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, "must be a whole number")
        if not 0 <= value <= high:
            raise self.fail(field, f"must be between 0 and {high}, got {value}")
        return value

    def action(self, value: Value, field: str) -> None:
        if value is None:
            raise self.fail(field, "is missing")
        if not isinstance(value, str):
            raise self.fail(field, "must be a string such as SCMP_ACT_ERRNO")
        if value == "SCMP_ACT_NOTIFY":
            raise self.fail(field, "SCMP_ACT_NOTIFY is not supported by pyctr (it needs a "
                                   "listener on the host)")
        if value not in ACTIONS:
            raise self.fail(field, f"unknown action {value!r}")

    def errno(self, value: Value, field: str) -> None:
        if value is not None:
            self.number(value, field, _MAX_ERRNO)

    def arguments(self, value: Value, field: str) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            raise self.fail(field, "must be a list")
        for index, arg in enumerate(value):
            where = f"{field}[{index}]"
            fields = self.obj(arg, where, ("index", "value", "valueTwo", "op"))
            if "index" not in fields:
                raise self.fail(f"{where}.index", "is missing")
            self.number(fields["index"], f"{where}.index", 5)
            self.number(fields.get("value", 0), f"{where}.value", _UINT64_MAX)
            if fields.get("valueTwo") is not None:
                self.number(fields["valueTwo"], f"{where}.valueTwo", _UINT64_MAX)
            op = fields.get("op")
            if not isinstance(op, str) or op not in OPERATORS:
                raise self.fail(f"{where}.op", f"unknown operator {op!r}")

    def common(self, fields: Mapping[str, Value]) -> None:
        """What docker's format and linux.seccomp share at the top."""
        self.action(fields.get("defaultAction"), "defaultAction")
        self.errno(fields.get("defaultErrnoRet"), "defaultErrnoRet")
        if fields.get("architectures") is not None:
            self.choices(fields["architectures"], "architectures", ARCHITECTURES,
                         "architecture")
        if fields.get("flags") is not None:
            self.choices(fields["flags"], "flags", FLAGS, "flag")
        for key in ("listenerPath", "listenerMetadata"):
            if fields.get(key):
                raise self.fail(key, "seccomp notification listeners are not supported by "
                                     "pyctr")

    def rule(self, rule: Value, where: str, known: tuple[str, ...]) -> dict[str, Value]:
        entry = self.obj(rule, where, known)
        names = entry.get("names")
        if names is None and "name" in known and entry.get("name") is not None:
            names = [entry["name"]]  # docker's older spelling, one name
        if names is None:
            raise self.fail(f"{where}.names", "is missing")
        if not self.strings(names, f"{where}.names"):
            raise self.fail(f"{where}.names", "must name at least one system call")
        self.action(entry.get("action"), f"{where}.action")
        self.errno(entry.get("errnoRet"), f"{where}.errnoRet")
        self.arguments(entry.get("args"), f"{where}.args")
        return entry


_OCI_FIELDS = ("defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath",
               "listenerMetadata", "syscalls")
_OCI_RULE_FIELDS = ("names", "action", "errnoRet", "args")
_DOCKER_FIELDS = (*_OCI_FIELDS, "archMap")
_DOCKER_RULE_FIELDS = ("names", "name", "action", "errnoRet", "args", "comment", "includes",
                       "excludes")


def check_linux_seccomp(value: Value) -> None:
    """Refuse a ``linux.seccomp`` pyctr cannot install: SpecError with one line naming the
    field (``linux.seccomp.syscalls[3].action: unknown action 'SCMP_ACT_FOO'``)."""
    check = _Checker("linux.seccomp.", "linux.seccomp")
    fields = check.obj(value, "", _OCI_FIELDS)
    check.common(fields)
    rules = fields.get("syscalls")
    if rules is not None and not isinstance(rules, list):
        raise check.fail("syscalls", "must be a list")
    for index, rule in enumerate(rules or []):
        check.rule(rule, f"syscalls[{index}]", _OCI_RULE_FIELDS)


def read_profile(path: str) -> dict[str, Value]:
    """The seccomp profile in the file ``path``, in docker's format (or a ``linux.seccomp``
    object), checked: SpecError with one line naming the file and what is wrong."""
    import json

    shown = f"seccomp profile {path}"
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise SpecError(f"{shown}: {exc.strerror or exc}") from None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"{shown}: not JSON ({exc})") from None
    check = _Checker(f"{shown}: ", shown)
    fields = check.obj(value, "", _DOCKER_FIELDS)
    check.common(fields)
    arch_map = fields.get("archMap")
    if arch_map is not None and not isinstance(arch_map, list):
        raise check.fail("archMap", "must be a list")
    if arch_map and fields.get("architectures"):
        raise check.fail("archMap", "give either architectures or archMap, not both")
    for index, entry in enumerate(arch_map or []):
        where = f"archMap[{index}]"
        item = check.obj(entry, where, ("architecture", "subArchitectures"))
        if item.get("architecture") not in ARCHITECTURES:
            raise check.fail(f"{where}.architecture",
                             f"unknown architecture {item.get('architecture')!r}")
        if item.get("subArchitectures") is not None:
            check.choices(item["subArchitectures"], f"{where}.subArchitectures",
                          ARCHITECTURES, "architecture")
    rules = fields.get("syscalls")
    if rules is not None and not isinstance(rules, list):
        raise check.fail("syscalls", "must be a list")
    for index, rule in enumerate(rules or []):
        where = f"syscalls[{index}]"
        entry = check.rule(rule, where, _DOCKER_RULE_FIELDS)
        if entry.get("comment") is not None and not isinstance(entry["comment"], str):
            raise check.fail(f"{where}.comment", "must be a string")
        for key in ("includes", "excludes"):
            if entry.get(key) is None:
                continue
            known = ("caps", "arches", "minKernel") if key == "includes" else ("caps", "arches")
            condition = check.obj(entry[key], f"{where}.{key}", known)
            for field in ("caps", "arches"):
                if condition.get(field) is not None:
                    check.strings(condition[field], f"{where}.{key}.{field}")
            minimum = condition.get("minKernel")
            if minimum is not None and (not isinstance(minimum, str)
                                        or not _is_version(minimum)):
                raise check.fail(f"{where}.{key}.minKernel",
                                 f"must be a kernel version such as \"5.8\", got {minimum!r}")
    return fields


def _is_version(text: str) -> bool:
    parts = text.split(".")
    return 1 <= len(parts) <= 3 and all(part.isdigit() for part in parts)
