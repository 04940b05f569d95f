"""The cgroup mount plan: pure tests on recorded /proc/self/cgroup and mountinfo text, then the
plan for this machine checked against the real filesystem and applied in a private mount
namespace."""

from __future__ import annotations

import errno
import os
import traceback
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import wait_until

from pyctr.init.cgroupfs import (
    CgroupMount,
    plan_cgroup_mounts,
    read_host_cgroup_mounts,
    with_joined,
)
from pyctr.linux.procfs import host_mounts, own_cgroup_directory
from pyctr.linux.syscalls import (
    CLONE_NEWNS,
    MS_BIND,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    LinuxSyscalls,
    unshare,
)

TMPFS = CgroupMount("tmpfs", "", "")

# Recorded on the development machine: hybrid, one v1 hierarchy per controller, a named
# systemd hierarchy and the v2 tree at /sys/fs/cgroup/unified.
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/4ff2bf6639c2c84101c8c2987b19a0ac
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# A systemd host of the cgroup v1 era: co-mounted controllers, optional fields, extra options.
COMOUNTED_CGROUP = """\
12:net_cls,net_prio:/
4:cpu,cpuacct:/system.slice/docker.service
3:memory:/system.slice/docker.service
1:name=systemd:/system.slice/docker.service
0::/system.slice/docker.service
"""
COMOUNTED_MOUNTINFO = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup \
rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup \
cgroup rw,cpu,cpuacct
32 26 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup \
rw,memory
35 26 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - \
cgroup cgroup rw,net_cls,net_prio
"""

PURE_V2_MOUNTINFO = """\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""


def test_recorded_hybrid_host_gets_one_bind_per_hierarchy_in_cgroup_order() -> None:
    assert plan_cgroup_mounts(HYBRID_CGROUP, HYBRID_MOUNTINFO) == [
        TMPFS,
        CgroupMount("bind", "/sys/fs/cgroup/systemd", "systemd"),
        CgroupMount("bind", "/sys/fs/cgroup/pids", "pids"),
        CgroupMount("bind", "/sys/fs/cgroup/blkio", "blkio"),
        CgroupMount("bind", "/sys/fs/cgroup/freezer", "freezer"),
        CgroupMount("bind", "/sys/fs/cgroup/devices", "devices"),
        CgroupMount(
            "bind", "/sys/fs/cgroup/memory/process_api/4ff2bf6639c2c84101c8c2987b19a0ac", "memory"
        ),
        CgroupMount("bind", "/sys/fs/cgroup/cpuset", "cpuset"),
        CgroupMount("bind", "/sys/fs/cgroup/cpuacct", "cpuacct"),
        CgroupMount("bind", "/sys/fs/cgroup/cpu", "cpu"),
        CgroupMount("bind", "/sys/fs/cgroup/unified", "unified"),
    ]


def test_comounted_controllers_get_a_symlink_each_after_the_binds() -> None:
    assert plan_cgroup_mounts(COMOUNTED_CGROUP, COMOUNTED_MOUNTINFO) == [
        TMPFS,
        CgroupMount("bind", "/sys/fs/cgroup/net_cls,net_prio", "net_cls,net_prio"),
        CgroupMount("bind", "/sys/fs/cgroup/cpu,cpuacct/system.slice/docker.service",
                    "cpu,cpuacct"),
        CgroupMount("bind", "/sys/fs/cgroup/memory/system.slice/docker.service", "memory"),
        CgroupMount("bind", "/sys/fs/cgroup/systemd/system.slice/docker.service", "systemd"),
        CgroupMount("bind", "/sys/fs/cgroup/unified/system.slice/docker.service", "unified"),
        CgroupMount("symlink", "net_cls,net_prio", "net_cls"),
        CgroupMount("symlink", "net_cls,net_prio", "net_prio"),
        CgroupMount("symlink", "cpu,cpuacct", "cpu"),
        CgroupMount("symlink", "cpu,cpuacct", "cpuacct"),
    ]


def test_pure_v2_host_binds_the_own_cgroup_onto_the_destination_without_tmpfs() -> None:
    cgroup = "0::/user.slice/user-1000.slice/session-2.scope\n"
    assert plan_cgroup_mounts(cgroup, PURE_V2_MOUNTINFO) == [
        CgroupMount("bind", "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope", "")
    ]
    assert plan_cgroup_mounts("0::/\n", PURE_V2_MOUNTINFO) == [
        CgroupMount("bind", "/sys/fs/cgroup", "")
    ]


