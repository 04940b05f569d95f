"""The supervisor's end of the socketpair: one frame at a time, with what the kernel adds to
it (the sender's pid, descriptors), waiting with trio or not at all. Decoding and what a
message means are the supervision's (``supervise``); everything here is read from a socket
the workload may have taken over, so nothing is kept that was not asked for: descriptors
arrive close-on-exec and are closed by whoever does not take them, a control message the
kernel had to cut is reported (``Ancillary.truncated``), and an empty datagram from a peer
that is still connected is handed on as an (undecodable) empty frame rather than taken for
the end of the conversation.
"""

from __future__ import annotations

import os
import select
import socket
import struct

import trio

from pyctr.protocol.codec import HEADER_SIZE, frame_size

_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_ANCILLARY_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size) + socket.CMSG_SPACE(4 * 4)


class Ancillary:
    """What came with a frame: the sender's pid (SO_PASSCRED) and descriptors, which the
    receiver closes (``close``) unless it takes them."""

    __slots__ = ("fds", "pid", "truncated")

    def __init__(self, raw: list[tuple[int, int, bytes]], flags: int = 0) -> None:
        self.pid: int | None = None
        self.fds: list[int] = []
        self.truncated = bool(flags & socket.MSG_CTRUNC)
        """The kernel cut the control data (more descriptors than we make room for: it closed
        the rest). Never the case for a message init is meant to send."""
        for level, kind, data in raw:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_CREDENTIALS:
                self.pid = int(_CREDENTIALS.unpack_from(data)[0])
            elif kind == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % 4
                self.fds += list(struct.unpack(f"{usable // 4}i", data[:usable]))

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


async def receive(sock: trio.socket.SocketType) -> tuple[bytes, Ancillary] | None:
    """The next frame, or None once the init's end is closed. Peeked first, to receive each
    frame into a buffer of its own size."""
    head = await sock.recv(HEADER_SIZE, socket.MSG_PEEK)
    if not head and _peer_closed(sock.fileno()):
        return None
    data, raw, flags, _ = await sock.recvmsg(frame_size(head), _ANCILLARY_SPACE,
                                             socket.MSG_CMSG_CLOEXEC)
    return data, Ancillary(raw, flags)


def receive_now(sock: socket.socket) -> tuple[bytes, Ancillary] | None:
    """The next frame if one is there already, else (or once the init's end is closed)
    None."""
    try:
        head = sock.recv(HEADER_SIZE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        if not head and _peer_closed(sock.fileno()):
            return None
        data, raw, flags, _ = sock.recvmsg(frame_size(head), _ANCILLARY_SPACE,
                                           socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    except BlockingIOError:
        return None
    return data, Ancillary(raw, flags)


def _peer_closed(fd: int) -> bool:
    """Whether nothing more can come: the init's end is closed (or shut down for writing).
    A receive that returns nothing means that, or an empty datagram from a peer still there:
    SOCK_SEQPACKET carries those too."""
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)
    return any(events & (select.POLLHUP | select.POLLRDHUP) for _, events in poller.poll(0))
