"""PID 1 of the container.

``run`` is the whole life of the init, in order: guard against an already-dead supervisor,
drop inherited descriptors, block every signal (so none is lost and each can be collected with
sigwaitinfo, which also makes them deliverable to a PID 1), handshake, receive the config,
enter the remaining namespaces, build the root, start the workload, then relay signals and reap
zombies until the workload exits. It reports that exit and only then exits itself, because its
exit makes the kernel kill everything else in the PID namespace.

Init never imports anything after the root has changed (there may be no Python in the
container): every module it needs is imported at the top of this package.
"""

from __future__ import annotations

import errno as errno_codes
import gc
import os
import select
import sys as interpreter
import time

from pyctr.linux import libc, signal
from pyctr.linux.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    LinuxSyscalls,
    SyscallError,
    hide_command_line_and_environment,
    join_new_session_keyring,
    set_not_dumpable,
    set_parent_death_signal,
    set_process_name,
)
from pyctr.protocol import (
    EXIT_SETUP_FAILED,
    PROTOCOL_VERSION,
    CgroupJoined,
    Config,
    Created,
    Hello,
    ProtocolError,
    Ready,
    SetupFailed,
    Terminal,
    VersionMismatch,
    WorkloadExited,
    WorkloadStarted,
    check_hello,
)
from pyctr.spec.model import Spec, SpecError

from . import elf, workload  # noqa: F401 - elf is used by workload after the root changes
from .channel import Channel
from .rootfs import apply_plan, plan_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from pyctr.linux import socket
    from pyctr.linux.syscalls import Syscalls
    from pyctr.protocol.codec import Value