def test_pure_v2_host_ignores_a_leftover_named_v1_hierarchy() -> None:
    # Hosts that once ran a v1-only container keep "name=systemd" in /proc/self/cgroup.
    cgroup = "1:name=systemd:/\n0::/init.scope\n"
    leftover = "90 24 0:50 / /run/cg rw - cgroup cgroup rw,name=systemd\n"
    assert plan_cgroup_mounts(cgroup, PURE_V2_MOUNTINFO + leftover) == [
        CgroupMount("bind", "/sys/fs/cgroup/init.scope", "")
    ]


def test_escaped_mount_points_are_decoded_and_cgroup_paths_kept_raw() -> None:
    cgroup = "4:memory:/my group\n2:name=odd:/a\\b\n0::/\n"
    mountinfo = (
        "50 1 0:40 / /mnt/cg\\040roots/mem\\011ory rw - cgroup none rw,memory\n"
        "51 1 0:41 / /mnt/back\\134slash\\012nl rw - cgroup none rw,name=odd\n"
        "52 1 0:42 / /mnt/v\\0402\\9 rw - cgroup2 none rw\n"
    )
    assert plan_cgroup_mounts(cgroup, mountinfo) == [
        TMPFS,
        CgroupMount("bind", "/mnt/cg roots/mem\tory/my group", "mem\tory"),
        CgroupMount("bind", "/mnt/back\\slash\nnl/a\\b", "back\\slash\nnl"),
        # Not an escape the kernel writes: kept as it is.
        CgroupMount("bind", "/mnt/v 2\\9", "v 2\\9"),
        # A controller mounted under another name is still reachable by its own.
        CgroupMount("symlink", "mem\tory", "memory"),
    ]


def test_hierarchies_that_are_not_mounted_are_skipped() -> None:
    cgroup = "10:rdma:/\n4:memory:/a\n3:hugetlb:/\n0::/a\n"
    mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert plan_cgroup_mounts(cgroup, mountinfo) == [
        TMPFS, CgroupMount("bind", "/sys/fs/cgroup/memory/a", "memory")
    ]


def test_a_mount_of_a_subtree_is_used_relative_to_its_root() -> None:
    # Inside another container: the host bound only our own cgroup at .../memory.
    mountinfo = "35 31 0:32 /ctr /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert plan_cgroup_mounts("4:memory:/ctr/sub\n", mountinfo)[1:] == [
        CgroupMount("bind", "/sys/fs/cgroup/memory/sub", "memory")
    ]
    assert plan_cgroup_mounts("4:memory:/ctr\n", mountinfo)[1:] == [
        CgroupMount("bind", "/sys/fs/cgroup/memory", "memory")
    ]
    # Neither a sibling of that subtree nor a path outside our cgroup namespace is reachable.
    assert plan_cgroup_mounts("4:memory:/ctr2\n", mountinfo) == [TMPFS]
    assert plan_cgroup_mounts("4:memory:/../x\n", HYBRID_MOUNTINFO) == [TMPFS]


def test_the_first_mount_of_a_hierarchy_wins() -> None:
    mountinfo = (
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "90 1 0:32 / /elsewhere/mem rw - cgroup cgroup rw,memory\n"
    )
    assert plan_cgroup_mounts("4:memory:/\n", mountinfo)[1:] == [
        CgroupMount("bind", "/sys/fs/cgroup/memory", "memory")
    ]


def test_malformed_lines_are_ignored() -> None:
    cgroup = "garbage\n\n4:memory:relative\n5::/v1-without-controllers\n4:memory:/\n"
    mountinfo = "short line\n35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert plan_cgroup_mounts(cgroup, mountinfo) == [
        TMPFS, CgroupMount("bind", "/sys/fs/cgroup/memory", "memory")
    ]


def test_the_cgroups_being_joined_stand_in_for_the_current_ones() -> None:
    # The init plans its /sys/fs/cgroup while the supervisor moves it into the container's
    # devices cgroup (v1) and, on a v2 host, its cgroup2 one.
    mounts = host_mounts(HYBRID_MOUNTINFO)
    joined = with_joined(HYBRID_CGROUP, mounts, ["/sys/fs/cgroup/devices/pyctr/box"])
    assert "5:devices:/pyctr/box" in joined.splitlines()
    assert [line for line in joined.splitlines() if "devices" not in line] == [
        line for line in HYBRID_CGROUP.splitlines() if "devices" not in line]
    unified = with_joined(HYBRID_CGROUP, mounts, ["/sys/fs/cgroup/unified/pyctr/box"])
    assert "0::/pyctr/box" in unified.splitlines()
    assert "5:devices:/" in unified.splitlines()


