"""``python -I -m pyctr.init.template FD``: a clean interpreter that starts the library's inits.

A container's PID 1 must hold nothing of the program that runs it (a fork of a trio program
would carry its whole memory, its secrets included, into the container), and starting a fresh
interpreter for every container costs a Python start-up and the init's imports each time. So
the library starts this once: an interpreter with an empty environment that has imported the
init and nothing of the caller's, and forks an init whenever it is asked on FD.

Each request is one message with five descriptors: the init's end of its socketpair, the
init's stdin, stdout and stderr, then the write end of a pipe for the answer: the new init's
pid (a 4-byte int; a negative errno when it could not be started). An answer of its own per
request lets the library send a request, do other work while the clone happens, and collect
the answer later, from any thread, with no lock held in between. The child is made with
clone(CLONE_NEWPID |
CLONE_PARENT): PID 1 of a new PID namespace and a child of the library's process, not of this
one, so the library waits for it, reaps it and gets its resource usage as for any child, and
its parent-death signal follows the library. The template ends when the library closes FD.
"""

from __future__ import annotations

import errno as errno_codes
import json  # noqa: F401 - see below
import os
import struct
import sys

from pyctr.linux import socket
from pyctr.linux.syscalls import (
    CLONE_NEWPID,
    CLONE_PARENT,
    SyscallError,
    clone_process,
    hide_command_line_and_environment,
    set_process_name,
)

# What an init imports on its way to the workload, imported once here rather than in every
# init: json (above) and the spec reader, which reading the config's spec loads on first use
# (a fork of the CLI gets the spec already checked and never needs them).
from pyctr.spec import document  # noqa: F401

from .main import run

DESCRIPTORS = 5
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
            _close(fds)
            return  # the library has gone
        for fd in fds:
            os.set_inheritable(fd, False)
        if len(fds) != DESCRIPTORS:
            _close(fds)  # a malformed request: its answer pipe, if any, is closed unanswered
            continue
        answer = fds.pop()
        try:
            pid = clone_process(CLONE_NEWPID | CLONE_PARENT)
        except SyscallError as exc:
            pid = -(exc.errno or errno_codes.EIO)
        if pid == 0:  # pragma: no cover - the child is the init; it never returns
            sock.close()
            os.close(answer)
            for target, source in enumerate(fds[1:]):
                os.dup2(source, target)
            _close([fd for fd in fds[1:] if fd > 2])
            run(socket.socket(fileno=fds[0]), hidden=True)
        _close(fds)
        try:
            os.write(answer, _INT.pack(pid))
        except OSError:
            pass  # the library gave up on it; the init, if any, finds its socket closed
        os.close(answer)


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def main() -> None:
    descriptor = int(sys.argv[1])
    os.set_inheritable(descriptor, False)
    # Once here rather than in every init (each inherits this memory): the command line
    # its inits show, and no environment (posix_spawn gave none; this clears libc's too).
    hide_command_line_and_environment("pyctr-init")
    set_process_name("pyctr-template")
    serve(socket.socket(fileno=descriptor))


if __name__ == "__main__":
    main()
