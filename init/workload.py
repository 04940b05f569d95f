"""Finding the command inside the container and starting it.

The workload must not inherit what init (and CPython) changed for itself: it starts with every
signal disposition at default (CPython ignores SIGPIPE and SIGXFSZ, a careless parent may have
ignored more), an empty signal mask (init blocks everything so it can sigwaitinfo), in its own
process group so signals can reach a whole pipeline, and with no descriptor but 0, 1 and 2
(init closed what it inherited, and every descriptor Python opens is close-on-exec).
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import stat
import struct

from pyctr.linux import libc
from pyctr.linux.cmodules import signal

from . import elf

EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
# posix_spawn flags (glibc's spawn.h; SETSID is a GNU extension) and the opaque structs'
# sizes, rounded up (glibc x86_64: 336 and 80 bytes).
_SPAWN_SETPGROUP = 0x02
_SPAWN_SETSIGDEF = 0x04
_SPAWN_SETSIGMASK = 0x08
_SPAWN_SETSID = 0x80
_ATTRIBUTES_SIZE = 1024
_FILE_ACTIONS_SIZE = 256
# The workload starts with every signal at its default disposition (all but the two that
# cannot change) and none blocked.
_DEFAULT_SIGNALS = libc.sigset(frozenset(range(1, 65)) - {signal.SIGKILL, signal.SIGSTOP})
_NO_SIGNALS = libc.sigset(())
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


def open_terminal(rows: int, columns: int) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) from the container's own /dev/pts instance (call it
    after the root has changed), sized ``rows`` x ``columns`` when known."""
    master, slave = os.openpty()
    if rows > 0 and columns > 0:
        fcntl.ioctl(master, _TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def start(path: str, argv: list[str], env: dict[str, str], terminal: int | None = None) -> int:
    """Start the workload and return its pid once the exec has succeeded. With ``terminal``
    (a pty's slave side) it leads a new session with that terminal as its controlling
    terminal and standard streams; without, it leads a new process group.

    posix_spawn, not fork and exec: glibc starts the child with CLONE_VM|CLONE_VFORK, so
    init's page tables are not copied (init may be a fork of a large trio program: that copy
    and its teardown at the exec were the largest cost of a short container) and none of
    init's Python runs in the child. Called through libc rather than ``os.posix_spawn``,
    whose signal sets go through sigaddset(): that refuses 32 and 33, and glibc's child then
    leaves those two ignored across the exec. The working directory is init's own (see
    ``enter_workdir``): posix_spawn cannot change it.
    """
    attributes, actions = libc.buffer(_ATTRIBUTES_SIZE), libc.buffer(_FILE_ACTIONS_SIZE)
    libc.posix_spawnattr_init(attributes)
    libc.posix_spawn_file_actions_init(actions)
    try:
        flags = _SPAWN_SETSIGDEF | _SPAWN_SETSIGMASK
        if terminal is None:
            flags |= _SPAWN_SETPGROUP
            libc.posix_spawnattr_setpgroup(attributes, 0)
        else:
            # Opened by name after setsid (which comes before the file actions), the terminal
            # becomes the new session's controlling terminal.
            flags |= _SPAWN_SETSID
            libc.posix_spawn_file_actions_addopen(actions, 0, os.fsencode(os.ttyname(terminal)),
                                                  os.O_RDWR, 0)
            libc.posix_spawn_file_actions_adddup2(actions, 0, 1)
            libc.posix_spawn_file_actions_adddup2(actions, 0, 2)
        libc.posix_spawnattr_setflags(attributes, flags)
        libc.posix_spawnattr_setsigdefault(attributes, _DEFAULT_SIGNALS)
        libc.posix_spawnattr_setsigmask(attributes, _NO_SIGNALS)
        pid = libc.int_cell()
        err = libc.posix_spawn(
            pid, os.fsencode(path), actions, attributes,
            libc.strings([os.fsencode(arg) for arg in argv]),
            libc.strings([os.fsencode(f"{key}={value}") for key, value in env.items()]))
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attributes)
    if err:
        code = EXIT_NOT_FOUND if err == errno_codes.ENOENT else EXIT_CANNOT_EXECUTE
        raise WorkloadError(code, "command.exec_failed", f"exec {path}: {os.strerror(err)}")
    return int(pid[0])


def enter_workdir(cwd: str) -> None:
    """Make ``cwd`` (inside the container) the directory the workload starts in."""
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise WorkloadError(
            125, "workdir.unusable",
            f"cannot change to working directory {cwd}: {exc.strerror}; create it in the rootfs",
        ) from None
