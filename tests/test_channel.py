"""Init's end of the socket: messages out, and only the log events the supervisor will show.
Needs no root."""

from __future__ import annotations

import socket

from pyctr.init.channel import Channel
from pyctr.protocol import Log, decode


def received(sock: socket.socket) -> list[str]:
    events = []
    sock.setblocking(False)
    try:
        while True:
            message = decode(sock.recv(1 << 16))
            assert isinstance(message, Log)
            events.append(message.event)
    except BlockingIOError:
        return events


def test_only_events_at_the_shown_level_or_above_are_sent() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        channel = Channel(theirs)
        channel.log("debug", "before.config")  # everything goes until the config says
        channel.show_from("info")
        channel.log("debug", "mount.detail")
        channel.log("info", "worth.showing")
        channel.log("error", "went.wrong")
        assert received(ours) == ["before.config", "worth.showing", "went.wrong"]
