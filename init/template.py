"""``python -I -m pyctr.init.template FD``: a clean interpreter that starts the library's inits.

A container's PID 1 must hold nothing of the program that runs it (a fork of a trio program
would carry its whole memory, its secrets included, into the container), and starting a fresh
interpreter for every container costs a Python start-up and the init's imports each time. So
the library starts this once: an interpreter with an empty environment that has imported the
init and nothing of the caller's, and forks an init whenever it is asked on FD.

Each request is one message with four descriptors: the init's end of its socketpair, then the
init's stdin, stdout and stderr. The answer is the new init's pid (a 4-byte int; a negative
errno when it could not be started). The child is made with clone(CLONE_NEWPID |
CLONE_PARENT): PID 1 of a new PID namespace and a child of the library's process, not of this
one, so the library waits for it, reaps it and gets its resource usage as for any child, and
its parent-death signal follows the library. The template ends when the library closes FD.
"""

from __future__ import annotations

import errno as errno_codes
import os
import struct
import sys

from pyctr.linux import socket
from pyctr.linux.syscalls import CLONE_NEWPID, CLONE_PARENT, SyscallError, clone_process

# What an init imports on its way to the workload, imported once here rather than in every
# init: the spec reader, which ``Spec.from_value`` loads on first use (a fork of the CLI gets
# the spec already checked and never needs it).
from pyctr.spec import document  # noqa: F401

from .main import run

DESCRIPTORS = 4
_INT = struct.Struct("i")


def serve(sock: socket.socket) -> None:
    """Answer requests on ``sock`` until it is closed."""
    space = socket.CMSG_SPACE(DESCRIPTORS * _INT.size)
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(16, space)
        except InterruptedError:
            continue
        fds = [fd for level, kind, payload in ancillary
               if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
               for (fd,) in _INT.iter_unpack(payload[:len(payload) - len(payload) % 4])]
        if not data:
            return  # the library has gone
        for fd in fds:
            os.set_inheritable(fd, False)
        if len(fds) != DESCRIPTORS:
            _close(fds)
            sock.send(_INT.pack(-errno_codes.EINVAL))
            continue
        try:
            pid = clone_process(CLONE_NEWPID | CLONE_PARENT)
        except SyscallError as exc:
            _close(fds)
            sock.send(_INT.pack(-(exc.errno or errno_codes.EIO)))
            continue
        if pid == 0:  # pragma: no cover - the child is the init; it never returns
            sock.close()
            for target, source in enumerate(fds[1:]):
                os.dup2(source, target)
            _close([fd for fd in fds[1:] if fd > 2])
            run(socket.socket(fileno=fds[0]))
        _close(fds)
        sock.send(_INT.pack(pid))


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


if __name__ == "__main__":
    descriptor = int(sys.argv[1])
    os.set_inheritable(descriptor, False)
    serve(socket.socket(fileno=descriptor))
