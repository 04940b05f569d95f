"""Init's mount plan and namespace set-up against a recording double of the syscall layer:
the order of operations, checked without root."""

from __future__ import annotations

import pytest
from fakes import RecordingSyscalls

from pyctr.init.main import NAMESPACES, build_container, explain
from pyctr.init.rootfs import Chroot, Mount, PivotRoot, apply_plan, plan_root
from pyctr.linux.syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    SyscallError,
)
from pyctr.protocol import Config, Log, Message


def mounts(calls: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [call for call in calls if call[0] == "mount"]


def test_propagation_is_made_private_before_anything_is_mounted() -> None:
    sys = RecordingSyscalls()
    apply_plan(plan_root("/r"), sys)
    first = sys.calls[0]
    assert first == ("mount", None, "/", None, MS_REC | MS_PRIVATE, None)


def test_rootfs_is_bind_mounted_onto_itself_before_the_pivot() -> None:
    sys = RecordingSyscalls()
    apply_plan(plan_root("/r"), sys)
    bind = ("mount", "/r", "/r", None, MS_BIND | MS_REC, None)
    assert bind in sys.calls
    assert sys.calls.index(bind) < sys.names().index("pivot_root")


def test_filesystems_mounted_in_order_with_their_mount_points_created_first() -> None:
    sys = RecordingSyscalls()
    made = apply_plan(plan_root("/r"), sys)
    assert made == ["/proc", "/sys", "/tmp", "/dev", "/dev/pts", "/dev/shm"]
    for call in mounts(sys.calls)[2:-1]:  # the last is the pivot's own MS_SLAVE
        target = call[2]
        assert ("mkdir", target, 0o755) in sys.calls
        assert sys.calls.index(("mkdir", target, 0o755)) < sys.calls.index(call)
    sysfs = next(call for call in sys.calls if call[0] == "mount" and call[3] == "sysfs")
    assert isinstance(sysfs[4], int) and sysfs[4] & MS_RDONLY
    devpts = next(call for call in sys.calls if call[0] == "mount" and call[3] == "devpts")
    assert "newinstance" in str(devpts[5])


def test_dev_has_the_minimal_devices_and_links_inside_its_tmpfs() -> None:
    sys = RecordingSyscalls()
    apply_plan(plan_root("/r"), sys)
    nodes = {call[1]: (call[3], call[4]) for call in sys.calls if call[0] == "mknod"}
    assert nodes == {
        "/r/dev/null": (1, 3), "/r/dev/zero": (1, 5), "/r/dev/full": (1, 7),
        "/r/dev/random": (1, 8), "/r/dev/urandom": (1, 9), "/r/dev/tty": (5, 0),
    }
    links = {call[2]: call[1] for call in sys.calls if call[0] == "symlink"}
    assert links["/r/dev/ptmx"] == "pts/ptmx"
    assert links["/r/dev/fd"] == "/proc/self/fd"
    assert {links[f"/r/dev/{name}"] for name in ("stdin", "stdout", "stderr")} == {
        "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"}
    dev_tmpfs = sys.calls.index(next(c for c in mounts(sys.calls) if c[2] == "/r/dev"))
    assert all(sys.calls.index(c) > dev_tmpfs for c in sys.calls if c[0] in ("mknod", "symlink"))


def test_pivot_root_detaches_the_old_root_last() -> None:
    sys = RecordingSyscalls()
    apply_plan(plan_root("/r"), sys)
    tail = sys.calls[-5:]
    assert tail[0] == ("chdir", "/r")
    assert tail[1] == ("pivot_root", ".", ".")
    assert tail[3] == ("umount2", ".", MNT_DETACH)
    assert tail[4] == ("chdir", "/")


def test_chroot_option_uses_chroot_and_no_pivot() -> None:
    sys = RecordingSyscalls()
    plan = plan_root("/r", chroot=True)
    assert isinstance(plan[-1], Chroot)
    apply_plan(plan, sys)
    assert "pivot_root" not in sys.names()
    assert sys.calls[-3:] == [("chdir", "/r"), ("chroot", "."), ("chdir", "/")]


def test_plan_is_data() -> None:
    plan = plan_root("/r/")
    assert isinstance(plan[-1], PivotRoot)
    assert all(step.target.startswith("/r") for step in plan[1:] if isinstance(step, Mount))
    assert "Mount('proc', '/r/proc', 'proc'" in repr(plan)


def test_relative_rootfs_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        plan_root("rootfs")


def test_a_failing_step_stops_the_plan() -> None:
    sys = RecordingSyscalls(fail_on=("mkdir", "/r/sys"))
    with pytest.raises(SyscallError) as caught:
        apply_plan(plan_root("/r"), sys)
    assert "pivot_root" not in sys.names()
    assert sys.calls[-1] == ("mkdir", "/r/sys", 0o755)
    assert "`/r/sys`" in str(caught.value)


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def log(self, level: str, event: str, **fields: object) -> None:
        self.sent.append(Log("t", level, event, dict(fields)))  # type: ignore[arg-type]


def test_build_container_enters_namespaces_then_network_hostname_and_root() -> None:
    sys = RecordingSyscalls()
    channel = FakeChannel()
    config = Config("c1", "/r", ["/bin/true"], {}, "/", "box", False)
    build_container(config, sys, channel)  # type: ignore[arg-type]
    assert sys.calls[0] == ("unshare", CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)
    assert sys.calls[1] == ("link_up", "lo")
    assert sys.calls[2] == ("sethostname", "box")
    assert sys.calls[3][0] == "mount"
    assert [name for name, _ in NAMESPACES] == ["mnt", "uts", "ipc", "net"]
    assert isinstance(channel.sent[-1], Log)
    assert channel.sent[-1].event == "rootfs.ready"


def test_explanations_name_the_path_and_what_to_do() -> None:
    line = explain(SyscallError(30, "create mount point", "/r/proc"), "/r")
    assert "/r/proc" in line and "Read-only file system" in line and "create" in line
    assert "\n" not in line
    assert "kernel lacks" in explain(SyscallError(22, "unshare", "flags=0x1"), "/r")
