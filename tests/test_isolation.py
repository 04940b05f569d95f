"""The container is isolated: its own PID, mount, UTS, IPC and network namespaces, its own
root filesystem, and nothing of it visible on the host (the original program's three checks,
and more)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import requires_root
from helpers import CLI, mount_points

pytestmark = requires_root


def test_workload_sees_only_the_container_processes(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", "echo $$; cat /proc/1/comm; ls -d /proc/[0-9]*")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split()
    assert lines[0] == "2", "the workload is PID 2, right after the init"
    assert lines[1] == "pyctr-init"
    pids = sorted(int(path.rsplit("/", 1)[1]) for path in lines[2:])
    assert pids[:2] == [1, 2] and len(pids) <= 3, pids
    assert os.getpid() not in pids or os.getpid() <= 3


def test_hostname_is_set_inside_and_unchanged_outside(pyctr) -> None:
    before = socket.gethostname()
    run = pyctr("/bin/sh", "-c", "hostname && echo 'Hello from container'",
                options=("-h", "mycontainer"))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "mycontainer\nHello from container\n"
    assert socket.gethostname() == before


def test_default_hostname_is_the_container_id(pyctr) -> None:
    run = pyctr("/bin/hostname", options=("--name", "web-1"))
    assert run.stdout.strip() == "web-1"
    assert all(record["container"] == "web-1" for record in run.records)


def test_root_filesystem_is_the_rootfs_and_the_host_is_out_of_reach(pyctr, rootfs: Path) -> None:
    marker = Path(__file__).resolve()
    run = pyctr("/bin/sh", "-c", f"ls /; test -e {marker} && echo HOST-VISIBLE; "
                "cat /proc/self/mountinfo")
    assert run.returncode == 0, run.stderr
    inside_top = {line for line in run.stdout.splitlines() if "/" not in line and " " not in line}
    listing = {entry for entry in os.listdir(rootfs)}
    assert listing <= inside_top | {"HOST-VISIBLE"}
    assert "HOST-VISIBLE" not in run.stdout
    mountinfo = [line.split() for line in run.stdout.splitlines() if " - " in line]
    mount_points_inside = {fields[4] for fields in mountinfo}
    assert {"/", "/proc", "/sys", "/tmp", "/dev", "/dev/pts", "/dev/shm"} <= mount_points_inside
    assert not any(point.startswith(("/work", "/home", "/root/")) for point in mount_points_inside)


def test_mounts_have_the_promised_options(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", "cat /proc/mounts; touch /sys/x 2>/dev/null && echo SYS-RW; "
                "ls -l /dev/null /dev/ptmx; test -c /dev/urandom && echo URANDOM")
    assert run.returncode == 0, run.stderr
    mounts = {line.split()[1]: line.split() for line in run.stdout.splitlines()
              if line.count(" ") >= 5 and line.split()[1].startswith("/")}
    assert mounts["/proc"][2] == "proc"
    assert mounts["/sys"][2] == "sysfs" and mounts["/sys"][3].startswith("ro")
    assert mounts["/tmp"][2] == "tmpfs"
    assert mounts["/dev"][2] == "tmpfs"
    assert mounts["/dev/pts"][2] == "devpts" and "ptmxmode=666" in mounts["/dev/pts"][3]
    assert mounts["/dev/shm"][2] == "tmpfs"
    assert "SYS-RW" not in run.stdout
    assert "URANDOM" in run.stdout
    assert "/dev/ptmx -> pts/ptmx" in run.stdout


def test_every_namespace_is_new(pyctr) -> None:
    names = ("pid", "mnt", "uts", "ipc", "net")
    script = "; ".join(f"readlink /proc/self/ns/{name}" for name in names)
    run = pyctr("/bin/sh", "-c", script)
    inside = run.stdout.split()
    outside = [os.readlink(f"/proc/self/ns/{name}") for name in names]
    assert len(inside) == len(names)
    for name, ours, theirs in zip(names, outside, inside, strict=True):
        assert ours != theirs, f"{name} namespace is shared with the host"


def test_network_has_only_loopback_and_it_is_up(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags")
    assert run.returncode == 0, run.stderr
    interfaces, flags = run.stdout.split()[:-1], run.stdout.split()[-1]
    assert interfaces == ["lo"]
    assert int(flags, 16) & 0x1, "lo is not up"


def test_chroot_option_runs_in_the_rootfs_too(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", "echo $$; ls /; hostname",
                options=("--chroot", "-h", "old", "--log-level", "debug"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "2"
    assert run.stdout.split()[-1] == "old"
    assert run.record("rootfs.ready")["root_change"] == "chroot"


def test_no_container_mount_is_visible_on_the_host_while_it_runs(rootfs: Path) -> None:
    # Under the rootfs and the default mounts' host paths: the rest of the table is the
    # machine's, which other programs may change meanwhile.
    watched = (str(rootfs), "/proc", "/sys", "/dev", "/tmp")
    before = mount_points(watched)
    with subprocess.Popen([CLI, str(rootfs), "/bin/sh", "-c", "echo up; sleep 30"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "up\n"
            during = mount_points(watched)
            assert during == before
            assert not any(point.startswith(str(rootfs)) for point in during)
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 128 + 15


def test_standard_streams_pass_through(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", "cat; echo to-stderr >&2", input="hello through the container\n")
    assert run.stdout == "hello through the container\n"
    assert "to-stderr" in run.other_stderr


def test_a_quick_sequence_of_containers_leaves_nothing(pyctr) -> None:
    started = time.monotonic()
    for index in range(5):
        assert pyctr("/bin/sh", "-c", f"exit {index}").returncode == index
    assert time.monotonic() - started < 60


def test_workdir_is_where_the_command_starts_and_relative_paths_resolve(pyctr) -> None:
    assert pyctr("/bin/sh", "-c", "pwd", options=("-w", "/tmp")).stdout == "/tmp\n"
    # ./echo names /bin/echo from /bin, as docker run -w /bin IMAGE ./echo would.
    run = pyctr("./echo", "from the workdir", options=("-w", "/bin"))
    assert (run.returncode, run.stdout) == (0, "from the workdir\n")