# The namespaces init enters itself, in the order it joins or makes them; the PID namespace
# was made by the supervisor's unshare before the fork (a process cannot move itself into a
# new PID namespace).
NAMESPACES = (
    ("mount", CLONE_NEWNS),
    ("uts", CLONE_NEWUTS),
    ("ipc", CLONE_NEWIPC),
    ("network", CLONE_NEWNET),
    ("cgroup", CLONE_NEWCGROUP),
)
RELAYED_SIGNALS = frozenset(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
WAITED_SIGNALS = RELAYED_SIGNALS | {signal.SIGCHLD}
def run(sock: socket.socket, started: int = -1, spec: Spec | None = None,
        keep_fds: int = 0, *, hidden: bool = False) -> NoReturn:
    """Be the container's init on ``sock``; never returns (the process exits). ``started``,
    when given, is a descriptor init closes once the workload has been started (or could not
    be): the CLI waits for that before it starts its own heavy imports. ``spec``: the checked
    spec, when the init is a fork of the supervisor that built it; the config message then
    leaves it out (decoding and checking it again cost ~0.3 ms of a fresh process's start).
    ``keep_fds``: descriptors 3 to 3+keep_fds-1 are the workload's (the OCI runtime's
    ``--preserve-fds``): kept open and inherited across its exec. ``hidden``: the command
    line and environment were hidden already (by the library's template, once for all its
    inits: see ``hide_command_line_and_environment``)."""
    code = EXIT_SETUP_FAILED
    try:
        code = _run(Channel(sock), started, spec, keep_fds, hidden)
    except BaseException as exc:
        try:
            Channel(sock).send(SetupFailed(EXIT_SETUP_FAILED, "init.crashed",
                                           f"init failed unexpectedly: {exc!r}"))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _run(channel: Channel, started: int, inherited: Spec | None, keep_fds: int = 0,
         hidden: bool = False) -> int:
    # Before anything a workload could see: no ptrace, no /proc/1/{mem,environ,fd,exe,...}
    # for a process without CAP_SYS_PTRACE, and no host paths or environment to read.
    set_not_dumpable()
    if not hidden:
        hide_command_line_and_environment("pyctr-init")
    # A collection walks every object, and in a forked init each one it touches is a page
    # copied from the parent; init's few allocations are freed by reference counting alone.
    gc.disable()
    set_parent_death_signal(signal.SIGKILL)
    # The death signal only covers a parent that dies from now on; if the supervisor is already
    # gone, its end of the socket is closed (its messages may still be queued): stop here.
    if channel.peer_gone():
        return EXIT_SETUP_FAILED
    set_process_name("pyctr-init")
    os.umask(0)  # what it creates gets the modes asked for; the workload gets its own umask
    # Inherited SIG_IGN for SIGCHLD would make the kernel reap our children for us, and the
    # workload's exit status would be lost.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    preserved = range(3, 3 + keep_fds)
    low = 3 + keep_fds
    for keep in sorted({channel.sock.fileno(), started} - {-1} - set(preserved)):
        os.closerange(low, keep)
        low = keep + 1
    os.closerange(low, 1 << 20)
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED_SIGNALS)
    workload.reset_ignored_signals()
    os.setsid()  # no controlling terminal: the host's Ctrl-C reaches us only via the supervisor
    try:
        join_new_session_keyring()
    except SyscallError:
        pass  # a kernel without keys (CONFIG_KEYS=n): there is no host keyring to share

    config = _handshake(channel)
    if isinstance(config, SetupFailed):
        channel.send(config)
        return config.exit_code
    channel.show_from(config.log_level)
    if config.detached:
        set_parent_death_signal(0)  # the OCI runtime's create exits; the container stays
    start_fifo = -1
    if config.start_fifo:
        try:  # now: it is a host path, out of reach once the root has changed
            start_fifo = os.open(config.start_fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            failure = SetupFailed(EXIT_SETUP_FAILED, "setup.failed",
                                  f"cannot open the start FIFO {config.start_fifo}: "
                                  f"{exc.strerror}")
            channel.send(failure)
            return failure.exit_code
    sys = LinuxSyscalls()
    try:
        spec = inherited if inherited is not None else _read_spec(config.spec)
        namespaces, mounts = build_container(config, spec, sys, channel)
    except SpecError as exc:
        failure = SetupFailed(EXIT_SETUP_FAILED, "config.invalid", str(exc))
        channel.send(failure)
        return failure.exit_code
    except SyscallError as exc:
        failure = SetupFailed(EXIT_SETUP_FAILED, "setup.failed", explain(exc, config.rootfs))
        channel.send(failure)
        return failure.exit_code
    channel.send(Ready(namespaces, mounts))

    process = spec.process
    argv, env = process.args, process.environment()
    terminal = None
    try:
        workload.enter_workdir(process.cwd)
        path = workload.resolve(argv[0], env, config.rootfs)
        workload.check_runnable(path, env, config.rootfs)
        if process.terminal:
            height, width = process.console_size or (0, 0)
            master, terminal = workload.open_terminal(height, width)
            workload.bind_console(terminal)
            channel.send_with_descriptors(Terminal(), [master])
            os.close(master)  # the supervisor holds it now
        if config.cgroups:
            _wait_for_cgroup(channel, new_namespace=_cgroup_namespace_waits(config, spec))
        if start_fifo != -1:
            channel.send(Created())
            if config.detached:
                channel.detach()
            ended_by = wait_for_start(start_fifo)
            if ended_by:
                return 128 + ended_by
        channel.log("debug", "workload.exec", path=path, argv=list(argv))
        seccomp = (bytes.fromhex(config.seccomp), config.seccomp_flags) if config.seccomp \
            else None
        for fd in preserved:
            try:
                os.set_inheritable(fd, True)
            except OSError:
                pass  # not open: nothing to pass on
        began = time.monotonic()
        pid = workload.start(path, argv, env, process, terminal, seccomp,
                             init_may_hold_filter=config.seccomp_fits_init)
    except workload.WorkloadError as exc:
        channel.send(SetupFailed(exc.exit_code, exc.error, exc.message))
        return exc.exit_code
    except OSError as exc:
        channel.send(SetupFailed(EXIT_SETUP_FAILED, "terminal.failed",
                                 f"cannot set up the container's terminal: {exc}"))
        return EXIT_SETUP_FAILED
    finally:
        if terminal is not None:
            os.close(terminal)  # only the workload keeps the slave: its exit ends the session
        if started != -1:
            os.close(started)
    channel.send_for(WorkloadStarted(pid), pid)

    status = relay_and_reap(pid, channel, group=config.signal_group)
    wall_time_us = int((time.monotonic() - began) * 1_000_000)
    remaining, killed = stop_remaining(config.stop_signal, config.stop_timeout_ms / 1000)
    if remaining:
        channel.log("info" if not killed else "warning", "container.remaining_stopped",
                    remaining=remaining, killed=killed,
                    stop_signal=config.stop_signal)
    if os.WIFSIGNALED(status):
        channel.send(WorkloadExited(None, os.WTERMSIG(status), wall_time_us, remaining, killed))
        return 128 + os.WTERMSIG(status)
    channel.send(WorkloadExited(os.WEXITSTATUS(status), None, wall_time_us, remaining, killed))
    return os.WEXITSTATUS(status)


def _read_spec(text: str) -> Spec:
    """The spec the supervisor sent (Config.spec). Raises SpecError."""
    # Here, not at the top: a fork of the CLI has its spec already and never loads json (the
    # template has loaded it); either way, before the root changes.
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"the spec from the supervisor is not JSON: {exc}") from None
    return Spec.from_value(value)


