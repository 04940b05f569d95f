"""Published ports (``-p/--publish``): host sockets whose traffic a proxy in the supervisor
carries to the container's address on the bridge, as docker's userland proxy does.

Why a proxy in userland rather than NAT rules: the ports belong to the supervisor process, so
nothing outlives it (a SIGKILLed supervisor leaves no rule behind for a later container to
inherit), a taken port is found by ``bind`` before anything is started, loopback host
addresses work (DNAT to another namespace from 127.0.0.1 needs ``route_localnet``), and no
firewall tool is needed. The price is a copy through the supervisor and the client's address:
the container sees every connection coming from the host's end of the bridge (the gateway),
from an ephemeral port, exactly as behind docker-proxy.

Why 127.0.0.1 by default, where docker binds every address: publishing a development database
to the whole network by leaving out an address is the classic mistake, so reaching beyond the
host takes an explicit ``0.0.0.0`` (or ``::``, or one of the host's addresses). IPv6 sockets
are IPV6_V6ONLY, so ``0.0.0.0:80`` and ``[::]:80`` are two publishes that can coexist, and
``::`` never silently takes the IPv4 port too.

The split follows the CLI's start-up: ``parse_publish`` and ``bind_published`` run before the
init is forked, so this module imports nothing heavier than ``_socket`` at the top (the
listeners are ``_socket`` objects; the forked init closes every descriptor it did not ask
for). ``serve_published`` runs under trio later; it adopts the listeners as standard sockets
and drives them with ``wait_readable``/``wait_writable`` on non-blocking calls, like
``relay.py``, which keeps every drop and every errno in plain sight.

Everything that arrives is treated as hostile. Memory is bounded: at most one chunk in flight
per direction of a TCP connection (a slow reader on either side stops the reads from the
other, so the kernel's windows push back on the sender), at most ``MAX_TCP_CONNECTIONS`` per
port (further clients wait in the listen backlog), at most ``MAX_UDP_FLOWS`` client mappings
per UDP port (the least recently active one makes room), and one datagram buffer per
direction per UDP port. Peers that reset, half-close or vanish cost their own connection and
a debug record. A connection cut short (a peer's reset, a refused connect, the container's
end) is reset on the other side too, never closed, so that nobody takes the cut for the end of
the data; one that ends both ways is closed normally. Sends use MSG_NOSIGNAL: the CLI keeps
SIGPIPE blocked and forwards what it reads from its signalfd, so a SIGPIPE of ours would reach
the workload.
"""

from __future__ import annotations

import errno
import os

from pyctr.linux import socket

from .errors import PyctrError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import trio

