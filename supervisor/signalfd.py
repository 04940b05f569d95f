"""Receiving signals through a signalfd, to know who sent each one.

trio's signal receiver tells which signal arrived but not from whom. The CLI keeps the
forwarded signals blocked from before it forks the init (so none is lost while trio is still
being imported) and reads them here with their sender's pid and uid, which the
``signal.forwarded`` record carries ("from where"). A signal the kernel generated itself,
such as the terminal's Ctrl-C, has sender pid 0.

This only works when the signals are blocked in every thread of the process, which the CLI can
promise and a library caller cannot; the library uses trio's receiver instead.
"""

from __future__ import annotations

import os
import struct

from pyctr.linux import libc

_SFD_CLOEXEC = 0o2000000
_SFD_NONBLOCK = 0o4000
_SIGINFO_SIZE = 128
# struct signalfd_siginfo starts: u32 signo, s32 errno, s32 code, u32 pid, u32 uid.
_HEAD = struct.Struct("=IiiII")


class SignalInfo:
    __slots__ = ("code", "sender_pid", "sender_uid", "signum")

    def __init__(self, signum: int, code: int, sender_pid: int, sender_uid: int) -> None:
        self.signum, self.code, self.sender_pid, self.sender_uid = (
            signum, code, sender_pid, sender_uid
        )


def open_signalfd(signals: tuple[int, ...]) -> int:
    """A non-blocking signalfd for ``signals`` (which the caller keeps blocked)."""
    fd = libc.signalfd(-1, libc.sigset(signals), _SFD_CLOEXEC | _SFD_NONBLOCK)
    if fd < 0:
        err = libc.errno()
        raise OSError(err, f"signalfd: {os.strerror(err)}")
    return fd


def read_signals(fd: int) -> list[SignalInfo]:
    """Every signal waiting on ``fd``; empty when none is."""
    try:
        data = os.read(fd, _SIGINFO_SIZE * 32)
    except BlockingIOError:
        return []
    infos = []
    for offset in range(0, len(data) - _SIGINFO_SIZE + 1, _SIGINFO_SIZE):
        signum, _, code, pid, uid = _HEAD.unpack_from(data, offset)
        infos.append(SignalInfo(signum, code, pid, uid))
    return infos


def describe_sender(pid: int) -> str:
    """A short name for a signal's sender: its command, or ``kernel`` for pid 0."""
    if pid == 0:
        return "kernel"
    try:
        with open(f"/proc/{pid}/comm") as file:
            return file.read().strip()
    except OSError:
        return "exited"
