"""Finding the command inside the container and starting it.

The child between fork and exec undoes what init (and CPython) changed for itself: signal
dispositions back to default (CPython ignores SIGPIPE and SIGXFSZ), an empty signal mask (init
blocks everything so it can sigwaitinfo), its own process group so signals can reach a whole
pipeline, and every descriptor but 0, 1 and 2 closed. An exec failure travels back to init
through a close-on-exec pipe: end-of-file on it means the exec succeeded.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import stat
import struct
import termios

from . import elf
from .cmodules import signal
from .syscalls import reset_signal_disposition

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
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
        search = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
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
    try:
        with open(path, "rb") as file:
            head = file.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None


def reset_signals() -> None:
    """Default dispositions and an empty mask, as a freshly booted process would have.
    Only for a child about to exec: it bypasses CPython's own signal bookkeeping."""
    for signum in range(1, signal.NSIG):
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            reset_signal_disposition(signum)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def open_terminal(rows: int, columns: int) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) from the container's own /dev/pts instance (call it
    after the root has changed), sized ``rows`` x ``columns`` when known."""
    master, slave = os.openpty()
    if rows > 0 and columns > 0:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def start(path: str, argv: list[str], env: dict[str, str], cwd: str,
          announce: Callable[[int], None], terminal: int | None = None) -> int:
    """Fork and exec the workload; return its pid once the exec has succeeded. The child
    calls ``announce(its pid)`` just before exec. With ``terminal`` (a pty's slave side) the
    child leads a new session with it as controlling terminal and standard streams; without,
    it leads a new process group."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits; seen through its behaviour
        step = 0
        try:
            os.close(read_end)
            if terminal is None:
                os.setpgid(0, 0)
            else:
                os.setsid()
                fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
                for target in (0, 1, 2):
                    os.dup2(terminal, target)
            reset_signals()
            step = 1
            os.chdir(cwd)
            step = 2
            try:
                announce(os.getpid())
            except OSError:
                pass  # the supervisor is gone; the parent-death signal is on its way
            os.closerange(3, write_end)
            os.closerange(write_end + 1, 1 << 20)
            os.execve(path, argv, env)
        except OSError as exc:
            os.write(write_end, struct.pack("ii", step, exc.errno or errno_codes.EIO))
        finally:
            os._exit(EXIT_NOT_FOUND)
    os.close(write_end)
    if terminal is None:
        try:
            os.setpgid(pid, pid)  # both sides set it, so no signal can race the child's call
        except OSError:
            pass  # the child has already exec'd (EACCES) or set it itself
    with os.fdopen(read_end, "rb") as report:
        failure = report.read()
    if not failure:
        return pid
    os.waitpid(pid, 0)
    step, err = struct.unpack("ii", failure[:8])
    if step == 1:
        raise WorkloadError(
            125, "workdir.unusable",
            f"cannot change to working directory {cwd}: {os.strerror(err)}; "
            "create it in the rootfs",
        )
    code = EXIT_NOT_FOUND if err == errno_codes.ENOENT else EXIT_CANNOT_EXECUTE
    raise WorkloadError(code, "command.exec_failed", f"exec {path}: {os.strerror(err)}")
