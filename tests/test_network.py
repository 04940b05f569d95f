"""Networks, for real: ``--network none|host|bridge`` and ``-p/--publish``, end to end.

The containers run on a bridge and subnet of the test session's own (see conftest); the
tests talk only to loopback and to the containers' namespaces. The servers are the host's
static busybox, bound into the container's /tmp (a tmpfs: nothing is written into the
rootfs). ``no_leaks`` checks after each test that no lease, veth, cgroup, mount or process
is left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

import pytest
import trio
from conftest import BRIDGE, own_bridge_ports, own_leases, requires_root
from helpers import CLI, assert_one_line_error, run_cli, wait_until

from pyctr.supervisor import ContainerConfig, PyctrError, run
from pyctr.supervisor.network import SUBNET

pytestmark = requires_root
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
requires_busybox = pytest.mark.skipif(not os.path.exists(BUSYBOX),
                                      reason="needs busybox-static for its httpd and wget")
TOOLS = ("-v", f"{BUSYBOX}:/tmp/busybox:ro")
# An HTTP server on port 8080 inside the container that serves one page naming the container.
SERVE = ("mkdir -p /tmp/www && echo \"hello from $0\" > /tmp/www/index.html && "
         "exec /tmp/busybox httpd -f -p 8080 -h /tmp/www")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A CLI container in the background, running SERVE; its ``network.attached`` record."""

    def __init__(self, rootfs: Path, name: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [CLI, "--log-format", "json", "--network", "bridge", *TOOLS, *options, str(rootfs),
             "sh", "-c", SERVE, name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        assert self.process.stderr is not None
        try:
            self.attached = _wait_for_event(self.process.stderr, "network.attached")
        except BaseException:
            # The test fails here; the container must not outlive it (a log line that is
            # not JSON left four of them running once).
            self.stop()
            raise

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)
        return self.process.returncode


def _wait_for_event(stream: IO[str], event: str) -> dict[str, object]:
    for line in stream:
        record = json.loads(line)
        if record.get("event") == event:
            return dict(record)
    raise AssertionError(f"no {event} record before the end of the log")


def fetch(url: str, timeout: float = 10) -> str:
    """GET ``url``, retrying while the server inside is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_none_is_the_default_and_has_only_lo(rootfs: Path) -> None:
    result = run_cli(str(rootfs), "cat", "/proc/net/dev")
    assert result.returncode == 0, result.stderr
    interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert interfaces == ["lo"]
    assert "network.attached" not in result.events()


def test_host_shares_the_hosts_interfaces_and_name(rootfs: Path) -> None:
    result = run_cli("--network", "host", str(rootfs), "sh", "-c",
                     "cat /proc/net/dev; echo; hostname; cat /etc/hosts")
    assert result.returncode == 0, result.stderr
    host_interfaces = set(os.listdir("/sys/class/net"))
    inside = {line.split(":")[0].strip() for line in result.stdout.split("\n\n")[0]
              .splitlines()[2:]}
    assert inside == host_interfaces
    assert os.uname().nodename in result.stdout
    assert result.record("network.attached")["mode"] == "host"


@requires_busybox
def test_bridge_gives_an_address_a_route_and_its_own_etc_files(rootfs: Path) -> None:
    before = {name: (rootfs / "etc" / name).read_bytes()
              for name in ("hosts", "resolv.conf") if (rootfs / "etc" / name).exists()}
    result = run_cli("--network", "bridge", "-h", "web", *TOOLS, str(rootfs), "sh", "-c",
                     "/tmp/busybox ip -4 -o addr show eth0; /tmp/busybox ip route; "
                     "echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf")
    assert result.returncode == 0, result.stderr
    attached = result.record("network.attached")
    address = ipaddress.ip_address(attached["ip_address"])
    assert address in SUBNET and attached["bridge"] == BRIDGE
    addresses, hosts, resolv = result.stdout.split("---\n")
    assert f"inet {address}/{SUBNET.prefixlen}" in addresses
    assert f"default via {attached['gateway']}" in addresses
    assert f"{address}\tweb" in hosts or f"{address} web" in hosts
    assert "nameserver" in resolv
    # Given by bind mounts: the rootfs's own files are untouched.
    assert before == {name: (rootfs / "etc" / name).read_bytes() for name in before}
    assert not (rootfs / "etc" / "hostname").exists()  # not made in the rootfs


@requires_busybox
def test_a_container_reaches_another_over_the_bridge(rootfs: Path) -> None:
    server = Server(rootfs, "server-a")
    try:
        address = server.attached["ip_address"]
        client = run_cli("--network", "bridge", *TOOLS, str(rootfs), "sh", "-c",
                         f"for i in $(seq 100); do /tmp/busybox wget -q -O - "
                         f"http://{address}:8080/ && exit 0; sleep 0.05; done; exit 1")
        assert client.returncode == 0, client.stderr
        assert client.stdout == "hello from server-a\n"
        assert client.record("network.attached")["ip_address"] != address
    finally:
        server.stop()


@requires_busybox
def test_the_host_reaches_a_published_port_on_loopback(rootfs: Path) -> None:
    port = free_port()
    server = Server(rootfs, "published", "-p", f"{port}:8080")
    try:
        assert server.attached["published"] == [f"127.0.0.1:{port}->8080/tcp"]
        assert fetch(f"http://127.0.0.1:{port}/") == "hello from published\n"
    finally:
        assert server.stop() in (0, 143)
    # The port is the host's again (the proxy's end of the finished connection may sit in
    # TIME_WAIT on it, as any server's would: SO_REUSEADDR, as a server sets).
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


@requires_busybox
def test_concurrent_bridge_containers_get_distinct_addresses(rootfs: Path) -> None:
    # Each holds its address for 3 s, so all six hold theirs at once: an address released by
    # a container that has ended may rightly go to the next one.
    processes = [subprocess.Popen([CLI, "--log-format", "json", "--network", "bridge",
                                   str(rootfs), "sleep", "3"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
    addresses = []
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        attached = [json.loads(line) for line in stderr.splitlines()
                    if '"network.attached"' in line]
        addresses.append(attached[0]["ip_address"])
    assert len(set(addresses)) == len(addresses)


def test_bad_network_values_fail_with_one_line(rootfs: Path) -> None:
    result = run_cli("--network", "overlay", str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, "--network must be none, host or bridge")
    result = run_cli("-p", "8080:80", str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, "--publish needs --network bridge")
    result = run_cli("--network", "bridge", "-p", "99999:80", str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, "--publish")


def test_a_taken_port_fails_before_anything_is_made(rootfs: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = free_port()
        result = run_cli("--network", "bridge", "-p", f"{free}:81", "-p", f"{port}:80",
                         str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, f"127.0.0.1:{port}", "already in use")
    assert own_leases() == [] and own_bridge_ports() == []
    with socket.socket() as again:  # the other port was let go
        again.bind(("127.0.0.1", free))


def test_a_killed_supervisors_lease_and_veth_are_cleaned_up(rootfs: Path) -> None:
    supervisor = subprocess.Popen([CLI, "--network", "bridge", str(rootfs), "sleep", "60"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: own_leases() and own_bridge_ports(), "the container's lease and veth")
    supervisor.kill()
    supervisor.wait(timeout=10)
    cleanup = subprocess.run([CLI, "--cleanup"], capture_output=True, text=True, timeout=60)
    assert cleanup.returncode == 0, cleanup.stderr
    assert "removed" in cleanup.stdout
    wait_until(lambda: not own_bridge_ports(), "the veth to go")
    assert own_leases() == []
    # With no container on it, --cleanup took the bridge down too; the next one makes it.
    assert not os.path.exists(f"/sys/class/net/{BRIDGE}")
    again = run_cli("--network", "bridge", str(rootfs), "true")
    assert again.returncode == 0, again.stderr


def test_cleanup_takes_no_rootfs() -> None:
    result = run_cli("--cleanup", "rootfs", "true")
    assert result.returncode == 125
    assert_one_line_error(result, "--cleanup takes no ROOTFS")


@requires_busybox
def test_library_bridge_and_published_port(rootfs: Path) -> None:
    port = free_port()

    async def main() -> tuple[str | None, list[str], str]:
        config = ContainerConfig(rootfs, ["sh", "-c", SERVE, "library"], network="bridge",
                                 publish=[f"127.0.0.1:{port}:8080"],
                                 volumes=[f"{BUSYBOX}:/tmp/busybox:ro"], stop_timeout=2)
        async with trio.open_nursery() as nursery:
            container = await nursery.start(run, config)
            page = await trio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port}/")
            container.stop()
        return container.ip_address, container.published, page

    address, published, page = trio.run(main)
    assert address is not None and ipaddress.ip_address(address) in SUBNET
    assert published == [f"127.0.0.1:{port}->8080/tcp"]
    assert page == "hello from library\n"


def test_library_rejects_publish_without_bridge(rootfs: Path) -> None:
    with pytest.raises(PyctrError, match="--publish needs --network bridge"):
        ContainerConfig(rootfs, ["true"], publish=["8080:80"])


def test_a_symlinked_etc_hosts_in_the_rootfs_does_not_lead_the_bind_out(
        rootfs: Path, tmp_path: Path) -> None:
    """The rootfs is hostile: its /etc/hosts points at a host file. The link is followed
    inside the rootfs only, where its target does not exist: the container is refused with
    one line, and the host file stays as it was."""
    from conftest import copy_rootfs

    victim = tmp_path / "victim"
    victim.write_text("the host's\n")
    hostile = copy_rootfs(rootfs, tmp_path / "hostile")
    (hostile / "etc" / "hosts").unlink()
    (hostile / "etc" / "hosts").symlink_to(f"../../../../../../..{victim}")
    result = run_cli("--network", "bridge", str(hostile), "sh", "-c",
                     "cat /etc/hosts; echo written > /etc/hosts")
    assert result.returncode == 125
    assert_one_line_error(result, "cannot create mount point", "etc/hosts")
    assert result.stdout == ""
    assert victim.read_text() == "the host's\n"
    assert own_leases() == []
