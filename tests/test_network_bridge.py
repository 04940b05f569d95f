"""``--network bridge`` and ``--network host``, for real: network namespaces, the bridge,
veth pairs, leases, NAT with nft, and what is swept after a supervisor is SIGKILLed.

The tests use a bridge, subnet and nft table of their own (``pyctrt<pid>``,
10.223.<n>.0/24), and talk only to namespaces they make: two containers to each other, the
host to a container, and a container through the host's NAT to an "uplink" namespace of the
tests' (198.51.100.0/24) standing in for the internet. After each test ``net`` runs
``cleanup()`` and checks that nothing of the tests' is left: bridge, veth, nft table, state
directory, namespace descriptor. IPv4 forwarding, which NAT turns on, is set back as it was.
What the module did inside a namespace is checked from outside it, with ``nsenter`` and
``ip``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import held_leases_anywhere

from pyctr.linux.syscalls import CLONE_NEWNET, setns, unshare
from pyctr.supervisor import PyctrError
from pyctr.supervisor import network as network_module

# Not conftest's session bridge (pyctrt<pid>), which other tests may keep up meanwhile.
TEST_BRIDGE = f"pyctrtb{os.getpid() % 100000}"
TEST_SUBNET = f"10.223.{os.getpid() % 250 + 1}.0/24"
UPLINK_VETH = f"pyctrtu{os.getpid() % 100000}"
# The start of the test subnet's veths' names (pv + the address in hex).
TEST_PREFIX = f"{int.from_bytes(socket.inet_aton(TEST_SUBNET.split('/')[0]), 'big'):08x}"[:6]
UPLINK_HOST, UPLINK_SERVER = "198.51.100.1", "198.51.100.2"
FORWARD = "/proc/sys/net/ipv4/ip_forward"


def thread_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def in_thread(function: Callable[[], object]) -> object:
    """``function()``'s result (or exception), run in a thread of its own: a thread that
    enters a namespace and stays there ends with it."""
    box: list[object] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            box.append(function())
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
    return box[0]


def socket_in(netns_path: str, kind: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket made in the namespace at ``netns_path``: it works there whoever uses it."""

    def make() -> socket.socket:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        return socket.socket(socket.AF_INET, kind, proto)

    made = in_thread(make)
    assert isinstance(made, socket.socket)
    return made


def new_netns() -> int:
    """A descriptor of a new network namespace of the tests'."""

    def make() -> int:
        unshare(CLONE_NEWNET)
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    fd = in_thread(make)
    assert isinstance(fd, int)
    return fd


def ip_in(netns_path: str, *args: str) -> Any:
    """``ip -j ARGS`` run inside the namespace, parsed."""
    done = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-j", *args],
                          capture_output=True, text=True, check=True, timeout=10)
    return json.loads(done.stdout or "[]")


def host_links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def netns_fds() -> list[str]:
    """This process's descriptors that hold a network namespace."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            found.append(fd)
    return found


NFT = shutil.which("nft")
requires_nft = pytest.mark.skipif(NFT is None, reason="needs nft (apt-get install nftables; "
                                                      "CI installs it)")


def nft_table_exists() -> bool:
    if NFT is None:
        return False  # nobody could have made one
    return subprocess.run([NFT, "list", "table", "ip", f"pyctr_{TEST_BRIDGE}"],
                          capture_output=True, check=False).returncode == 0


def attach(net: ModuleType, name: str, hostname: str = "") -> network_module.Attachment:
    """attach_bridge, checking the thread is back in its own namespace afterwards."""
    before = thread_netns()
    try:
        attachment: network_module.Attachment = net.attach_bridge(name, hostname or name)
        return attachment
    finally:
        assert thread_netns() == before, "attach_bridge left the thread in another netns"


def leftovers(net: ModuleType) -> list[str]:
    found = [f"link {name}" for name in host_links()
             if name == TEST_BRIDGE or name.startswith(f"pv{TEST_PREFIX}")]
    if nft_table_exists():
        found.append("nft table")
    if os.path.exists(os.path.join(net.STATE_DIR, TEST_BRIDGE)):
        found.append(f"state directory {os.path.join(net.STATE_DIR, TEST_BRIDGE)}")
    found += [f"netns fd {fd}" for fd in netns_fds()]
    return found


def skip_unless_root() -> None:
    """The tests of files run anywhere; the rest make namespaces and links."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, links, nft)")