DEFAULT_HOST_IP = "127.0.0.1"
PROTOCOLS = ("tcp", "udp")
LISTEN_BACKLOG = 4096
"""Connections the kernel queues for us (capped by net.core.somaxconn): where clients wait
while ``MAX_TCP_CONNECTIONS`` are open."""
MAX_TCP_CONNECTIONS = 1024
"""Open connections per published TCP port; each holds two descriptors. It protects the
supervisor, not the port: clients that open this many and sit idle keep others waiting, as
they would with any server."""
CHUNK_SIZE = 256 * 1024
"""The most one TCP direction holds in flight (allocated per read, so idle costs nothing)."""
UDP_IDLE_TIMEOUT = 60.0
"""Seconds without a datagram either way after which a UDP client's mapping is dropped."""
MAX_UDP_FLOWS = 1024
"""Client mappings per published UDP port; each holds a descriptor."""
UDP_BUFFER_SIZE = 65536  # the largest datagram that fits in an IP packet, and then some
ACCEPT_RETRY_DELAY = 0.1
"""Pause when accept fails for want of descriptors or memory: the connection stays queued,
so retrying at once would spin."""
_ACCEPT_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class PublishedPort:
    """One ``--publish``: ``host_ip:host_port`` on the host to ``container_port`` in the
    container, over ``protocol``. ``host_port`` 0 asks for any free port."""

    __slots__ = ("container_port", "host_ip", "host_port", "protocol")

    def __init__(self, *, container_port: int, host_port: int = 0,
                 host_ip: str = DEFAULT_HOST_IP, protocol: str = "tcp") -> None:
        self.host_ip = host_ip
        self.host_port = host_port
        self.container_port = container_port
        self.protocol = protocol

    def host_address(self) -> str:
        """``IP:PORT``, the IP in brackets for IPv6."""
        return f"{_bracketed(self.host_ip)}:{self.host_port}"

    def __str__(self) -> str:
        return f"{self.host_address()}->{self.container_port}/{self.protocol}"

    def __repr__(self) -> str:
        return (f"PublishedPort(container_port={self.container_port}, host_port="
                f"{self.host_port}, host_ip={self.host_ip!r}, protocol={self.protocol!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublishedPort):
            return NotImplemented
        return (self.host_ip, self.host_port, self.container_port, self.protocol) == (
            other.host_ip, other.host_port, other.container_port, other.protocol)

    __hash__ = None  # type: ignore[assignment]  # mutable: host_port is filled in


class Listener:
    """A bound (and, for TCP, listening) host socket for ``port``, whose ``host_port`` is the
    one actually bound. Non-blocking and close-on-exec."""

    __slots__ = ("port", "sock")

    def __init__(self, port: PublishedPort, sock: socket.socket) -> None:
        self.port = port
        self.sock = sock

    def __repr__(self) -> str:
        return f"Listener({self.port}, fd={self.sock.fileno()})"


def parse_publish(text: str) -> PublishedPort:
    """Docker's ``-p`` forms: ``CTR``, ``HOST:CTR``, ``IP:HOST:CTR``, ``IP::CTR`` and
    ``[IPv6]:HOST:CTR``, each with an optional ``/tcp`` or ``/udp``. Raises UsageError."""
    expected = "[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]"
    given = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."  # one line, escaped
    body, slash, protocol = text.partition("/")
    protocol = protocol.lower() if slash else "tcp"
    if protocol not in PROTOCOLS:
        raise UsageError(f"--publish {given}: unknown protocol {protocol[:20]!r}; expected tcp or "
                         f"udp ({expected})")
    ip: str | None = None
    if body.startswith("["):
        ip, bracket, rest = body[1:].partition("]")
        fields = rest[1:].split(":") if bracket and rest.startswith(":") else []
        if len(fields) != 2:
            raise UsageError(f"--publish needs {expected}, with an IPv6 address in brackets "
                             f"as [::1]:8080:80; got {given}")
        host, container = fields
    else:
        fields = body.split(":")
        container = fields[-1]
        host = fields[-2] if len(fields) > 1 else ""
        if len(fields) > 2:
            # Docker's rule: the last two fields are the ports, so an IPv6 address may even
            # go without brackets.
            ip = ":".join(fields[:-2])
            if not ip:
                raise UsageError(f"--publish {given}: the IP address is empty; expected "
                                 f"{expected}")
    if "-" in host or "-" in container:
        raise UsageError(f"--publish {given}: port ranges are not supported; give one "
                         f"--publish per port")
    container_port = _port_number(container)
    if container_port is None or container_port == 0:
        raise UsageError(f"--publish {given}: the container port must be a number from 1 to "
                         f"65535 ({expected})")
    host_port = _port_number(host) if host else 0
    if host_port is None:
        raise UsageError(f"--publish {given}: the host port must be a number from 1 to 65535, "
                         f"or 0 or left out for any free port ({expected})")
    if ip is not None:
        canonical = _canonical_ip(ip)
        if canonical is None:
            raise UsageError(f"--publish {given}: {ip[:50]!r} is not an IP address; expected one "
                             f"such as 0.0.0.0 or [::1]")
        ip = canonical
    return PublishedPort(container_port=container_port, host_port=host_port,
                         host_ip=ip or DEFAULT_HOST_IP, protocol=protocol)


def bind_published(ports: list[PublishedPort]) -> list[Listener]:
    """Bind every port now (and listen, for TCP), so that a taken one fails before anything
    is started. Raises UsageError for ports that cannot go together, PyctrError
    (``network.port_taken`` or ``network.publish_failed``) when one cannot be bound, having
    closed whatever it had bound by then."""
    _check_together(ports)
    listeners: list[Listener] = []
    try:
        for port in ports:
            listeners.append(_bind(port))
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners


async def serve_published(listeners: list[Listener], container_ip: str, log: Any) -> None:
    """Carry the listeners' traffic to ``container_ip`` until cancelled, then close the
    listeners and every connection. Takes the listeners over: ``listener.sock`` becomes the
    standard socket object serving it (closing either is harmless afterwards). Raises only
    ValueError for a ``container_ip`` that is not an IP address, and cancellation."""
    import socket as stdlib_socket

    import trio

    try:
        family = _family(container_ip)
        if family is None:
            raise ValueError(f"container_ip must be an IP address, got {container_ip!r}")
        for listener in listeners:
            # _socket has no accept() (only _accept, for the standard class to wrap), and the
            # type checker knows the standard class anyway; the descriptor stays the same.
            raw = listener.sock
            if type(raw) is not stdlib_socket.socket:
                listener.sock = stdlib_socket.socket(raw.family, raw.type, raw.proto,
                                                     raw.detach())
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                target = _Target(listener.port, family, container_ip, log)
                if listener.port.protocol == "tcp":
                    nursery.start_soon(_serve_tcp, listener.sock, target)
                else:
                    nursery.start_soon(_serve_udp, listener.sock, target)
            await trio.sleep_forever()
    finally:
        for listener in listeners:
            _close(listener.sock)


# --- parsing and binding (before the fork: no trio, no socket module) -----------------------


def _port_number(text: str) -> int | None:
    """0-65535 from plain ASCII digits (``int`` would take ``" 8_0"``), else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    number = int(text)
    return number if number <= 65535 else None


def _family(ip: str) -> int | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, ip)
        except (OSError, ValueError):  # ValueError: an embedded NUL
            continue
        return family
    return None


def _canonical_ip(ip: str) -> str | None:
    """The address as the kernel will report it (``::0001`` is ``::1``), or None."""
    family = _family(ip)
    return None if family is None else socket.inet_ntop(family, socket.inet_pton(family, ip))


def _bracketed(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _check(port: PublishedPort) -> int:
    """Fields a caller may have set by hand, checked as ``parse_publish`` would; the family."""
    family = _family(port.host_ip)
    problem = None
    if port.protocol not in PROTOCOLS:
        problem = f"unknown protocol {port.protocol!r}; expected tcp or udp"
    elif not 0 <= port.host_port <= 65535:
        problem = "the host port must be from 0 (any free port) to 65535"
    elif not 1 <= port.container_port <= 65535:
        problem = "the container port must be from 1 to 65535"
    elif family is None:
        problem = f"{port.host_ip!r} is not an IP address"
    if problem is not None or family is None:
        raise UsageError(f"cannot publish {port}: {problem}")
    return family


def _check_together(ports: list[PublishedPort]) -> None:
    """Two publishes of one host port: the second bind would fail, and blame the host."""
    seen: dict[tuple[int, str, int], list[tuple[bytes, PublishedPort]]] = {}
    for port in ports:
        family = _check(port)
        if port.host_port == 0:
            continue  # each gets a port of its own
        address = socket.inet_pton(family, port.host_ip)
        wildcard = bytes(len(address))
        same = seen.setdefault((family, port.protocol, port.host_port), [])
        for other_address, other in same:
            if address == other_address or wildcard in (address, other_address):
                raise UsageError(f"--publish {other} and --publish {port} both take "
                                 f"{port.host_address()}/{port.protocol}; choose another host "
                                 f"port for one of them")
        same.append((address, port))


def _bind(port: PublishedPort) -> Listener:
    family = _check(port)
    tcp = port.protocol == "tcp"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    except OSError as exc:
        raise _bind_error(port, exc) from None
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if tcp:
            # Lets a port be published again while the last run's connections are in
            # TIME_WAIT; unlike SO_REUSEPORT it never lets two listeners share a port. UDP
            # does without: there it would let two sockets bind the same port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((port.host_ip, port.host_port))
        if tcp:
            sock.listen(LISTEN_BACKLOG)
        bound = PublishedPort(container_port=port.container_port,
                              host_port=sock.getsockname()[1], host_ip=port.host_ip,
                              protocol=port.protocol)
    except OSError as exc:
        sock.close()
        raise _bind_error(port, exc) from None
    except BaseException:
        sock.close()
        raise
    return Listener(bound, sock)


def _bind_error(port: PublishedPort, exc: OSError) -> PyctrError:
    what = f"cannot publish {port.host_address()}/{port.protocol}"
    if exc.errno == errno.EADDRINUSE:
        return PyctrError(f"{what}: the port is already in use on the host; choose another "
                          f"host port", error="network.port_taken")
    if exc.errno == errno.EADDRNOTAVAIL:
        reason = (f"{port.host_ip} is not an address of this host; give one of its addresses, "
                  f"or 0.0.0.0 for all of them")
    elif exc.errno == errno.EAFNOSUPPORT:
        reason = "this host has no IPv6"
    elif exc.errno == errno.EACCES:
        reason = ("permission denied (ports below net.ipv4.ip_unprivileged_port_start need "
                  "CAP_NET_BIND_SERVICE)")
    else:
        reason = exc.strerror or str(exc)
    return PyctrError(f"{what}: {reason}", error="network.publish_failed")


# --- serving (under trio) ---------------------------------------------------------------------


class _Target:
    """Where one published port's traffic goes, and its log with warnings that say a
    problem once per episode rather than once per connection."""

    __slots__ = ("address", "family", "log", "published", "warned")

    def __init__(self, port: PublishedPort, family: int, container_ip: str, log: Any) -> None:
        self.published = str(port)
        self.family = family
        self.address = (container_ip, port.container_port)
        self.log = log
        self.warned: set[str] = set()

    def warn(self, episode: str, event: str, **fields: object) -> None:
        """A warning the first time, debug records after that until ``recovered``."""
        level = self.log.debug if episode in self.warned else self.log.warning
        self.warned.add(episode)
        level(event, published=self.published, **fields)

    def recovered(self, episode: str) -> None:
        self.warned.discard(episode)


def _describe(address: Any) -> str:
    """A peer's address for the log: ``ip:port``."""
    try:
        return f"{_bracketed(address[0])}:{address[1]}"
    except (TypeError, IndexError):
        return repr(address)


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror}" if name and exc.strerror else str(exc)


