"""Finding the command inside the container and starting it.

The workload must not inherit what init (and CPython) changed for itself: it starts with every
signal disposition at default (CPython ignores SIGPIPE and SIGXFSZ, a careless parent may have
ignored more), an empty signal mask (init blocks everything so it can sigwaitinfo), in its own
process group so signals can reach a whole pipeline, and with no descriptor but 0, 1 and 2
(init closed what it inherited, and every descriptor Python opens is close-on-exec). It runs
as the spec's user, with the spec's umask and rlimits.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import stat
import struct

from pyctr.linux import signal
from pyctr.linux.seccomp import install_filter
from pyctr.linux.spawn import spawn
from pyctr.linux.syscalls import (
    CAPABILITIES,
    MS_BIND,
    RLIMITS,
    LinuxSyscalls,
    capability_masks,
    drop_bounding,
    keep_capabilities,
    last_capability,
    reset_signal_disposition,
    set_ambient,
    set_capabilities,
    set_no_new_privileges,
    set_rlimit,
)
from pyctr.protocol import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED

from . import elf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyctr.spec.model import Process

    _Steps = list[tuple[str, Callable[..., object], tuple[object, ...]]]
    """What a process must do to become the workload: (what, call, arguments), in order."""

# The workload starts with every signal at its default disposition (all but the two that
# cannot change, 32 and 33 included) and none blocked.
_DEFAULT_SIGNALS = tuple(sorted(frozenset(range(1, 65)) - {signal.SIGKILL, signal.SIGSTOP}))
# termios' TIOCSWINSZ without loading termios (an extension module) for every container: the
# generic value, and PowerPC's own.
_TIOCSWINSZ = 0x80087467 if os.uname().machine.startswith("ppc") else 0x5414
REBUILD_HINT = ("rebuild it with rootfs-scripts/build-rootfs, which copies the loader and "
                "every library ldd names")


class WorkloadError(Exception):
    """The command cannot be started. ``exit_code`` follows docker: 126 or 127."""

    def __init__(self, exit_code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.error = error
        self.message = message


def resolve(command: str, env: dict[str, str], rootfs: str) -> str:
    """The path of ``command`` in the current (container) root, as execvp would find it."""
    if "/" in command:
        candidates = [command]
    else:
        search = env.get("PATH", os.defpath)  # execvp's, for a spec without PATH
        candidates = [f"{directory or '.'}/{command}" for directory in search.split(":")]
    denied = None
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        raise WorkloadError(
            EXIT_CANNOT_EXECUTE, "command.not_executable",
            f"cannot execute {denied} in rootfs {rootfs}: it is a directory or lacks execute "
            f"permission; chmod +x it in the rootfs",
        )
    where = f"at {command}" if "/" in command else f"in PATH ({env.get('PATH', '')})"
    raise WorkloadError(
        EXIT_NOT_FOUND, "command.not_found",
        f"command {command!r} not found {where} in rootfs {rootfs}; add it to the rootfs "
        f"(rootfs-scripts/build-rootfs) or give its full path",
    )


def check_runnable(path: str, env: dict[str, str], rootfs: str) -> None:
    """Raise WorkloadError when ``path`` exists but its loader or libraries do not."""
    interpreter = _script_interpreter(path)
    if interpreter is not None:
        if not os.path.exists(interpreter):
            raise WorkloadError(
                EXIT_NOT_FOUND, "command.interpreter_missing",
                f"cannot run script {path}: its interpreter {interpreter} is missing from "
                f"rootfs {rootfs}; add it to the rootfs",
            )
        return
    loader, libraries = elf.missing_pieces(path, env)
    if loader is not None:
        raise WorkloadError(
            EXIT_NOT_FOUND, "command.loader_missing",
            f"cannot run {path}: its ELF interpreter {loader} is missing from rootfs {rootfs}; "
            f"{REBUILD_HINT}",
        )
    if libraries:
        raise WorkloadError(
            EXIT_NOT_FOUND, "command.libraries_missing",
            f"cannot run {path}: shared libraries missing from rootfs {rootfs}: "
            f"{', '.join(libraries)}; {REBUILD_HINT}",
        )


def _script_interpreter(path: str) -> str | None:
    # os.open, not open(): the io stack (a buffered reader, a terminal check) is most of the
    # cost of reading 256 bytes.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        head = os.pread(fd, 256, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None


def open_terminal(rows: int, columns: int) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) from the container's own /dev/pts instance (call it
    after the root has changed), sized ``rows`` x ``columns`` when known."""
    master, slave = os.openpty()
    if rows > 0 and columns > 0:
        fcntl.ioctl(master, _TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def start(path: str, argv: list[str], env: dict[str, str], process: Process,
          terminal: int | None = None, seccomp: tuple[bytes, int] | None = None, *,
          init_may_hold_filter: bool = False) -> int:
    """Start the workload and return its pid once the exec has succeeded. With ``terminal``
    (a pty's slave side) it leads a new session with that terminal as its controlling
    terminal and standard streams; without, it leads a new process group. The working
    directory is init's own (see ``enter_workdir``). ``seccomp``: a compiled filter and its
    flags; ``init_may_hold_filter``: it allows everything init does once the workload runs
    (pyctr's default profile does), so init may install it on itself.

    Two ways, one result. When init itself can become what the workload inherits
    (``_spawnable``: a root workload, capabilities as docker gives them, no rlimits, no OOM
    score, a filter init may hold), init narrows itself and posix_spawn starts the workload:
    the C library's vfork copies no memory, where a fork of a Python process copies every
    page the child touches before its exec. Otherwise a fork, whose child becomes what the
    spec's ``process`` says (rlimits, OOM score, groups and ids, capabilities, umask) before
    its exec; it reports a failure of any of it, or of the exec, on a close-on-exec pipe, and
    an end of file with nothing on it means the exec succeeded.
    """
    if _spawnable(process, seccomp, init_may_hold_filter):
        return _spawn(path, argv, env, process, terminal, seccomp)
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    steps = _process_steps(process, seccomp)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits, and never returns
        try:
            os.close(report_read)
            _become_workload(path, argv, env, process, terminal, steps)
        except WorkloadError as exc:
            _report(report_write, exc.exit_code, exc.error, exc.message)
        except BaseException as exc:
            _report(report_write, EXIT_SETUP_FAILED, "workload.setup_failed",
                    f"cannot start {path}: {exc}")
        os._exit(EXIT_SETUP_FAILED)
    os.close(report_write)
    try:
        report = b""
        while chunk := os.read(report_read, 4096):
            report += chunk
    finally:
        os.close(report_read)
    if not report:
        return pid
    os.waitpid(pid, 0)
    code, error, message = report.decode("utf-8", "replace").split("\0", 2)
    raise WorkloadError(int(code), error, message)


def _spawnable(process: Process, seccomp: tuple[bytes, int] | None,
               init_may_hold_filter: bool) -> bool:
    """Whether init can take on, for itself, all that the workload must start with, so that
    the workload needs nothing but an exec (see ``_spawn``)."""
    if seccomp is not None and not init_may_hold_filter:
        return False
    user = process.user
    if user.uid != 0 or process.rlimits or process.oom_score_adj is not None \
            or os.getresuid() != (0, 0, 0) or os.getresgid() != (user.gid,) * 3 \
            or os.getgroups() != user.additional_gids:
        return False
    caps = process.capabilities
    if caps is None:
        return True
    # An exec by uid 0 gives permitted = effective = bounding | inheritable (capabilities(7),
    # "root"): the spec's sets must be exactly that, with nothing ambient.
    bounding = set(caps.bounding)
    return (not caps.ambient and bounding == set(caps.permitted) == set(caps.effective)
            and bounding.issuperset(caps.inheritable))


def _spawn(path: str, argv: list[str], env: dict[str, str], process: Process,
           terminal: int | None, seccomp: tuple[bytes, int] | None) -> int:
    """Start the workload with posix_spawn from an init that has become what the workload
    inherits: the bounding and inheritable sets (init keeps its own permitted and effective
    sets, which no exec of its own will ever use), no_new_privs and the seccomp filter, all
    of which only take from init what it no longer needs. Raises WorkloadError."""
    caps = process.capabilities
    steps: _Steps = []
    if caps is not None:
        kept = {CAPABILITIES[name] for name in caps.bounding}
        effective, permitted = capability_masks()
        last = last_capability()
        steps += [("drop capabilities from the bounding set", drop_bounding,
                   ([number for number in range(last + 1) if number not in kept],)),
                  ("set inheritable capabilities", set_capabilities,
                   (effective, permitted, _mask(caps.inheritable)))]
    if process.no_new_privileges:
        steps.append(("set no_new_privs", set_no_new_privileges, ()))
    if seccomp is not None:
        steps.append(("install the seccomp filter", install_filter, seccomp))
    _take(steps, process)
    try:
        # Opened by name by the new session's leader, the terminal becomes its controlling
        # terminal.
        return spawn(os.fsencode(path), [os.fsencode(arg) for arg in argv],
                     [os.fsencode(f"{name}={value}") for name, value in env.items()],
                     terminal=None if terminal is None else os.fsencode(os.ttyname(terminal)))
    except OSError as exc:
        raise _exec_failed(path, exc) from None
    except ValueError as exc:  # as the fork's child reports it
        raise WorkloadError(EXIT_SETUP_FAILED, "workload.setup_failed",
                            f"cannot start {path}: {exc}") from None


def _take(steps: _Steps, process: Process) -> None:
    """Make each of ``steps`` (what, call, arguments) on this process, then the umask.
    Raises WorkloadError naming the step that failed."""
    for what, call, args in steps:
        try:
            call(*args)
        except OSError as exc:
            raise WorkloadError(EXIT_SETUP_FAILED, "process.setup_failed",
                                f"cannot {what} for the workload: {exc.strerror}") from None
    os.umask(0o022 if process.user.umask is None else process.user.umask)


def _exec_failed(path: str, exc: OSError) -> WorkloadError:
    """How an exec that failed is reported (docker's 127 for a missing file, else 126)."""
    code = EXIT_NOT_FOUND if exc.errno == errno_codes.ENOENT else EXIT_CANNOT_EXECUTE
    return WorkloadError(code, "command.exec_failed", f"exec {path}: {exc.strerror}")


def _report(fd: int, code: int, error: str, message: str) -> None:
    try:
        os.write(fd, f"{code}\0{error}\0{message}".encode("utf-8", "replace")[:4096])
    except OSError:
        pass  # init is gone: nobody is left to tell


def _process_steps(process: Process, seccomp: tuple[bytes, int] | None = None,
                   ) -> _Steps:
    """What the child must do to become ``process``, in the order runc and crun use (what
    needs privilege before the ids change), decided here in the parent and without the calls
    that would change nothing: in the child every line of Python costs pages copied from
    the parent (a fork of a Python process is ~0.4 ms here before anything runs).

    The seccomp filter comes last, after no_new_privs, so that it need allow only the exec;
    without no_new_privs the kernel takes a filter only from a holder of CAP_SYS_ADMIN, so it
    comes first, and must then allow the calls that change ids and capabilities too."""
    steps: _Steps = []
    if seccomp is not None and not process.no_new_privileges:
        steps.append(("install the seccomp filter", install_filter, seccomp))
    if process.oom_score_adj is not None:
        steps.append(("set oomScoreAdj", _write,
                      ("/proc/self/oom_score_adj", str(process.oom_score_adj))))
    steps += [(f"set {rlimit.type}", set_rlimit, (RLIMITS[rlimit.type], rlimit.soft,
                                                  rlimit.hard)) for rlimit in process.rlimits]
    caps = process.capabilities
    user = process.user
    if caps is not None:
        # The bounding set first, while CAP_SETPCAP is still effective; the permitted set
        # kept across the change of uid, then set as the spec says.
        kept = {CAPABILITIES[name] for name in caps.bounding}
        steps.append(("drop capabilities from the bounding set", drop_bounding,
                      ([number for number in range(last_capability() + 1)
                        if number not in kept],)))
        if user.uid != 0:
            steps.append(("keep capabilities across the change of uid", keep_capabilities,
                          (True,)))
    if os.getgroups() != user.additional_gids:
        steps.append(("setgroups", os.setgroups, (user.additional_gids,)))
    if os.getresgid() != (user.gid,) * 3:
        steps.append((f"set gid {user.gid}", os.setresgid, (user.gid,) * 3))
    if os.getresuid() != (user.uid,) * 3:
        steps.append((f"set uid {user.uid}", os.setresuid, (user.uid,) * 3))
    if caps is not None:
        steps.append(("set capabilities", set_capabilities,
                      (_mask(caps.effective), _mask(caps.permitted), _mask(caps.inheritable))))
        unraisable = caps.unraisable()
        steps.append(("set ambient capabilities", set_ambient,
                      ([CAPABILITIES[name] for name in caps.ambient
                        if name not in unraisable],)))
    if process.no_new_privileges:
        steps.append(("set no_new_privs", set_no_new_privileges, ()))
        if seccomp is not None:
            steps.append(("install the seccomp filter", install_filter, seccomp))
    return steps


def _mask(names: list[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name]
    return mask


def _become_workload(path: str, argv: list[str], env: dict[str, str], process: Process,
                     terminal: int | None,
                     steps: _Steps) -> None:
    """In the child: the process group or session, the ``steps``, the umask and the signal
    mask (init reset every disposition at its start: see ``reset_ignored_signals``), then
    exec."""
    if terminal is None:
        os.setpgid(0, 0)
    else:
        os.setsid()
        # Opened by name by a session leader without one, it becomes the controlling terminal.
        slave = os.open(os.ttyname(terminal), os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(slave, target)
        if slave > 2:
            os.close(slave)
    _take(steps, process)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        raise _exec_failed(path, exc) from None


def reset_ignored_signals() -> None:
    """Give every ignored signal its default action, in init itself (call it once the signals
    are blocked), so that the workload inherits no ignored one: caught signals go back to
    their defaults at the exec by themselves, ignored ones would stay ignored across it.
    Python knows which are ignored (it reads every disposition at start-up and records its
    own changes: SIGPIPE, SIGXFSZ), except 32 and 33, which it leaves alone: those are always
    reset. Init collects the blocked ones with sigwaitinfo whatever their action."""
    for signum in _DEFAULT_SIGNALS:
        if signum in (32, 33) or signal.getsignal(signum) == signal.SIG_IGN:
            reset_signal_disposition(signum)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_workdir(cwd: str) -> None:
    """Make ``cwd`` (inside the container, after the root changed) the directory the workload
    starts in, creating it when missing, as docker does."""
    try:
        try:
            os.chdir(cwd)
        except FileNotFoundError:
            os.makedirs(cwd, 0o755, exist_ok=True)
            os.chdir(cwd)
    except OSError as exc:
        raise WorkloadError(
            EXIT_SETUP_FAILED, "workdir.unusable",
            f"cannot use working directory {cwd}: {exc.strerror}; create it in the rootfs",
        ) from None


def bind_console(terminal: int) -> None:
    """Make /dev/console the workload's terminal, as runc does, when the container's /dev
    has the placeholder for it (the spec mounts a /dev)."""
    if os.path.isfile("/dev/console"):
        LinuxSyscalls().mount(os.ttyname(terminal), "/dev/console", None, MS_BIND, None)
