"""Starting the init: a new PID namespace, a socketpair, and a child that becomes PID 1.

A process cannot move itself into a new PID namespace; ``unshare(CLONE_NEWPID)`` only makes
its *next* child the first process of one. So the supervisor unshares, starts the init, and
immediately switches ``pid_for_children`` back with ``setns`` on its own PID namespace, or
whatever it started later would also land in the container. The init enters the other
namespaces itself.

Two ways to start the init, one init:

- ``fork=True`` (the CLI): fork this very interpreter. The CLI does this before importing trio
  (~100 ms), so the container is built and the workload runs while the supervisor is still
  starting up. The child never returns into the caller's code.
- ``fork=False`` (the library, inside a running trio program): forking a process that may have
  other threads is unsafe, so a fresh interpreter runs ``python -m pyctr.init FD`` instead,
  started with posix_spawn.

Either way the Hello and Config messages are queued on the socket before the init exists, so
it never waits for the supervisor.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from pyctr.init.syscalls import CLONE_NEWPID, SyscallError, setns, unshare
from pyctr.protocol import Hello, ProtocolError, encode

from .errors import PyctrError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import ContainerConfig

_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_SOCKET_BUFFER = 4 << 20


class InitProcess:
    """A started init: its host pid, our end of the socketpair, and a pidfd to wait on."""

    __slots__ = ("pid", "pidfd", "sock", "started")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.pidfd = os.pidfd_open(pid)
        self.started = time.monotonic()

    def close(self) -> None:
        self.sock.close()
        os.close(self.pidfd)


def spawn_init(config: ContainerConfig, rootfs: str, *, fork: bool) -> InitProcess:
    """Start the init for ``config`` (``rootfs`` as returned by ``config.check()``)."""
    try:
        queued = [encode(Hello()), encode(config.to_message(rootfs))]
    except ProtocolError as exc:
        raise PyctrError(f"command line and environment are too large to send to init: {exc}",
                         error="config.too_large") from None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    for sock in (ours, theirs):
        for option in (_SO_SNDBUFFORCE, _SO_RCVBUFFORCE):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            except OSError:
                pass  # the default buffers still carry every ordinary message
    for data in queued:
        ours.send(data)
    try:
        pid = _start_in_new_pid_namespace(ours, theirs, fork=fork)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return InitProcess(pid, ours)


def _start_in_new_pid_namespace(ours: socket.socket, theirs: socket.socket, *, fork: bool) -> int:
    own_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            unshare(CLONE_NEWPID)
        except SyscallError as exc:
            raise PyctrError(f"cannot create a PID namespace ({exc}); run pyctr as root",
                             error="host.unshare_failed") from None
        try:
            if fork:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child is the init; it never returns
                    ours.close()
                    from pyctr.init import run

                    run(theirs)
                return pid
            os.set_inheritable(theirs.fileno(), True)
            argv = [sys.executable, "-m", "pyctr.init", str(theirs.fileno())]
            return os.posix_spawn(sys.executable, argv, os.environ)
        finally:
            setns(own_namespace, CLONE_NEWPID)
    finally:
        os.close(own_namespace)
