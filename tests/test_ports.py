"""Published ports (``--publish``): parsing docker's forms, binding before the container
starts, and the userland proxy. Needs no container and no root: servers of the test's own on
loopback stand in for the container, and every socket stays on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from pyctr.supervisor import ports
from pyctr.supervisor.errors import PyctrError, UsageError
from pyctr.supervisor.ports import (
    Listener,
    PublishedPort,
    bind_published,
    parse_publish,
    serve_published,
)

LIMIT = 5  # seconds any one test may take; a hang fails instead of blocking the run
CONTAINER_IP = "127.0.0.1"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


requires_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


class RecordingLog:
    """A structlog-style logger that keeps ``(level, event, fields)``."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.records.append((level, event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        self._record("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, fields)

    def levels(self, event: str) -> list[str]:
        return [level for level, name, _ in self.records if name == event]

    async def wait_for(self, event: str, count: int = 1) -> None:
        while len(self.levels(event)) < count:
            await trio.sleep(0.01)


@pytest.fixture(autouse=True)
def no_descriptor_leaks() -> Iterator[None]:
    """Every socket the module made is closed by the end of the test."""

    def open_sockets() -> set[str]:
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # the directory listing's own descriptor
            if target.startswith("socket:"):
                found.add(f"{fd} -> {target}")
        return found

    before = open_sockets()
    yield
    assert open_sockets() <= before


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("80", ("127.0.0.1", 0, 80, "tcp")),
    ("8080:80", ("127.0.0.1", 8080, 80, "tcp")),
    (":80", ("127.0.0.1", 0, 80, "tcp")),
    ("0:80", ("127.0.0.1", 0, 80, "tcp")),
    ("127.0.0.1:8080:80", ("127.0.0.1", 8080, 80, "tcp")),
    ("0.0.0.0:8080:80", ("0.0.0.0", 8080, 80, "tcp")),
    ("192.168.1.5::80", ("192.168.1.5", 0, 80, "tcp")),
    ("[::1]:8080:80", ("::1", 8080, 80, "tcp")),
    ("[::]::53/udp", ("::", 0, 53, "udp")),
    ("[0:0::0001]:1:65535", ("::1", 1, 65535, "tcp")),  # canonical, as the kernel says it
    ("::1:8080:80", ("::1", 8080, 80, "tcp")),  # docker's rule: the last two are the ports
    ("53/udp", ("127.0.0.1", 0, 53, "udp")),
    ("53/UDP", ("127.0.0.1", 0, 53, "udp")),
    ("65535:1/tcp", ("127.0.0.1", 65535, 1, "tcp")),
    ("10.0.0.1:0080:080/udp", ("10.0.0.1", 80, 80, "udp")),
])
def test_parse_forms(text: str, expected: tuple[str, int, int, str]) -> None:
    port = parse_publish(text)
    assert (port.host_ip, port.host_port, port.container_port, port.protocol) == expected