async def _serve_tcp(listener: socket.socket, target: _Target) -> None:
    import trio

    slots = trio.Semaphore(MAX_TCP_CONNECTIONS)
    try:
        async with trio.open_nursery() as nursery:
            while True:
                if slots.value == 0:
                    target.warn("full", "network.connections_full", limit=MAX_TCP_CONNECTIONS,
                                message="new connections wait until one closes")
                await slots.acquire()
                target.recovered("full")
                client, address = await _accept(listener, target)
                nursery.start_soon(_proxy_tcp, client, address, target, slots)
    except Exception as exc:  # a bug of ours: stop serving this port, not the supervisor
        target.log.warning("network.proxy_failed", published=target.published,
                           reason=repr(exc))


async def _accept(listener: socket.socket, target: _Target) -> tuple[socket.socket, Any]:
    import trio

    while True:
        try:
            client, address = listener.accept()
        except BlockingIOError:
            await trio.lowlevel.wait_readable(listener)
            continue
        except OSError as exc:
            if exc.errno in _ACCEPT_EXHAUSTED:
                target.warn("accept", "network.accept_failed", reason=_reason(exc))
                await trio.sleep(ACCEPT_RETRY_DELAY)
            else:  # ECONNABORTED and the like: that one connection is gone already
                target.log.debug("network.accept_failed", published=target.published,
                                 reason=_reason(exc))
                await trio.lowlevel.checkpoint()
            continue
        target.recovered("accept")
        return client, address


