"""The host side of ``-t``: the user's terminal in raw mode, relayed to the container's pty.

The init opens the pseudo-terminal inside the container (on the container's own /dev/pts)
and sends its master side over the socket. The supervisor puts the user's terminal in raw
mode, so every key (Ctrl-C and Ctrl-Z included) goes to the program in the container, and
copies bytes both ways. It copies the window size at start and on SIGWINCH. It restores the
terminal however it ends; and because a process killed with SIGKILL cannot restore anything,
a tiny guard process forked before everything else holds the original settings and puts them
back when the supervisor's end of a pipe closes without a word.

The CLI uses this module before it forks the init, so it must stay light: the byte relays,
which need trio, live in ``relay.py``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import tty

from pyctr.linux import signal

_WINSIZE = struct.Struct("HHHH")


def window_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal on ``fd``, or (0, 0)."""
    try:
        rows, columns, _, _ = _WINSIZE.unpack(
            fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(_WINSIZE.size)))
    except OSError:
        return 0, 0
    return rows, columns


def copy_window_size(source: int, target: int) -> None:
    rows, columns = window_size(source)
    if rows and columns:
        fcntl.ioctl(target, termios.TIOCSWINSZ, _WINSIZE.pack(rows, columns, 0, 0))


class HostTerminal:
    """The user's terminal on ``fd`` (stdin): its settings as found, raw mode, restore."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)
        self.guard_pid: int | None = None
        self.guard_pipe: int | None = None

    def start_guard(self) -> None:
        """Fork the guard that restores the settings if we die without doing it ourselves.
        Called before the init is forked and before trio exists."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - seen through its effect on the terminal
            try:
                os.close(write_end)
                for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP,
                               signal.SIGTERM):
                    signal.signal(signum, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                os.setsid()  # not in the user's session: no SIGTTOU when it writes settings
                os.closerange(3, read_end)
                os.closerange(read_end + 1, 1 << 20)
                if os.read(read_end, 1) == b"":  # the supervisor died without a word
                    termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            finally:
                os._exit(0)
        os.close(read_end)
        self.guard_pid, self.guard_pipe = pid, write_end

    def raw(self) -> None:
        tty.setraw(self.fd, termios.TCSADRAIN)

    def restore(self) -> None:
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        except termios.error:
            pass  # the terminal is gone (hang-up): nothing left to restore

    def close(self) -> None:
        """Restore the settings and dismiss the guard."""
        self.restore()
        if self.guard_pipe is not None:
            os.write(self.guard_pipe, b"x")
            os.close(self.guard_pipe)
            self.guard_pipe = None
        if self.guard_pid is not None:
            os.waitpid(self.guard_pid, 0)
            self.guard_pid = None