@pytest.mark.parametrize(("text", "complaint"), [
    ("", "container port must be a number from 1 to 65535"),
    ("0", "container port must be a number from 1 to 65535"),
    ("65536", "container port must be a number from 1 to 65535"),
    ("8080:", "container port must be a number"),
    ("8080:http", "container port must be a number"),
    (" 80", "container port must be a number"),
    ("+80", "container port must be a number"),
    ("8_0", "container port must be a number"),
    ("\u0663", "container port must be a number"),  # an Arabic-Indic three
    ("9" * 5000, "container port must be a number"),
    ("65536:80", "host port must be a number from 1 to 65535, or 0 or left out"),
    ("x:80", "host port must be a number"),
    ("8000-8010:80", "port ranges are not supported"),
    ("8000-8010:8000-8010", "port ranges are not supported"),
    ("80-81", "port ranges are not supported"),
    ("1.2.3:80:80", "'1.2.3' is not an IP address"),
    ("localhost:80:80", "'localhost' is not an IP address"),
    ("256.0.0.1:80:80", "is not an IP address"),
    ("01.2.3.4:80:80", "is not an IP address"),
    ("[fe80::1%eth0]:80:80", "is not an IP address"),
    ("[1.2.3.4.5]:80:80", "is not an IP address"),
    ("::80", "the IP address is empty"),
    ("[::1]:80", "an IPv6 address in brackets"),
    ("[::1]80:80", "an IPv6 address in brackets"),
    ("[::1:80:80", "an IPv6 address in brackets"),
    ("[::1]:1:2:3", "an IPv6 address in brackets"),
    ("80/sctp", "unknown protocol 'sctp'; expected tcp or udp"),
    ("80/", "unknown protocol ''"),
    ("80/tcp/udp", "unknown protocol 'tcp/udp'"),
])
def test_parse_errors(text: str, complaint: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_publish(text)
    message = str(caught.value)
    assert message.startswith("--publish ")
    assert complaint in message
    assert "\n" not in message and len(message) < 300, "one line, even for a long value"
    assert caught.value.error == "usage.invalid"


def test_str_is_docker_ps_style() -> None:
    assert str(parse_publish("8080:80")) == "127.0.0.1:8080->80/tcp"
    assert str(parse_publish("[::1]:53:5353/udp")) == "[::1]:53->5353/udp"
    assert parse_publish("80") == PublishedPort(container_port=80)
    assert "host_port=0" in repr(parse_publish("80"))


# --- binding --------------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing holds right now (loopback only)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def close_all(listeners: list[Listener]) -> None:
    for listener in listeners:
        listener.sock.close()


def test_port_zero_gets_a_real_port() -> None:
    asked = [PublishedPort(container_port=80), PublishedPort(container_port=53, protocol="udp")]
    listeners = bind_published(asked)
    try:
        for listener, port in zip(listeners, asked, strict=True):
            bound = listener.sock.getsockname()[1]
            assert listener.port.host_port == bound != 0
            assert port.host_port == 0, "the caller's PublishedPort is left as it was"
            assert str(listener.port) == f"127.0.0.1:{bound}->{port.container_port}/" \
                                         f"{port.protocol}"
            assert listener.sock.gettimeout() == 0.0, "non-blocking"
            assert not os.get_inheritable(listener.sock.fileno()), "close-on-exec"
        assert listeners[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert listeners[1].sock.type == socket.SOCK_DGRAM
    finally:
        close_all(listeners)


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_taken_port_fails_and_releases_the_others(protocol: str) -> None:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as taker:
        taker.bind(("127.0.0.1", 0))
        if protocol == "tcp":
            taker.listen()
        taken = taker.getsockname()[1]
        others = [free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)]
        asked = [PublishedPort(container_port=1, host_port=others[0]),
                 PublishedPort(container_port=2, host_port=others[1], protocol="udp"),
                 PublishedPort(container_port=3),
                 PublishedPort(container_port=4, host_port=taken, protocol=protocol)]
        with pytest.raises(PyctrError) as caught:
            bind_published(asked)
    assert caught.value.error == "network.port_taken"
    assert str(caught.value) == (f"cannot publish 127.0.0.1:{taken}/{protocol}: the port is "
                                 f"already in use on the host; choose another host port")
    # Nothing of the call stays bound: the same ports can be taken again at once.
    for port, kind in zip(others, (socket.SOCK_STREAM, socket.SOCK_DGRAM), strict=True):
        with socket.socket(socket.AF_INET, kind) as again:
            again.bind(("127.0.0.1", port))


def test_an_address_of_another_host_fails() -> None:
    with pytest.raises(PyctrError) as caught:
        bind_published([PublishedPort(container_port=80, host_ip="192.0.2.1")])  # TEST-NET-1
    assert caught.value.error == "network.publish_failed"
    assert "192.0.2.1 is not an address of this host" in str(caught.value)


@pytest.mark.parametrize("texts", [
    ["127.0.0.1:{0}:80", "127.0.0.1:{0}:81"],
    ["{0}:80", "127.0.0.1:{0}:81"],
    ["0.0.0.0:{0}:80", "127.0.0.1:{0}:81"],  # the wildcard takes every address's port
    ["[::1]:{0}:80", "[0::1]:{0}:80"],
])
def test_one_host_port_twice_is_a_usage_error(texts: list[str]) -> None:
    port = free_port()
    with pytest.raises(UsageError, match=f"both take .*:{port}/tcp"):
        bind_published([parse_publish(text.format(port)) for text in texts])


def test_the_same_port_number_may_go_to_tcp_and_udp() -> None:
    port = free_port()
    listeners = bind_published([parse_publish(f"{port}:53"), parse_publish(f"{port}:53/udp"),
                                parse_publish("53"), parse_publish("53")])
    close_all(listeners)
    assert len(listeners) == 4


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"protocol": "sctp"}, "unknown protocol 'sctp'"),
    ({"host_port": 70000}, "host port must be from 0"),
    ({"container_port": 0}, "container port must be from 1"),
    ({"host_ip": "localhost"}, "'localhost' is not an IP address"),
])
def test_ports_made_by_hand_are_checked(fields: dict[str, Any], complaint: str) -> None:
    port = PublishedPort(container_port=80)
    for name, value in fields.items():
        setattr(port, name, value)
    with pytest.raises(UsageError, match=complaint):
        bind_published([port])