async def _proxy_tcp(client: socket.socket, address: Any, target: _Target,
                     slots: trio.Semaphore) -> None:
    import socket as stdlib_socket

    import trio

    upstream: socket.socket | None = None
    clean = False
    peer = _describe(address)
    try:
        client.setblocking(False)
        _no_delay(client)
        try:
            upstream = stdlib_socket.socket(target.family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            await _connect(upstream, target.address)
        except OSError as exc:
            target.warn("connect", "network.connection_failed", client=peer,
                        container=_describe(target.address), reason=_reason(exc))
            return  # the finally resets the client: nothing listens behind this port
        target.recovered("connect")
        _no_delay(upstream)
        failures: list[OSError] = []
        async with trio.open_nursery() as pair:
            pair.start_soon(_copy, client, upstream, pair.cancel_scope, failures)
            pair.start_soon(_copy, upstream, client, pair.cancel_scope, failures)
        if failures:
            target.log.debug("network.connection_reset", published=target.published,
                             client=peer, reason=_reason(failures[0]))
        else:
            clean = True
    except Exception as exc:  # a bug of ours: end this connection, not the supervisor
        target.log.warning("network.proxy_failed", published=target.published, client=peer,
                           reason=repr(exc))
    finally:
        # Anything but both directions ended: reset, so that neither side mistakes the cut
        # (the container ended, a peer reset, a refused connect) for the end of the data.
        for sock in (client, upstream):
            if sock is not None:
                if not clean:
                    _reset(sock)
                _close(sock)
        slots.release()


async def _connect(sock: socket.socket, address: tuple[str, int]) -> None:
    import trio

    code = sock.connect_ex(address)
    if code == errno.EINPROGRESS:
        await trio.lowlevel.wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def _copy(source: socket.socket, sink: socket.socket, scope: trio.CancelScope,
                failures: list[OSError]) -> None:
    """``source`` to ``sink`` until ``source`` ends, then end ``sink``'s writing side (the
    other direction goes on: a half-close). An error ends both directions."""
    import trio

    try:
        while True:
            waited = False
            try:
                data = source.recv(CHUNK_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(source)
                continue
            if not data:
                sink.shutdown(socket.SHUT_WR)
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[sink.send(view, socket.MSG_NOSIGNAL):]
                except BlockingIOError:  # the sink's reader is slower: stop reading the source
                    await trio.lowlevel.wait_writable(sink)
                    waited = True
            if not waited:
                await trio.lowlevel.checkpoint()  # a fast pair must not starve the others
    except OSError as exc:
        failures.append(exc)
        scope.cancel()


def _no_delay(sock: socket.socket) -> None:
    """The client's own segmentation and timing, not Nagle's on top of it."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # a connection already reset: the first read says so


def _reset(sock: socket.socket) -> None:
    """Make ``close`` send a reset (SO_LINGER with a zero timeout) instead of a FIN."""
    import struct

    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    """Close a socket trio may have waited on (its epoll registration goes first)."""
    import trio

    if sock.fileno() >= 0:
        trio.lowlevel.notify_closing(sock)
    sock.close()


class _Flow:
    """One UDP client: its own socket connected to the container, so that replies come back
    to it alone; ``scope``'s deadline is its idle expiry."""

    __slots__ = ("client", "scope", "upstream")

    def __init__(self, client: Any, upstream: socket.socket, scope: trio.CancelScope) -> None:
        self.client = client
        self.upstream = upstream
        self.scope = scope


async def _serve_udp(listener: socket.socket, target: _Target) -> None:
    import socket as stdlib_socket

    import trio

    # Insertion order is activity order (a flow is moved to the end on each datagram from its
    # client), so the first entry is the one to drop when the table is full.
    flows: dict[Any, _Flow] = {}
    incoming = memoryview(bytearray(UDP_BUFFER_SIZE))
    # One buffer for every flow's replies: each is read and sent with no await in between.
    replies = memoryview(bytearray(UDP_BUFFER_SIZE))
    try:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    size, client = listener.recvfrom_into(incoming)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(listener)
                    continue
                except OSError as exc:
                    target.log.debug("network.datagram_dropped", published=target.published,
                                     reason=_reason(exc))
                    await trio.lowlevel.checkpoint()
                    continue
                flow = flows.pop(client, None)
                if flow is not None and flow.scope.cancel_called:
                    flow = None  # expired, its task not done yet: it closes its own socket
                if flow is None:
                    if len(flows) >= MAX_UDP_FLOWS:
                        target.warn("flows", "network.udp_flows_full", limit=MAX_UDP_FLOWS,
                                    message="the least recently active client's mapping "
                                            "makes room")
                        flows.pop(next(iter(flows))).scope.cancel()
                    try:
                        upstream = stdlib_socket.socket(target.family, socket.SOCK_DGRAM)
                    except OSError as exc:
                        target.warn("socket", "network.datagram_dropped",
                                    client=_describe(client), reason=_reason(exc))
                        await trio.lowlevel.checkpoint()
                        continue
                    target.recovered("socket")
                    flow = _Flow(client, upstream, trio.CancelScope())
                    try:
                        upstream.setblocking(False)
                        upstream.connect(target.address)  # UDP: sets the peer, sends nothing
                    except OSError as exc:
                        upstream.close()
                        target.warn("connect", "network.connection_failed",
                                    client=_describe(client), reason=_reason(exc))
                        await trio.lowlevel.checkpoint()
                        continue
                    nursery.start_soon(_udp_replies, listener, flow, flows, replies, target)
                flows[client] = flow
                flow.scope.deadline = trio.current_time() + UDP_IDLE_TIMEOUT
                try:
                    flow.upstream.send(incoming[:size], socket.MSG_NOSIGNAL)
                except OSError as exc:  # a full queue, or ICMP unreachable from a past one
                    target.log.debug("network.datagram_dropped", published=target.published,
                                     client=_describe(client), reason=_reason(exc))
                await trio.lowlevel.checkpoint()
    except Exception as exc:  # a bug of ours: stop serving this port, not the supervisor
        target.log.warning("network.proxy_failed", published=target.published,
                           reason=repr(exc))


async def _udp_replies(listener: socket.socket, flow: _Flow, flows: dict[Any, _Flow],
                       replies: memoryview, target: _Target) -> None:
    """The container's datagrams for one client, until the mapping expires or is dropped."""
    import trio

    peer = _describe(flow.client)
    target.log.debug("network.udp_flow_opened", published=target.published, client=peer)
    try:
        with flow.scope:
            while True:
                try:
                    size = flow.upstream.recv_into(replies)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(flow.upstream)
                    continue
                except OSError as exc:  # ECONNREFUSED: nothing listens on the container's port
                    target.warn("connect", "network.connection_failed", client=peer,
                                container=_describe(target.address), reason=_reason(exc))
                    await trio.lowlevel.checkpoint()
                    continue
                target.recovered("connect")
                flow.scope.deadline = trio.current_time() + UDP_IDLE_TIMEOUT
                try:
                    listener.sendto(replies[:size], socket.MSG_NOSIGNAL, flow.client)
                except OSError as exc:
                    target.log.debug("network.datagram_dropped", published=target.published,
                                     client=peer, reason=_reason(exc))
                await trio.lowlevel.checkpoint()
    except Exception as exc:  # a bug of ours: drop this mapping, not the supervisor
        target.log.warning("network.proxy_failed", published=target.published, client=peer,
                           reason=repr(exc))
    finally:
        if flows.get(flow.client) is flow:
            del flows[flow.client]
        _close(flow.upstream)
        target.log.debug("network.udp_flow_closed", published=target.published, client=peer)