def wait_for_start(fifo: int) -> int:
    """Wait until the OCI runtime's ``start`` writes to ``fifo``: 0. A signal that arrives
    first ends the container as it would have ended the command (``kill`` of a created
    container): its number. SIGCHLD is nobody's here: no child exists yet."""
    waited = tuple(WAITED_SIGNALS - {signal.SIGCHLD})
    signals = libc.signalfd(-1, libc.sigset(waited), os.O_CLOEXEC)
    if signals < 0:
        raise workload.WorkloadError(EXIT_SETUP_FAILED, "setup.failed",
                                     f"signalfd: {os.strerror(libc.errno())}")
    try:
        poller = select.poll()
        poller.register(fifo, select.POLLIN)
        poller.register(signals, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == signals:
                    return int.from_bytes(os.read(signals, 128)[:4], interpreter.byteorder)
                return 0  # a byte, or start's end closed: either way start has come
    finally:
        os.close(signals)
        os.close(fifo)


def _cgroup_namespace_waits(config: Config, spec: Spec) -> bool:
    """Whether the container's new cgroup namespace waits until the init is in the
    container's cgroups, to be rooted there (``build_container`` leaves it out)."""
    namespace = spec.linux.namespace("cgroup")
    return bool(config.cgroups) and namespace is not None and namespace.path is None


def _wait_for_cgroup(channel: Channel, *, new_namespace: bool) -> None:
    """Until the supervisor has moved the init into the container's cgroups (CgroupJoined):
    nothing of the workload may run outside them. Then, with ``new_namespace``, the cgroup
    namespace, rooted in them. Raises WorkloadError otherwise."""
    try:
        message = channel.receive()
    except ProtocolError as exc:
        raise workload.WorkloadError(EXIT_SETUP_FAILED, "protocol.error",
                                     f"bad message from supervisor: {exc}") from None
    if not isinstance(message, CgroupJoined):
        raise workload.WorkloadError(EXIT_SETUP_FAILED, "protocol.unexpected",
                                     f"init expected cgroup_joined, got {message!r}")
    if new_namespace:
        try:
            LinuxSyscalls().unshare(CLONE_NEWCGROUP)
        except SyscallError as exc:
            raise workload.WorkloadError(EXIT_SETUP_FAILED, "setup.failed",
                                         f"cannot create the cgroup namespace: {exc}") from None


def _handshake(channel: Channel) -> Config | SetupFailed:
    try:
        hello = channel.receive()
        if not isinstance(hello, Hello):
            return SetupFailed(EXIT_SETUP_FAILED, "protocol.unexpected",
                               f"init expected a hello message, got {hello!r}")
        try:
            check_hello(hello, "supervisor")
        except VersionMismatch as exc:
            return SetupFailed(EXIT_SETUP_FAILED, "protocol.version", str(exc))
        channel.send(Hello(PROTOCOL_VERSION))
        config = channel.receive()
    except ProtocolError as exc:
        return SetupFailed(EXIT_SETUP_FAILED, "protocol.error",
                           f"bad message from supervisor: {exc}")
    if not isinstance(config, Config):
        return SetupFailed(EXIT_SETUP_FAILED, "protocol.unexpected",
                           f"init expected its config, got {config!r}")
    return config


def build_container(config: Config, spec: Spec, sys: Syscalls,
                    channel: Channel) -> tuple[list[str], list[str]]:
    """Join and enter the namespaces, set the host and domain names, bring up lo and build
    the root filesystem; return the namespaces and the mount points."""
    overlay = (config.overlay_upper, config.overlay_work) if config.overlay_upper else None
    plan = plan_root(spec, config.rootfs, chroot=config.chroot,  # reads the host's cgroups
                     nodev=config.nodev, cgroups=config.cgroups, overlay=overlay)
    flags = 0
    entered = []
    for name, flag in NAMESPACES:
        namespace = spec.linux.namespace(name)
        if namespace is None:
            continue
        entered.append(name)
        if namespace.path is not None:
            sys.setns(namespace.path, flag)
        elif flag != CLONE_NEWCGROUP or not _cgroup_namespace_waits(config, spec):
            flags |= flag
    sys.unshare(flags)
    logged: list[Value] = [*entered]
    channel.log("debug", "namespaces.entered", namespaces=logged)
    if flags & CLONE_NEWNET:
        sys.link_up("lo")
    if spec.hostname is not None:
        sys.sethostname(spec.hostname)
    if spec.domainname is not None:
        sys.setdomainname(spec.domainname)

    def mounted(target: str, fstype: str) -> None:
        channel.log("debug", "rootfs.mounted", target=target, fstype=fstype)

    mounts = apply_plan(plan, sys, config.rootfs, mounted)
    channel.log("debug", "rootfs.ready", mounts=list(mounts),
                root_change="chroot" if config.chroot else "pivot_root")
    return [*entered, "pid"], mounts


def explain(exc: SyscallError, rootfs: str) -> str:
    """One line for the user: what failed, on which path, and what to do about it."""
    where = f"{rootfs.rstrip('/')}{exc.path}" if exc.path.startswith("/") else exc.path
    if exc.operation == "create mount point":
        return (f"cannot create mount point {where}: {exc.strerror}; create that directory "
                f"in the rootfs {rootfs} yourself or make the rootfs writable")
    if exc.operation == "refuse symlinked mount point":
        return (f"{where} is a symbolic link: pyctr does not mount /proc, /sys or /dev "
                f"through one (it could lead out of the rootfs); replace it with a directory")
    if exc.operation == "mount overlay":
        return (f"cannot mount the overlay root over {rootfs} with the upper directory "
                f"{exc.path}: {exc.strerror}; the upper directory must be on a filesystem "
                f"overlayfs can write to (ext4, xfs, tmpfs; not overlayfs itself)")
    if exc.operation == "unshare" and exc.errno == errno_codes.EINVAL:
        return ("the kernel lacks one of the mount, UTS, IPC or network namespaces "
                "(unshare: Invalid argument); enable CONFIG_*_NS in the kernel")
    if exc.operation == "unshare":
        return f"cannot create namespaces ({exc}); run pyctr as root"
    return (f"container setup failed: {exc.operation} `{where}`: {exc.strerror}; check that "
            f"{rootfs} is a usable root filesystem")


def relay_and_reap(pid: int, channel: Channel, *, group: bool = True) -> int:
    """Forward every relayed signal to the workload's process group (or, without ``group``,
    its main process) and reap every child, orphans included, until the workload itself
    exits; return its wait status."""
    target = -pid if group else pid
    while True:
        info = signal.sigwaitinfo(WAITED_SIGNALS)
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(target, info.si_signo)
            except ProcessLookupError:
                pass  # the group is already gone; its exit is on its way to us
            continue
        while True:
            try:
                reaped, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if reaped == 0:
                break
            if reaped == pid:
                return status


def stop_remaining(stop_signal: int, timeout: float) -> tuple[int, int]:
    """After the main process's exit: send ``stop_signal`` to every other process of the
    container, give them ``timeout`` seconds to exit, then SIGKILL whoever is left and wait
    until all are gone. Returns (how many were running, how many needed SIGKILL).

    Init is PID 1 of the container's PID namespace, so ``kill(-1, ...)`` reaches every other
    process in it and nothing outside, and every orphan becomes init's child, to be reaped
    here. A daemon (``setsid sleep 300 &``) is one of them: it does not outlive the run."""
    _reap_zombies()
    remaining = _count_processes()
    if not _signal_all(stop_signal):
        return 0, 0
    deadline = time.monotonic() + timeout
    while True:
        _reap_zombies()
        if not _signal_all(0):
            return max(remaining, 1), 0
        left = deadline - time.monotonic()
        if left <= 0:
            break
        signal.sigtimedwait((signal.SIGCHLD,), min(left, 0.5))
    killed = _count_processes()
    _signal_all(signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    return max(remaining, killed, 1), max(killed, 1)


def _signal_all(signum: int) -> bool:
    """Send ``signum`` (0: only check) to every other process of the container; whether
    there was any."""
    try:
        os.kill(-1, signum)
    except ProcessLookupError:
        return False
    return True


def _reap_zombies() -> None:
    while True:
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if reaped == 0:
            return


def _count_processes() -> int:
    """The container's processes besides init, from its /proc (0 when it has none
    mounted: the caller counts at least one when a signal reached someone)."""
    try:
        return sum(1 for entry in os.listdir("/proc") if entry.isdigit() and entry != "1")
    except OSError:
        return 0