# --- the TCP proxy ---------------------------------------------------------------------------

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve_tcp(handler: Handler, *, task_status: trio.TaskStatus[int]) -> None:
    """A stand-in for the container's server; a peer's reset ends only that connection."""
    listeners = await trio.open_tcp_listeners(0, host=CONTAINER_IP)

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except trio.BrokenResourceError:
            pass

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(guarded, listeners)


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)
        await stream.send_eof()


@asynccontextmanager
async def published(*asked: PublishedPort, log: RecordingLog) -> AsyncIterator[list[Listener]]:
    """The proxy for ``asked``, to the container at CONTAINER_IP, until the block ends."""
    listeners = bind_published(list(asked))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_published, listeners, CONTAINER_IP, log)
        yield listeners
        nursery.cancel_scope.cancel()


async def connect(listener: Listener) -> trio.SocketStream:
    return await trio.open_tcp_stream(listener.port.host_ip, listener.port.host_port)


async def read_to_end(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return bytes(data)


async def test_tcp_echo_through_the_proxy() -> None:
    log = RecordingLog()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, echo)
            async with published(PublishedPort(container_port=server), log=log) as listeners:
                stream = await connect(listeners[0])
                async with stream:
                    await stream.send_all(b"hello")
                    assert await stream.receive_some() == b"hello"
            servers.cancel_scope.cancel()
    assert not [record for record in log.records if record[0] != "debug"]


async def test_a_large_transfer_both_ways_is_intact() -> None:
    payload = os.urandom(8 * 1024 * 1024)
    received = bytearray()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, echo)
            async with published(PublishedPort(container_port=server),
                                 log=RecordingLog()) as listeners:
                stream = await connect(listeners[0])

                async def send() -> None:
                    for start in range(0, len(payload), 1 << 20):
                        await stream.send_all(payload[start:start + (1 << 20)])
                    await stream.send_eof()

                async with stream, trio.open_nursery() as both:
                    both.start_soon(send)
                    received += await read_to_end(stream)
            servers.cancel_scope.cancel()
    assert len(received) == len(payload) and received == payload


async def test_half_close_reaches_the_server_and_the_reply_comes_back() -> None:
    async def count_then_reply(stream: trio.SocketStream) -> None:
        async with stream:
            total = len(await read_to_end(stream))  # until the client's half-close
            await stream.send_all(f"got {total} bytes".encode())

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, count_then_reply)
            async with published(PublishedPort(container_port=server),
                                 log=RecordingLog()) as listeners:
                stream = await connect(listeners[0])
                async with stream:
                    await stream.send_all(b"x" * 100_000)
                    await stream.send_eof()
                    assert await read_to_end(stream) == b"got 100000 bytes"
            servers.cancel_scope.cancel()


async def test_many_concurrent_connections() -> None:
    replies: dict[int, bytes] = {}
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, echo)
            async with published(PublishedPort(container_port=server),
                                 log=RecordingLog()) as listeners:

                async def one(index: int) -> None:
                    stream = await connect(listeners[0])
                    async with stream:
                        await trio.sleep(0.05)  # all of them open at once
                        await stream.send_all(b"client %d" % index)
                        await stream.send_eof()
                        replies[index] = await read_to_end(stream)

                async with trio.open_nursery() as clients:
                    for index in range(200):
                        clients.start_soon(one, index)
            servers.cancel_scope.cancel()
    assert replies == {index: b"client %d" % index for index in range(200)}