def test_cgroup_mount_compares_by_value() -> None:
    assert CgroupMount("bind", "/a", "b") == CgroupMount("bind", "/a", "b")
    assert CgroupMount("bind", "/a", "b") != CgroupMount("symlink", "/a", "b")
    assert CgroupMount("bind", "/a", "b") != ("bind", "/a", "b")
    assert repr(CgroupMount("bind", "/a", "b")) == "CgroupMount('bind', '/a', 'b')"


def test_this_machine_binds_existing_directories() -> None:
    plan = read_host_cgroup_mounts()
    binds = [step for step in plan if step.kind == "bind"]
    assert binds, plan
    for step in binds:
        assert os.path.isdir(step.source), step


def test_own_cgroup_directory_is_the_first_visible_hierarchys() -> None:
    # name= hierarchies hold no controller to move in (skipped); the first real one counts.
    assert own_cgroup_directory(HYBRID_CGROUP, HYBRID_MOUNTINFO) == "/sys/fs/cgroup/pids"
    assert own_cgroup_directory(COMOUNTED_CGROUP, COMOUNTED_MOUNTINFO) == (
        "/sys/fs/cgroup/net_cls,net_prio")
    assert own_cgroup_directory(COMOUNTED_CGROUP.split("\n", 1)[1], COMOUNTED_MOUNTINFO) == (
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/docker.service")
    assert own_cgroup_directory("0::/user.slice/x.scope\n", PURE_V2_MOUNTINFO) == (
        "/sys/fs/cgroup/user.slice/x.scope")
    assert own_cgroup_directory("0::/../outside\n", PURE_V2_MOUNTINFO) is None
    assert own_cgroup_directory(HYBRID_CGROUP, "") is None


@requires_root
def test_keeping_moves_primed_leaves_this_process_where_it_was() -> None:
    # The library's primer moves this process into its own cgroup, over and over: nothing
    # may change, and its thread ends once the time is up.
    from pyctr.supervisor import primer

    before = Path("/proc/self/cgroup").read_text()
    procs = primer.own_procs_file()
    assert procs is not None and os.path.isfile(procs)
    primer.keep_primed(0.05)
    wait_until(lambda: not primer._keeper.running, "the primer's thread to end", timeout=5)
    assert Path("/proc/self/cgroup").read_text() == before


def _apply_and_check(plan: list[CgroupMount], destination: str) -> None:
    """In the child: apply ``plan`` under ``destination`` read-only, then look at it."""
    sys = LinuxSyscalls()
    unshare(CLONE_NEWNS)
    # Before anything else, so that none of the mounts below propagates to the host.
    sys.mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    for step in plan:
        path = os.path.join(destination, step.target) if step.target else destination
        if step.kind == "tmpfs":
            sys.mount("tmpfs", path, "tmpfs", 0, "mode=755")
        elif step.kind == "bind":
            os.mkdir(path, 0o755)
            sys.mount(step.source, path, None, MS_BIND | MS_REC, None)
            sys.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        else:
            os.symlink(step.source, path)

    for step in plan:
        if step.kind == "bind":
            entries = os.listdir(os.path.join(destination, step.target))
            assert "cgroup.procs" in entries, (step, entries)
    assert "memory.limit_in_bytes" in os.listdir(os.path.join(destination, "memory"))
    procs = os.path.join(destination, "memory", "cgroup.procs")
    for attempt in (
        lambda: os.open(procs, os.O_WRONLY),
        lambda: os.mkdir(os.path.join(destination, "memory", "pyctr-test")),
    ):
        try:
            attempt()
        except OSError as exc:
            assert exc.errno == errno.EROFS, exc
        else:
            raise AssertionError("a write into the read-only cgroup bind succeeded")


@requires_root
def test_plan_applies_read_only_in_a_private_mount_namespace(tmp_path: Path) -> None:
    plan = read_host_cgroup_mounts()
    if not any(step.target == "memory" for step in plan):
        pytest.skip("no cgroup v1 memory hierarchy on this host")
    with open("/proc/self/mountinfo") as file:
        before = file.read().splitlines()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            _apply_and_check(plan, str(tmp_path))
            status = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, report
    with open("/proc/self/mountinfo") as file:
        assert file.read().splitlines() == before, "the host's mount table changed"
    assert os.listdir(tmp_path) == [], "the tmpfs and binds were visible on the host"