@pytest.fixture(scope="module", autouse=True)
def forwarding() -> Iterator[None]:
    """NAT turns IPv4 forwarding on for the host, as docker does; put it back after, unless
    a container of another pyctr (on another bridge) now needs it."""
    with open(FORWARD) as file:
        before = file.read()
    yield
    with open(FORWARD) as file:
        changed = file.read() != before
    if changed and not held_leases_anywhere():
        with open(FORWARD, "w") as file:
            file.write(before)




@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The network module on the tests' own bridge and subnet; afterwards, cleanup() and
    a check that nothing of the tests' is left."""
    import ipaddress

    skip_unless_root()
    monkeypatch.setattr(network_module, "BRIDGE", TEST_BRIDGE)
    monkeypatch.setattr(network_module, "SUBNET", ipaddress.IPv4Network(TEST_SUBNET))
    # For the supervisors the tests start as processes.
    monkeypatch.setenv("PYCTR_BRIDGE", TEST_BRIDGE)
    monkeypatch.setenv("PYCTR_BRIDGE_SUBNET", TEST_SUBNET)
    assert not leftovers(network_module), "left by an earlier run"
    yield network_module
    network_module.cleanup()
    assert not leftovers(network_module)


@pytest.fixture
def uplink() -> Iterator[str]:
    """A namespace of the tests' as the internet: a veth pair from the host
    (UPLINK_VETH, UPLINK_HOST/24) to its eth0 (UPLINK_SERVER/24), and no route back to
    anything else. Yields its path."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    skip_unless_root()
    fd = new_netns()
    path = f"/proc/{os.getpid()}/fd/{fd}"
    route = IPRoute(groups=0)
    try:
        route.link("add", ifname=UPLINK_VETH, kind="veth",
                   peer={"ifname": "eth0", "net_ns_fd": fd})
        index = route.link("get", ifname=UPLINK_VETH)[0]["index"]
        route.addr("add", index=index, address=UPLINK_HOST, prefixlen=24)
        route.link("set", index=index, state="up")
        for command in (["addr", "add", f"{UPLINK_SERVER}/24", "dev", "eth0"],
                        ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
            subprocess.run(["nsenter", f"--net={path}", "ip", *command], check=True)
        yield path
    finally:
        try:
            route.link("del", ifname=UPLINK_VETH)
        except Exception:
            pass
        route.close()
        os.close(fd)
    assert UPLINK_VETH not in host_links()


class Server:
    """A TCP server on a socket made elsewhere: it answers each connection with the address
    it came from, until closed."""

    def __init__(self, listener: socket.socket, address: str) -> None:
        listener.bind((address, 0))
        listener.listen(16)
        listener.settimeout(0.1)
        self.listener, self.port = listener, listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, (peer, _) = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(peer.encode())

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.listener.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def ask(client: socket.socket, address: str, port: int, timeout: float = 5) -> str:
    """Connect ``client`` to the server and return the address the server saw us come from."""
    with client:
        client.settimeout(timeout)
        client.connect((address, port))
        return client.recv(64).decode()


def ping(sock: socket.socket, address: str) -> bool:
    """One ICMP echo to ``address`` on the raw socket ``sock``; whether it was answered."""
    ident, payload = os.getpid() & 0xFFFF, b"pyctr-test"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    total = sum(struct.unpack(f"!{len(header + payload) // 2}H", header + payload))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    with sock:
        sock.settimeout(2)
        sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, 1) + payload, (address, 0))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                packet, (source, _) = sock.recvfrom(1024)
            except TimeoutError:
                return False
            offset = (packet[0] & 0x0F) * 4
            kind, _, _, answer_id, _ = struct.unpack("!BBHHH", packet[offset:offset + 8])
            if source == address and kind == 0 and answer_id == ident:
                return True
    return False


def raw_icmp(netns_path: str | None = None) -> socket.socket:
    if netns_path is None:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return socket_in(netns_path, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def lease_path(net: ModuleType, address: object) -> str:
    return os.path.join(net.STATE_DIR, TEST_BRIDGE, "leases", str(address))


# -- Configuration of the namespace ---------------------------------------------------------

def test_attach_configures_the_containers_namespace_not_the_hosts(net: ModuleType) -> None:
    attachment = attach(net, "web", "web-host")
    try:
        address, gateway = attachment.address, attachment.gateway
        assert str(gateway) == TEST_SUBNET.replace(".0/24", ".1")
        assert str(address) == TEST_SUBNET.replace(".0/24", ".2")  # first after the gateway
        assert attachment.prefix == 24
        assert attachment.netns_path == f"/proc/{os.getpid()}/fd/{attachment._netns_fd}"
        # Inside, seen by ip through the path the init will join: eth0 with the address and
        # the MAC derived from it, lo up, the default route via the gateway.
        links = {link["ifname"]: link for link in ip_in(attachment.netns_path, "addr")}
        assert set(links) == {"lo", "eth0"}
        eth0 = links["eth0"]
        assert eth0["address"] == "02:50:" + ":".join(f"{int(b):02x}"
                                                      for b in str(address).split("."))
        assert "UP" in eth0["flags"] and "UP" in links["lo"]["flags"]
        assert {(a["local"], a["prefixlen"]) for a in eth0["addr_info"]
                if a["family"] == "inet"} == {(str(address), 24)}
        routes = ip_in(attachment.netns_path, "route")
        assert {"dst": "default", "gateway": str(gateway), "dev": "eth0", "protocol": "static",
                "flags": []} in routes
        # Outside: the veth in the bridge, the gateway on the bridge, not the address.
        assert attachment.host_veth == f"pv{int(address):08x}"
        veth = ip_in("/proc/self/ns/net", "link", "show", attachment.host_veth)
        assert veth[0]["master"] == TEST_BRIDGE and "UP" in veth[0]["flags"]
        bridge = ip_in("/proc/self/ns/net", "-d", "addr", "show", TEST_BRIDGE)[0]
        assert bridge["ifalias"] == f"pyctr {TEST_SUBNET}"
        assert bridge["linkinfo"]["info_kind"] == "bridge"
        assert [(a["local"], a["prefixlen"]) for a in bridge["addr_info"]
                if a["family"] == "inet"] == [(str(gateway), 24)]
        host_addresses = {a["local"] for link in ip_in("/proc/self/ns/net", "addr")
                          for a in link["addr_info"]}
        assert str(address) not in host_addresses
        # Its files, next to its lease, readable by any user of the container.
        directory = lease_path(net, address) + ".d"
        assert attachment.files == {f"/etc/{name}": f"{directory}/{name}"
                                    for name in ("hostname", "hosts", "resolv.conf")}
        assert Path(directory, "hostname").read_text() == "web-host\n"
        assert Path(directory, "hosts").read_text() == (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{address}\tweb-host\n")
        assert Path(directory, "resolv.conf").read_text() == net.bridge_resolv_conf()
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        assert {stat.S_IMODE(os.stat(path).st_mode) for path in attachment.files.values()} \
            == {0o644}
        assert Path(lease_path(net, address)).read_text() == f"{attachment.host_veth}\nweb\n"
    finally:
        attachment.close()
    assert attachment.host_veth not in host_links()
    assert not os.path.exists(lease_path(net, address))
    assert not os.path.exists(lease_path(net, address) + ".d")
    assert not netns_fds()
    attachment.close()  # again: nothing to do, no error


def test_attach_from_a_worker_thread_moves_only_that_thread(net: ModuleType) -> None:
    main = thread_netns()

    def work() -> tuple[int, int, network_module.Attachment]:
        before = thread_netns()
        attachment = net.attach_bridge("worker", "worker")
        return before, thread_netns(), attachment

    result = in_thread(work)
    assert isinstance(result, tuple)
    before, after, attachment = result
    try:
        assert before == after == main == thread_netns()
        assert os.stat(attachment.netns_path).st_ino != main
    finally:
        attachment.close()


# -- Traffic --------------------------------------------------------------------------------

def test_two_containers_reach_each_other_and_the_host_reaches_both(net: ModuleType) -> None:
    first, second = attach(net, "one"), attach(net, "two")
    try:
        assert first.address != second.address
        assert ping(raw_icmp(second.netns_path), str(first.address))
        assert ping(raw_icmp(first.netns_path), str(second.address))
        assert ping(raw_icmp(), str(first.address))  # from the host
        with Server(socket_in(first.netns_path), "0.0.0.0") as server:
            seen = ask(socket_in(second.netns_path), str(first.address), server.port)
            assert seen == str(second.address)  # over the bridge, not NATed
            seen = ask(socket.socket(), str(first.address), server.port)
            assert seen == str(first.gateway)  # the host, from its bridge address
    finally:
        first.close()
        second.close()


@requires_nft
def test_the_container_reaches_the_internet_through_nat(net: ModuleType, uplink: str) -> None:
    if not any(line.split()[1] == "00000000" for line in
               Path("/proc/self/net/route").read_text().splitlines()[1:]):
        pytest.skip("the host has no default route: no NAT is set up")
    attachment = attach(net, "natted")
    try:
        assert attachment.nat, attachment.nat_reason
        assert Path(FORWARD).read_text().strip() == "1"
        with Server(socket_in(uplink), UPLINK_SERVER) as server:
            seen = ask(socket_in(attachment.netns_path), UPLINK_SERVER, server.port)
            assert seen == UPLINK_HOST  # masqueraded to the host's address on that link
            subprocess.run(["nft", "delete", "table", "ip", f"pyctr_{TEST_BRIDGE}"],
                           check=True)
            try:
                # The uplink has no route back to the bridge's subnet: without NAT the
                # answer cannot come back.
                seen = ask(socket_in(attachment.netns_path), UPLINK_SERVER, server.port,
                           timeout=1.5)
            except OSError:
                seen = ""
            assert seen != UPLINK_HOST
    finally:
        attachment.close()
    # The next container puts the table back.
    attachment = attach(net, "again")
    try:
        assert attachment.nat and nft_table_exists()
    finally:
        attachment.close()


def test_without_nft_the_container_still_gets_the_bridge(net: ModuleType,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(net, "NFT", "/nonexistent/nft")
    attachment = attach(net, "plain")
    try:
        assert not attachment.nat
        assert attachment.nat_reason in ("/nonexistent/nft (nftables) is not installed",
                                         "the host has no default route")
        assert not nft_table_exists()
        with Server(socket.socket(), str(attachment.gateway)) as server:
            seen = ask(socket_in(attachment.netns_path), str(attachment.gateway), server.port)
            assert seen == str(attachment.address)
    finally:
        attachment.close()


# -- Leases ---------------------------------------------------------------------------------

def test_addresses_stay_unique_under_concurrency(net: ModuleType) -> None:
    """20 threads of this process and 3 supervisors of their own, 4 containers each, all
    allocating at once and holding what they got."""
    code = ("import json, sys\n"
            "from pyctr.supervisor import network\n"
            "import pyroute2\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "held = [network.attach_bridge(f'p{i}', 'h') for i in range(4)]\n"
            "print(json.dumps([str(a.address) for a in held]), flush=True)\n"
            "sys.stdin.readline()\n"
            "for a in held:\n"
            "    a.close()\n")
    processes = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(3)]
    attachments: list[network_module.Attachment] = []
    failures: list[BaseException] = []
    start = threading.Barrier(21)

    def one(index: int) -> None:
        start.wait()
        try:
            attachments.append(attach(net, f"t{index}"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(20)]
    try:
        for thread in threads:
            thread.start()
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        start.wait()
        for thread in threads:
            thread.join()
        assert not failures, failures
        addresses = [str(attachment.address) for attachment in attachments]
        for process in processes:
            assert process.stdout is not None
            addresses += json.loads(process.stdout.readline())
        assert len(addresses) == len(set(addresses)) == 32, sorted(addresses)
        first = int.from_bytes(socket.inet_aton(TEST_SUBNET.split("/")[0]), "big") + 2
        assert {int.from_bytes(socket.inet_aton(address), "big") for address in addresses} \
            == set(range(first, first + 32))  # the lowest free, none skipped
        assert len({attachment.host_veth for attachment in attachments}) == 20
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
            assert process.wait(timeout=30) == 0
            assert process.stdout is not None
            process.stdout.close()
        for attachment in attachments:
            attachment.close()


def test_a_lease_file_unlinked_before_it_is_locked_is_not_taken(
        net: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweeper can unlink a lease file between an allocator's open and its flock: the
    allocator then holds a file nobody else can see, and must not count it as its lease."""
    import fcntl

    swept: list[str] = []

    class SweptMeanwhile:
        LOCK_EX, LOCK_NB, LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_NB, fcntl.LOCK_UN

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if not swept and os.path.dirname(path).endswith("/leases"):
                os.unlink(path)
                swept.append(path)
            fcntl.flock(fd, operation)

    monkeypatch.setattr(net, "fcntl", SweptMeanwhile)
    first = attach(net, "first")
    monkeypatch.setattr(net, "fcntl", fcntl)
    try:
        assert swept == [lease_path(net, first.address)]
        assert os.path.exists(lease_path(net, first.address))  # made again, and held
        second = attach(net, "second")
        try:
            assert second.address != first.address
        finally:
            second.close()
    finally:
        first.close()


