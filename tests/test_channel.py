"""Init's end of the socket: messages out, and only the log events the supervisor will show.
Needs no root."""

from __future__ import annotations

import socket
import struct

import pytest

from pyctr.init.channel import Channel
from pyctr.protocol import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    Hello,
    Log,
    MalformedMessage,
    OversizedMessage,
    TruncatedMessage,
    decode,
    encode,
)


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


def test_each_message_is_received_whole_and_bad_frames_stay_bad() -> None:
    # The receiver peeks at the length and receives just that (and a byte more): a big
    # message must still arrive whole, a frame carrying more than it declares or shorter
    # than its header must fail to decode, and none of it may spill into the next message.
    big = Log("2026-12-02T00:00:00Z", "info", "big", {"text": "x" * (MAX_MESSAGE_SIZE - 200)})
    small = Hello(PROTOCOL_VERSION)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    with ours, theirs:
        channel = Channel(theirs)
        ours.send(encode(big))
        ours.send(encode(small) + b"extra")
        ours.send(b"\0\0")
        ours.send(encode(small))
        ours.send(struct.pack("!I", MAX_MESSAGE_SIZE + 1) + b"y" * 10)
        ours.send(encode(small))
        assert channel.receive() == big
        with pytest.raises(MalformedMessage):
            channel.receive()
        with pytest.raises(TruncatedMessage):
            channel.receive()
        assert channel.receive() == small
        with pytest.raises(OversizedMessage):
            channel.receive()
        assert channel.receive() == small
        ours.close()
        assert channel.receive() is None