async def test_connections_past_the_limit_wait_for_a_free_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "MAX_TCP_CONNECTIONS", 2)
    log = RecordingLog()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, echo)
            async with published(PublishedPort(container_port=server), log=log) as listeners:
                first, second = await connect(listeners[0]), await connect(listeners[0])
                for stream in (first, second):
                    await stream.send_all(b"in")
                    assert await stream.receive_some() == b"in"
                third = await connect(listeners[0])  # the kernel's backlog takes it
                await third.send_all(b"waiting")
                with trio.move_on_after(0.2):
                    await third.receive_some()
                    pytest.fail("a third connection was served past the limit")
                await first.aclose()
                assert await third.receive_some() == b"waiting"
                await second.aclose()
                await third.aclose()
            servers.cancel_scope.cancel()
    assert log.levels("network.connections_full")[0] == "warning"


async def test_a_slow_reader_holds_the_sender_back() -> None:
    total = 64 * 1024 * 1024
    sent = 0

    async def flood(stream: trio.SocketStream) -> None:
        nonlocal sent
        block = b"z" * (1 << 20)
        async with stream:
            while sent < total:
                await stream.send_all(block)
                sent += len(block)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, flood)
            async with published(PublishedPort(container_port=server),
                                 log=RecordingLog()) as listeners:
                stream = await connect(listeners[0])
                async with stream:
                    await trio.sleep(0.3)  # not reading: only the kernel's buffers fill
                    assert sent < total // 2, "the proxy read on without a reader"
                    assert len(await read_to_end(stream)) == total
            servers.cancel_scope.cancel()


async def test_a_refused_connect_closes_the_client() -> None:
    log = RecordingLog()
    with socket.socket() as closed_port, trio.fail_after(LIMIT):
        closed_port.bind((CONTAINER_IP, 0))  # held, never listening: connects are refused
        target = closed_port.getsockname()[1]
        async with published(PublishedPort(container_port=target), log=log) as listeners:
            for _ in range(2):
                stream = await connect(listeners[0])
                async with stream:
                    # A reset, not an end of file: nothing was there to answer at all.
                    with pytest.raises(trio.BrokenResourceError):
                        await stream.receive_some()
    # Warned once, then quieter while the container keeps refusing.
    assert log.levels("network.connection_failed") == ["warning", "debug"]
    fields = next(f for _, name, f in log.records if name == "network.connection_failed")
    assert fields["container"] == f"127.0.0.1:{target}"
    assert fields["reason"].startswith("ECONNREFUSED")


async def test_a_client_reset_ends_only_its_own_connection() -> None:
    ended = trio.Event()

    async def note_the_end(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await read_to_end(stream)
            finally:
                ended.set()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, note_the_end)
            echoing = await servers.start(serve_tcp, echo)
            async with published(PublishedPort(container_port=server),
                                 PublishedPort(container_port=echoing),
                                 log=RecordingLog()) as listeners:
                stream = await connect(listeners[0])
                await stream.send_all(b"something")
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
                await stream.aclose()  # a reset, not a FIN
                await ended.wait()
                other = await connect(listeners[1])
                async with other:
                    await other.send_all(b"still here")
                    assert await other.receive_some() == b"still here"
            servers.cancel_scope.cancel()


async def test_cancellation_closes_the_listener_and_the_connections() -> None:
    log = RecordingLog()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, echo)
            listeners = bind_published([PublishedPort(container_port=server)])
            host_port = listeners[0].port.host_port
            with trio.CancelScope() as proxy:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve_published, listeners, CONTAINER_IP, log)
                    stream = await connect(listeners[0])
                    await stream.send_all(b"ping")
                    assert await stream.receive_some() == b"ping"
                    proxy.cancel()
            assert listeners[0].sock.fileno() == -1
            async with stream:
                # A reset, so that the cut is not mistaken for the end of the data.
                with pytest.raises(trio.BrokenResourceError):
                    await stream.receive_some()
            # The port is free for the next run at once.
            again = bind_published([PublishedPort(container_port=server, host_port=host_port)])
            close_all(again)
            servers.cancel_scope.cancel()


@requires_ipv6
async def test_an_ipv6_host_address_reaches_an_ipv4_container() -> None:
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_tcp, echo)
            async with published(parse_publish(f"[::1]::{server}"),
                                 log=RecordingLog()) as listeners:
                assert listeners[0].sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                assert str(listeners[0].port).startswith("[::1]:")
                stream = await connect(listeners[0])
                async with stream:
                    await stream.send_all(b"six to four")
                    assert await stream.receive_some() == b"six to four"
            servers.cancel_scope.cancel()