def test_release_frees_the_address_for_reuse(net: ModuleType) -> None:
    first = attach(net, "first")
    address, veth = first.address, first.host_veth
    mac = ip_in(first.netns_path, "link", "show", "eth0")[0]["address"]
    second = attach(net, "second")
    try:
        assert second.address != address
        first.close()
        first.close()
        assert not os.path.exists(lease_path(net, address))
        assert veth not in host_links()
        third = attach(net, "third")
        try:
            assert third.address == address and third.host_veth == veth
            assert ip_in(third.netns_path, "link", "show", "eth0")[0]["address"] == mac
            assert Path(third.files["/etc/hostname"]).read_text() == "third\n"
        finally:
            third.close()
    finally:
        first.close()
        second.close()


def test_an_exhausted_subnet_is_refused_and_nothing_is_left(net: ModuleType,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import ipaddress

    smallest = next(ipaddress.IPv4Network(TEST_SUBNET).subnets(new_prefix=30))
    monkeypatch.setattr(net, "SUBNET", smallest)
    only = attach(net, "only")  # a /30 holds the gateway and one container
    try:
        links = host_links()
        with pytest.raises(PyctrError) as caught:
            attach(net, "second")
        assert caught.value.error == "network.exhausted"
        assert "\n" not in str(caught.value) and "PYCTR_BRIDGE_SUBNET" in str(caught.value)
        assert host_links() == links
        leases = os.path.dirname(lease_path(net, only.address))
        assert sorted(os.listdir(leases)) == [str(only.address), f"{only.address}.d"]
        assert len(netns_fds()) == 1
    finally:
        only.close()


# -- Failures -------------------------------------------------------------------------------

def test_a_failure_midway_leaves_nothing(net: ModuleType,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise OSError(errno.EIO, "injected")

    links, fds = host_links(), set(os.listdir("/proc/self/fd"))
    configure_inside = net._configure_inside
    monkeypatch.setattr(net, "_configure_inside", refuse)  # after the veth and lease
    with pytest.raises(PyctrError) as caught:
        attach(net, "broken")
    assert caught.value.error == "network.failed"
    assert str(caught.value) == "cannot set up the container's network: injected"
    assert host_links() - links <= {TEST_BRIDGE}
    assert os.listdir(os.path.join(net.STATE_DIR, TEST_BRIDGE, "leases")) == []
    assert set(os.listdir("/proc/self/fd")) == fds
    # Inside the new namespace, before the thread went back.
    monkeypatch.setattr(net, "_configure_inside", configure_inside)
    monkeypatch.setattr(net, "_route_socket", refuse)
    with pytest.raises(PyctrError) as caught:
        attach(net, "broken")
    assert str(caught.value) == "cannot open the container's network namespace: injected"
    assert set(os.listdir("/proc/self/fd")) == fds


def test_a_thread_that_cannot_go_back_is_reported(net: ModuleType,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, nstype: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(net, "setns", refuse)
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PyctrError) as caught:  # in a thread that then ends, stuck or not
        in_thread(lambda: net.attach_bridge("stuck", "stuck"))
    assert caught.value.error == "network.failed"
    assert str(caught.value).startswith("cannot return this thread to its own network "
                                        "namespace (Invalid argument)")
    assert set(os.listdir("/proc/self/fd")) == fds
    assert not os.path.exists(os.path.join(net.STATE_DIR, TEST_BRIDGE, "leases"))


def test_a_subnet_overlapping_a_host_route_is_refused(net: ModuleType, uplink: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    monkeypatch.setattr(net, "SUBNET", ipaddress.IPv4Network("198.51.100.128/25"))
    links, fds = host_links(), set(os.listdir("/proc/self/fd"))
    with pytest.raises(PyctrError) as caught:
        attach(net, "clash")
    assert caught.value.error == "network.subnet_conflict"
    assert str(caught.value) == (
        f"the bridge subnet 198.51.100.128/25 overlaps the host's route to 198.51.100.0/24 on "
        f"{UPLINK_VETH}; set PYCTR_BRIDGE_SUBNET to a free subnet (e.g. 10.223.0.0/16)")
    assert host_links() == links
    assert set(os.listdir("/proc/self/fd")) == fds


def test_a_killed_supervisors_lease_and_files_are_swept(net: ModuleType) -> None:
    code = ("import json, time\n"
            "from pyctr.supervisor import network\n"
            "a = network.attach_bridge('victim', 'victim')\n"
            "h = network.host_files('victim-host', 'victim-host')\n"
            "print(json.dumps([a.netns_path, str(a.address), a.host_veth, a.files,"
            " h.files]), flush=True)\n"
            "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with process.stdout:
        netns_path, address, veth, files, copies = json.loads(process.stdout.readline())
    # Something else keeps its namespace alive, so its veth outlives it.
    keeper = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        assert os.path.exists(lease_path(net, address)) and veth in host_links()
        swept = net.sweep_stale()
        assert f"stale lease {address} of container 'victim', veth {veth} deleted" in swept
        assert any(entry.startswith("stale host files ")
                   and entry.endswith(" of container 'victim-host'") for entry in swept)
        assert veth not in host_links()
        assert not os.path.exists(lease_path(net, address))
        for path in [*files.values(), *copies.values()]:
            assert not os.path.exists(os.path.dirname(path))
        # Other pyctr runs on this host may have left host files of theirs: not ours.
        assert not [entry for entry in net.sweep_stale() if "victim" in entry]
    finally:
        os.close(keeper)


# -- cleanup() ------------------------------------------------------------------------------

def test_cleanup_keeps_a_bridge_in_use_and_removes_an_idle_one(net: ModuleType) -> None:
    def bridge_items(removed: list[str]) -> list[str]:
        # cleanup() also sweeps host-network files, which other pyctr runs share.
        return [item for item in removed if not item.startswith("stale host files ")]

    attachment = attach(net, "busy")
    try:
        nat = attachment.nat
        assert bridge_items(net.cleanup()) == []
        assert TEST_BRIDGE in host_links() and attachment.host_veth in host_links()
        assert nft_table_exists() == nat
    finally:
        attachment.close()
    removed = bridge_items(net.cleanup())
    assert removed == [f"bridge {TEST_BRIDGE}"] + ([f"nft table ip pyctr_{TEST_BRIDGE}"]
                                                   if nat else [])
    assert TEST_BRIDGE not in host_links() and not nft_table_exists()
    assert not os.path.exists(os.path.join(net.STATE_DIR, TEST_BRIDGE))
    assert bridge_items(net.cleanup()) == []


def test_cleanup_leaves_a_bridge_pyctr_did_not_make(net: ModuleType) -> None:
    subprocess.run(["ip", "link", "add", TEST_BRIDGE, "type", "bridge"], check=True)
    try:
        attachment = attach(net, "guest")
        attachment.close()
        assert f"bridge {TEST_BRIDGE}" not in net.cleanup()
        assert TEST_BRIDGE in host_links()
    finally:
        subprocess.run(["ip", "link", "del", TEST_BRIDGE], check=True)


# -- Files ----------------------------------------------------------------------------------

@pytest.fixture
def host_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake host files: none of the real ones is read."""
    monkeypatch.setattr(network_module, "HOST_HOSTS", str(tmp_path / "hosts"))
    monkeypatch.setattr(network_module, "HOST_RESOLV_CONF", str(tmp_path / "resolv.conf"))
    monkeypatch.setattr(network_module, "RESOLVED_RESOLV_CONF", str(tmp_path / "resolved"))
    return tmp_path


def test_resolv_conf_drops_nameservers_the_container_cannot_reach(host_etc: Path) -> None:
    (host_etc / "resolv.conf").write_text(
        "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\n"
        "nameserver 2001:db8::53\nnameserver fe80::1%eth0\nnameserver 127.1.2.3\n"
        "search example.org\noptions edns0 trust-ad\nnameserver 198.51.100.53\n")
    assert network_module.bridge_resolv_conf() == (
        "# generated\nnameserver 192.0.2.53\nsearch example.org\noptions edns0 trust-ad\n"
        "nameserver 198.51.100.53\n")


def test_resolv_conf_falls_back_to_public_servers(host_etc: Path) -> None:
    (host_etc / "resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n"
                                          "search lan\n")
    assert network_module.bridge_resolv_conf() == (
        "options edns0\nsearch lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n")
    (host_etc / "resolv.conf").unlink()
    assert network_module.bridge_resolv_conf() == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    (host_etc / "resolv.conf").mkdir()  # not a file: no data
    assert network_module.bridge_resolv_conf() == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_resolv_conf_prefers_systemd_resolveds_upstream_list(host_etc: Path) -> None:
    (host_etc / "resolv.conf").write_text("nameserver 127.0.0.53\nsearch lan\n")
    (host_etc / "resolved").write_text("nameserver 192.0.2.10\nsearch lan\n")
    assert network_module.bridge_resolv_conf() == "nameserver 192.0.2.10\nsearch lan\n"


def test_host_files_are_read_as_bounded_data(host_etc: Path) -> None:
    line = "nameserver 192.0.2.1\n"
    (host_etc / "resolv.conf").write_text(line * (network_module.HOST_FILE_LIMIT // len(line)
                                                  + 100))
    text = network_module.bridge_resolv_conf()
    assert len(text) <= network_module.HOST_FILE_LIMIT and text.endswith(line)
    os.mkfifo(host_etc / "resolved")  # read as nothing, without blocking
    assert network_module.bridge_resolv_conf() == text


def test_host_files_copy_the_hosts_files(net: ModuleType, host_etc: Path) -> None:
    (host_etc / "hosts").write_text("127.0.0.1 localhost\n192.0.2.7 db\n")
    (host_etc / "resolv.conf").write_text("nameserver 127.0.0.53\n")  # the host's: usable
    copies = net.host_files("hosted", "hosted-name")
    try:
        directory = os.path.dirname(copies.files["/etc/hosts"])
        assert os.path.dirname(directory) == os.path.join(net.STATE_DIR, "host")
        assert sorted(copies.files) == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
        assert Path(copies.files["/etc/hosts"]).read_text() == (host_etc / "hosts").read_text()
        assert Path(copies.files["/etc/resolv.conf"]).read_text() == "nameserver 127.0.0.53\n"
        assert Path(copies.files["/etc/hostname"]).read_text() == "hosted-name\n"
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        net.sweep_stale()
        assert os.path.exists(directory[:-2])  # held: not stale
    finally:
        copies.close()
    assert not os.path.exists(directory) and not os.path.exists(directory[:-2])
    copies.close()
