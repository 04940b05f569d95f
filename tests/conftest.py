"""Shared fixtures: a real root filesystem, a way to run the CLI, and a leak check.

The runtime tests run the real thing as root. After every test, ``no_leaks`` checks that no
mount was added under the paths the tests use and that no process started by the test is left:
the test process is made a child subreaper, so a container init orphaned by a killed
supervisor is re-parented to us and shows up as our descendant instead of escaping to PID 1.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Every container the tests start, through the CLI or the library, gets its cgroup under a
# parent of the test session's own (inherited by the CLI processes), so the leak check below
# sees only the tests' own cgroups. Set before pyctr.supervisor.cgroup is imported.
os.environ.setdefault("PYCTR_CGROUP_PARENT", f"pyctr-test-{os.getpid()}")
CGROUP_PARENT = os.environ["PYCTR_CGROUP_PARENT"]
# The same for the throwaway overlay layers (--overlay): a directory of the session's own.
os.environ.setdefault("PYCTR_OVERLAY_DIR", f"/var/lib/pyctr/overlay-test-{os.getpid()}")
OVERLAY_DIR = os.environ["PYCTR_OVERLAY_DIR"]
# And for --network bridge: a bridge and subnet of the session's own, taken down at the end.
os.environ.setdefault("PYCTR_BRIDGE", f"pyctrt{os.getpid()}"[:15])
os.environ.setdefault("PYCTR_BRIDGE_SUBNET", f"10.224.{os.getpid() % 256}.0/24")
BRIDGE = os.environ["PYCTR_BRIDGE"]
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
# NAT turns forwarding on host-wide (as docker does); the session puts it back as it found it.
with open(IP_FORWARD) as _file:
    IP_FORWARD_BEFORE = _file.read()

from helpers import (  # noqa: E402
    REPO,
    Run,
    descendants,
    describe,
    mount_points,
    reap_orphans,
    run_cli,
)

BUILD_ROOTFS = REPO / "rootfs-scripts" / "build-rootfs"
PR_SET_CHILD_SUBREAPER = 36

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)")


def pytest_configure(config: pytest.Config) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("PYCTR_SLOW_TESTS") == "1"
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow; set PYCTR_SLOW_TESTS=1 to run"))


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem built from host binaries, once per session (or $PYCTR_TEST_ROOTFS)."""
    given = os.environ.get("PYCTR_TEST_ROOTFS")
    if given:
        return Path(given).resolve()
    destination = tmp_path_factory.mktemp("rootfs") / "root"
    subprocess.run([str(BUILD_ROOTFS), "--quiet", "--from", "host", str(destination)],
                   check=True)
    return destination


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Only the paths the tests use: another program on the machine may mount elsewhere.
    owned = (str(tmp_path_factory.getbasetemp()), str(REPO), "/var/lib/pyctr", "/run/pyctr",
             *filter(None, [os.environ.get("PYCTR_TEST_ROOTFS")]))
    mounts_before = mount_points(owned)
    yield
    deadline = time.monotonic() + 5
    from pyctr.supervisor.spawn import template_pid

    template = template_pid()  # the library's init template lives as long as this process
    while True:
        reap_orphans()
        left = descendants() - {template}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not left, f"processes left behind: {[describe(pid) for pid in left]}"
    assert mount_points(owned) == mounts_before, "mounts left behind on the host"
    # A supervisor a test killed leaves its (empty) cgroup to the next pyctr run's sweep:
    # sweep, as that run would, then nothing of the tests' may be left.
    from pyctr.supervisor.cgroup import sweep_stale

    sweep_stale()
    assert not own_cgroups(), f"cgroups left behind: {own_cgroups()}"
    from pyctr.supervisor import overlay

    overlay.sweep_stale()  # as the next run would, after a supervisor a test killed
    assert not own_layers(), f"overlay layers left behind: {own_layers()}"
    from pyctr.supervisor import network

    network.sweep_stale()
    # A killed container's veth goes with its namespace, which the kernel destroys a moment
    # after its last process.
    deadline = time.monotonic() + 5
    while own_bridge_ports() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not own_bridge_ports(), f"veths left on {BRIDGE}: {own_bridge_ports()}"
    assert not own_leases(), f"address leases left behind: {own_leases()}"


def own_bridge_ports() -> list[str]:
    """The interfaces attached to the tests' own bridge."""
    try:
        return sorted(os.listdir(f"/sys/class/net/{BRIDGE}/brif"))
    except FileNotFoundError:
        return []


def own_leases() -> list[str]:
    """The address leases on the tests' own bridge (files, held or not)."""
    from pyctr.supervisor import network

    try:
        return sorted(os.listdir(os.path.join(network.STATE_DIR, BRIDGE, "leases")))
    except FileNotFoundError:
        return []


def own_layers() -> list[str]:
    """The throwaway overlay layers in the tests' own directory (see OVERLAY_DIR)."""
    try:
        return sorted(entry for entry in os.listdir(OVERLAY_DIR) if entry != ".lock")
    except FileNotFoundError:
        return []


def own_cgroups() -> list[str]:
    """The cgroups under the tests' own parent (see CGROUP_PARENT), on every hierarchy."""
    found = []
    for point in hierarchy_points():
        parent = os.path.join(point, CGROUP_PARENT)
        try:
            found += [os.path.join(parent, entry) for entry in os.listdir(parent)
                      if os.path.isdir(os.path.join(parent, entry))]
        except FileNotFoundError:
            pass
    return found


def hierarchy_points() -> list[str]:
    """Where this host's cgroup hierarchies pyctr uses are mounted."""
    from pyctr.supervisor.cgroup import host_layout

    layout = host_layout()
    if layout.kind == "none":
        return []
    if layout.kind == "v2":
        return [layout.root]
    return sorted(set(layout.hierarchies.values()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """End the library's init template; remove the tests' cgroup parent and claims
    directory (empty by then)."""
    from pyctr.supervisor.cgroup import CLAIMS
    from pyctr.supervisor.spawn import close_template

    close_template()
    shutil.rmtree(OVERLAY_DIR, ignore_errors=True)
    from pyctr.supervisor import network

    network.cleanup()  # the tests' bridge and its NAT table
    shutil.rmtree(os.path.join(network.STATE_DIR, BRIDGE), ignore_errors=True)
    if IP_FORWARD_BEFORE.strip() == "0" and not held_leases_anywhere():
        with open(IP_FORWARD, "w") as file:
            file.write(IP_FORWARD_BEFORE)
    for directory in [os.path.join(point, CGROUP_PARENT) for point in hierarchy_points()] + [
            os.path.join(CLAIMS, CGROUP_PARENT)]:
        try:
            os.rmdir(directory)
        except OSError:
            pass


def held_leases_anywhere() -> list[str]:
    """Leases of any bridge that a live supervisor holds (its container needs forwarding)."""
    import fcntl

    from pyctr.supervisor import network

    held = []
    for directory in Path(network.STATE_DIR).glob("*/leases"):
        for lease in directory.iterdir():
            if lease.name.endswith(".d"):
                continue
            try:
                fd = os.open(lease, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(str(lease))
            finally:
                os.close(fd)
    return held


@pytest.fixture
def pyctr(rootfs: Path) -> object:
    """``pyctr(*command, options=[...])`` runs COMMAND in a container on the test rootfs."""

    def run(*command: str, options: tuple[str, ...] = (), **kwargs: object) -> Run:
        return run_cli(*options, str(rootfs), *command, **kwargs)

    return run


def copy_rootfs(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination
