"""Init's end of the socketpair: blocking send and receive of protocol messages, and the
log events init sends instead of writing logs itself."""

from __future__ import annotations

import os
import select
import struct

from pyctr.linux import socket
from pyctr.protocol import (
    LOG_LEVELS,
    Log,
    Message,
    decode,
    encode,
    utc_timestamp,
)
from pyctr.protocol.codec import HEADER_SIZE, frame_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.min_level = 0
        """Index in LOG_LEVELS of the least severe event worth sending (from the config)."""
        self.detached = False
        """Nobody listens any more (``detach``): whatever init would send is dropped."""

    def detach(self) -> None:
        """Close our end: a detached init (the OCI runtime's, whose ``create`` has exited)
        runs on with nobody to tell."""
        self.detached = True
        self.sock.close()

    def send(self, message: Message) -> None:
        if self.detached:
            return
        # SOCK_SEQPACKET: one send is one message, delivered whole or not at all.
        self.sock.send(encode(message))

    def send_for(self, message: Message, pid: int) -> None:
        """Send ``message`` with credentials naming process ``pid`` (ours to name: root may,
        and the receiver's kernel translates it into the receiver's PID namespace). Without
        that privilege it goes with our own credentials, which the supervisor recognises."""
        if self.detached:
            return
        credentials = struct.pack("iII", pid, os.getuid(), os.getgid())
        try:
            self.sock.sendmsg([encode(message)],
                              [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)])
        except PermissionError:
            self.send(message)

    def send_with_descriptors(self, message: Message, fds: list[int]) -> None:
        """Send ``message`` with open file descriptors (SCM_RIGHTS) riding along."""
        rights = struct.pack(f"{len(fds)}i", *fds)
        self.sock.sendmsg([encode(message)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])

    def receive(self) -> Message | None:
        """The next message, or None when the supervisor has closed its end."""
        head = self.sock.recv(HEADER_SIZE, socket.MSG_PEEK)
        if not head:
            return None
        data = self.sock.recv(frame_size(head))
        if not data:
            return None
        return decode(data)

    def peer_gone(self) -> bool:
        """True when the supervisor's end is closed (it died), even if messages it sent
        before dying are still queued for us."""
        poller = select.poll()
        poller.register(self.sock.fileno(), 0)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def log(self, level: str, event: str, **fields: Value) -> None:
        if self.detached:
            return
        if level not in LOG_LEVELS or LOG_LEVELS.index(level) >= self.min_level:
            self.send(Log(utc_timestamp(), level, event, fields))

    def show_from(self, level: str) -> None:
        """Send only events at ``level`` or more severe from now on."""
        self.min_level = LOG_LEVELS.index(level) if level in LOG_LEVELS else 0