# --- the UDP proxy ---------------------------------------------------------------------------


async def serve_udp(seen: list[Any], *, task_status: trio.TaskStatus[int]) -> None:
    """A stand-in for the container's UDP service: replies to each sender, noting who."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((CONTAINER_IP, 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, sender = await sock.recvfrom(65536)
            seen.append(sender)
            await sock.sendto(b"re:" + data, sender)


def udp_client() -> trio.socket.SocketType:
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def ask(client: trio.socket.SocketType, listener: Listener, data: bytes) -> bytes:
    await client.sendto(data, (listener.port.host_ip, listener.port.host_port))
    reply, sender = await client.recvfrom(65536)
    assert sender == (listener.port.host_ip, listener.port.host_port)
    return reply


async def test_udp_replies_go_back_to_each_client() -> None:
    seen: list[Any] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_udp, seen)
            async with published(PublishedPort(container_port=server, protocol="udp"),
                                 log=RecordingLog()) as listeners:
                with udp_client() as one, udp_client() as two:
                    for _ in range(3):
                        assert await ask(one, listeners[0], b"one") == b"re:one"
                        assert await ask(two, listeners[0], b"two") == b"re:two"
                    big = os.urandom(60_000)
                    assert await ask(two, listeners[0], big) == b"re:" + big
            servers.cancel_scope.cancel()
    # Each client has a mapping (a source port) of its own, kept across its datagrams.
    assert len(set(seen)) == 2 and len(seen) == 7


async def test_idle_udp_mappings_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "UDP_IDLE_TIMEOUT", 0.2)
    log = RecordingLog()
    seen: list[Any] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_udp, seen)
            async with published(PublishedPort(container_port=server, protocol="udp"),
                                 log=log) as listeners:
                with udp_client() as client:
                    for _ in range(5):  # activity keeps the mapping
                        assert await ask(client, listeners[0], b"a") == b"re:a"
                        await trio.sleep(0.08)
                    assert log.levels("network.udp_flow_opened") == ["debug"]
                    await log.wait_for("network.udp_flow_closed")  # idle: gone
                    assert await ask(client, listeners[0], b"b") == b"re:b"
                    assert len(log.levels("network.udp_flow_opened")) == 2
            servers.cancel_scope.cancel()


async def test_udp_mappings_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "MAX_UDP_FLOWS", 2)
    log = RecordingLog()
    seen: list[Any] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as servers:
            server = await servers.start(serve_udp, seen)
            async with published(PublishedPort(container_port=server, protocol="udp"),
                                 log=log) as listeners:
                clients = [udp_client() for _ in range(3)]
                try:
                    for index, client in enumerate(clients):
                        assert await ask(client, listeners[0], b"%d" % index) == b"re:%d" % index
                    await log.wait_for("network.udp_flow_closed")  # the oldest made room
                    assert await ask(clients[0], listeners[0], b"back") == b"re:back"
                finally:
                    for client in clients:
                        client.close()
            servers.cancel_scope.cancel()
    assert log.levels("network.udp_flows_full")[0] == "warning"
    assert len(log.levels("network.udp_flow_opened")) == 4


async def test_udp_to_a_closed_container_port_is_logged() -> None:
    log = RecordingLog()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((CONTAINER_IP, 0))
        target = holder.getsockname()[1]
    # Released: nothing receives there, so the kernel answers with port unreachable.
    with trio.fail_after(LIMIT):
        async with published(PublishedPort(container_port=target, protocol="udp"),
                             log=log) as listeners:
            with udp_client() as client:
                await client.sendto(b"anyone?", (CONTAINER_IP, listeners[0].port.host_port))
                await log.wait_for("network.connection_failed")
    assert log.levels("network.connection_failed")[0] == "warning"


async def test_serving_nothing_waits_for_cancellation() -> None:
    with trio.move_on_after(0.05) as scope:
        await serve_published([], CONTAINER_IP, RecordingLog())
    assert scope.cancelled_caught


async def test_a_container_ip_that_is_not_an_address_is_a_bug() -> None:
    listeners = bind_published([PublishedPort(container_port=80)])
    with pytest.raises(ValueError, match="container_ip"):
        await serve_published(listeners, "container", RecordingLog())
    assert listeners[0].sock.fileno() == -1

