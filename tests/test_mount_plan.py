"""Init's mount plan and namespace set-up against a recording double of the syscall layer:
the order of operations a spec turns into, checked without root."""

from __future__ import annotations

import json

import pytest
from fakes import RecordingSyscalls

from pyctr.init.main import NAMESPACES, build_container, explain
from pyctr.init.rootfs import (
    Chroot,
    MountInRoot,
    PivotRoot,
    Propagation,
    ReadOnlyRoot,
    apply_plan,
    parse_options,
    plan_root,
)
from pyctr.linux.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    SyscallError,
)
from pyctr.protocol import Config, Log, Message
from pyctr.spec.docker import build_spec
from pyctr.spec.model import Device, Mount, Namespace, Spec, SpecError


def default_spec(**options: object) -> Spec:
    return build_spec("/r", ["/bin/true"], hostname="box", **options)  # type: ignore[arg-type]


def run_plan(spec: Spec, **options: bool) -> tuple[RecordingSyscalls, list[str]]:
    sys = RecordingSyscalls()
    made = apply_plan(plan_root(spec, "/r", **options), sys, "/r")
    return sys, made


def mounts(calls: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [call for call in calls if call[0] == "mount"]


def test_propagation_is_made_private_before_anything_is_mounted() -> None:
    sys, _ = run_plan(default_spec())
    assert sys.calls[0] == ("mount", None, "/", None, MS_REC | MS_PRIVATE, None)


def test_a_mount_asking_for_propagation_makes_the_root_a_slave_instead(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for option in ("rslave", "shared"):
        sys, _ = run_plan(default_spec(volumes=[f"{tmp_path}:/data:{option}"]))
        assert sys.calls[0] == ("mount", None, "/", None, MS_REC | MS_SLAVE, None)


def test_rootfs_is_bind_mounted_onto_itself_before_the_pivot() -> None:
    sys, _ = run_plan(default_spec())
    bind = ("mount", "/r", "/r", None, MS_BIND | MS_REC, None)
    assert sys.calls[1] == bind
    assert sys.calls.index(bind) < sys.names().index("pivot_root")


def test_docker_default_mounts_in_dockers_order_each_resolved_inside_the_root() -> None:
    sys, made = run_plan(default_spec())
    assert made == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                    "/dev/shm", "/tmp"]
    for destination in ("/proc", "/dev", "/dev/pts", "/sys", "/dev/mqueue", "/dev/shm", "/tmp"):
        resolve = next(call for call in sys.calls if call[:2] == ("resolve", destination))
        mount = next(call for call in mounts(sys.calls) if call[2] == "/r" + destination)
        assert sys.calls.index(resolve) < sys.calls.index(mount)
        assert resolve[2] == "dir"
    sysfs = next(call for call in mounts(sys.calls) if call[3] == "sysfs")
    assert sysfs[4] == MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY
    dev = next(call for call in mounts(sys.calls) if call[2] == "/r/dev")
    assert dev[4] == MS_NOSUID | MS_STRICTATIME and dev[5] == "mode=755,size=65536k"
    devpts = next(call for call in mounts(sys.calls) if call[3] == "devpts")
    assert devpts[5] == "newinstance,ptmxmode=0666,mode=0620,gid=5"


def test_proc_sys_and_dev_may_not_be_symlinks_other_destinations_resolve_inside() -> None:
    sys, _ = run_plan(default_spec())
    refused = {call[1] for call in sys.calls if call[0] == "resolve" and call[3]}
    assert {"/proc", "/sys", "/dev"} <= refused
    assert "/tmp" not in refused


def test_dev_has_the_default_devices_and_links_inside_its_tmpfs() -> None:
    sys, _ = run_plan(default_spec())
    nodes = {call[1]: (call[3], call[4]) for call in sys.calls if call[0] == "mknod"}
    assert nodes == {
        "/r/dev/null": (1, 3), "/r/dev/zero": (1, 5), "/r/dev/full": (1, 7),
        "/r/dev/random": (1, 8), "/r/dev/urandom": (1, 9), "/r/dev/tty": (5, 0),
    }
    links = {call[2]: call[1] for call in sys.calls if call[0] == "symlink"}
    assert links["/r/dev/ptmx"] == "pts/ptmx"
    assert links["/r/dev/fd"] == "/proc/self/fd"
    dev_tmpfs = sys.calls.index(next(c for c in mounts(sys.calls) if c[2] == "/r/dev"))
    assert all(sys.calls.index(c) > dev_tmpfs for c in sys.calls if c[0] in ("mknod", "symlink"))


def test_spec_devices_are_made_with_their_mode_and_owner() -> None:
    spec = default_spec()
    spec.linux.devices.append(Device("/dev/fuse", "c", 10, 229, file_mode=0o600, uid=7, gid=8))
    sys, _ = run_plan(spec)
    node = next(call for call in sys.calls if call[0] == "mknod" and call[1] == "/r/dev/fuse")
    assert node[2] & 0o7777 == 0o600 and node[3:] == (10, 229)
    assert ("chown", "/r/dev/fuse", 7, 8) in sys.calls


def test_pivot_root_detaches_the_old_root_last() -> None:
    sys, _ = run_plan(default_spec())
    tail = sys.calls[-4:]
    assert tail[0] == ("chdir", "/r")
    assert tail[1] == ("pivot_root", ".", ".")
    assert tail[2] == ("umount2", ".", MNT_DETACH)
    assert tail[3] == ("chdir", "/")


def test_chroot_option_uses_chroot_and_no_pivot() -> None:
    plan = plan_root(default_spec(), "/r", chroot=True)
    assert isinstance(plan[-1], Chroot)
    sys = RecordingSyscalls()
    apply_plan(plan, sys, "/r")
    assert "pivot_root" not in sys.names()
    assert sys.calls[-3:] == [("chdir", "/r"), ("chroot", "."), ("chdir", "/")]


def test_read_only_root_is_remounted_after_the_mounts_and_before_the_pivot() -> None:
    plan = plan_root(default_spec(read_only=True), "/r")
    assert isinstance(plan[-2], ReadOnlyRoot) and isinstance(plan[-1], PivotRoot)
    sys = RecordingSyscalls()
    apply_plan(plan, sys, "/r")
    assert ("mount", None, "/r", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None) in sys.calls


def test_read_only_binds_are_remounted_and_made_read_only_below_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = default_spec(volumes=[f"{tmp_path}:/data:ro"])
    sys, _ = run_plan(spec)
    bind = ("mount", str(tmp_path), "/r/data", None, MS_BIND | MS_REC, None)
    remount = ("mount", None, "/r/data", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    assert ("mount_flags", "/r/data") in sys.calls
    assert sys.calls.index(bind) < sys.calls.index(remount)
    assert ("set_recursive", "/r/data", MS_RDONLY) in sys.calls


def test_a_read_only_remount_keeps_the_sources_nosuid_nodev_noexec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sys = RecordingSyscalls()
    sys.flags_of["/r/data"] = MS_NOSUID | MS_NODEV | MS_NOEXEC
    apply_plan(plan_root(default_spec(volumes=[f"{tmp_path}:/data:ro"]), "/r"), sys, "/r")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    assert ("mount", None, "/r/data", None, flags, None) in sys.calls


def test_a_bind_of_a_file_creates_a_file_mount_point(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "hosts").write_text("127.0.0.1 x\n")
    sys, _ = run_plan(default_spec(volumes=[f"{tmp_path}/hosts:/etc/hosts"]))
    assert ("resolve", "/etc/hosts", "file", False) in sys.calls


def test_mount_options_split_into_flags_propagation_and_data() -> None:
    flags, propagation, data = parse_options(
        ["nosuid", "ro", "rw", "noexec", "rshared", "size=64m", "mode=1777", "x-foo"])
    assert flags == MS_NOSUID | MS_NOEXEC
    assert propagation == MS_SHARED | MS_REC
    assert data == "size=64m,mode=1777"


def test_root_propagation_applies_to_the_new_root_after_the_pivot() -> None:
    spec = default_spec()
    spec.linux.rootfs_propagation = "shared"
    plan = plan_root(spec, "/r")
    assert isinstance(plan[-1], Propagation) and isinstance(plan[-2], PivotRoot)
    sys = RecordingSyscalls()
    apply_plan(plan, sys, "/r")
    assert sys.calls[-1] == ("mount", None, "/", None, MS_SHARED, None)


def test_sysctls_are_written_through_the_containers_proc() -> None:
    spec = default_spec()
    spec.linux.sysctl = {"net.ipv4.ip_forward": "1"}
    sys, _ = run_plan(spec)
    assert ("write_file", "/r/proc/sys/net/ipv4/ip_forward", "1") in sys.calls
    proc = sys.calls.index(next(c for c in mounts(sys.calls) if c[3] == "proc"))
    write = sys.names().index("write_file")
    assert proc < write < sys.names().index("pivot_root")


def test_sysctls_outside_the_containers_namespaces_are_refused() -> None:
    spec = default_spec()
    spec.linux.sysctl = {"kernel.core_pattern": "|/x"}
    with pytest.raises(SpecError, match="not namespaced"):
        spec.check()
    spec.linux.sysctl = {"net.ipv4.ip_forward": "1"}
    spec.linux.namespaces = [ns for ns in spec.linux.namespaces if ns.type != "network"]
    with pytest.raises(SpecError, match="new network namespace"):
        spec.check()


def test_plan_is_data() -> None:
    plan = plan_root(default_spec(), "/r/")
    assert isinstance(plan[-1], PivotRoot)
    assert [step.destination for step in plan if isinstance(step, MountInRoot)][:2] == [
        "/proc", "/dev"]


def test_relative_rootfs_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        plan_root(default_spec(), "rootfs")


def test_a_failing_step_stops_the_plan() -> None:
    sys = RecordingSyscalls(fail_on=("resolve", "/sys"))
    with pytest.raises(SyscallError) as caught:
        apply_plan(plan_root(default_spec(), "/r"), sys, "/r")
    assert "pivot_root" not in sys.names()
    assert sys.calls[-1][:2] == ("resolve", "/sys")
    assert "`/sys`" in str(caught.value)


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def log(self, level: str, event: str, **fields: object) -> None:
        self.sent.append(Log("t", level, event, dict(fields)))  # type: ignore[arg-type]


def test_build_container_enters_namespaces_then_network_hostname_and_root() -> None:
    sys = RecordingSyscalls()
    channel = FakeChannel()
    spec = default_spec()
    spec.domainname = "example.org"
    config = Config("c1", "/r", json.dumps(spec.to_value()))
    namespaces, _ = build_container(config, spec, sys, channel)  # type: ignore[arg-type]
    # No cgroups to wait for (``config.cgroups``): the cgroup namespace is made at once.
    assert sys.calls[0] == ("unshare", CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET
                            | CLONE_NEWCGROUP)
    assert sys.calls[1] == ("link_up", "lo")
    assert sys.calls[2] == ("sethostname", "box")
    assert sys.calls[3] == ("setdomainname", "example.org")
    assert sys.calls[4][0] == "mount"
    assert namespaces == ["mount", "uts", "ipc", "network", "cgroup", "pid"]
    assert [name for name, _ in NAMESPACES] == ["mount", "uts", "ipc", "network", "cgroup"]
    assert isinstance(channel.sent[-1], Log)
    assert channel.sent[-1].event == "rootfs.ready"


def test_namespaces_with_a_path_are_joined_before_the_rest_are_made() -> None:
    sys = RecordingSyscalls()
    spec = default_spec()
    spec.linux.namespaces = [Namespace("pid"), Namespace("mount"),
                             Namespace("network", "/run/netns/x")]
    spec.hostname = None
    build_container(Config("c1", "/r", ""), spec, sys, FakeChannel())  # type: ignore[arg-type]
    assert sys.calls[0] == ("setns", "/run/netns/x", CLONE_NEWNET)
    assert sys.calls[1] == ("unshare", CLONE_NEWNS)
    assert "link_up" not in sys.names()  # a joined network is set up already


def test_a_bind_mount_without_a_source_or_an_unknown_field_is_refused() -> None:
    value = default_spec().to_value()
    value["mounts"] = [Mount("/x", "bind").to_value()]
    with pytest.raises(SpecError, match="needs a source"):
        Spec.from_value(value)


def test_explanations_name_the_path_and_what_to_do() -> None:
    line = explain(SyscallError(30, "create mount point", "/proc"), "/r")
    assert "/r/proc" in line and "Read-only file system" in line and "create" in line
    assert "\n" not in line
    assert "kernel lacks" in explain(SyscallError(22, "unshare", "flags=0x1"), "/r")


def test_read_only_and_masked_paths_come_after_the_mounts_and_before_the_pivot() -> None:
    spec = default_spec()
    spec.linux.readonly_paths = ["/proc/sys"]
    spec.linux.masked_paths = ["/proc/kcore", "/sys/firmware"]
    sys, _ = run_plan(spec)
    proc = sys.calls.index(next(c for c in mounts(sys.calls) if c[3] == "proc"))
    bind = ("mount", "/r/proc/sys", "/r/proc/sys", None, MS_BIND | MS_REC, None)
    remount = ("mount", None, "/r/proc/sys", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    null = ("mount", "/dev/null", "/r/proc/kcore", None, MS_BIND, None)
    empty = ("mount", "tmpfs", "/r/sys/firmware", "tmpfs", MS_RDONLY, None)
    places = [sys.calls.index(call) for call in (bind, remount, null, empty)]
    assert proc < places[0] < places[1] < places[2] < places[3] < sys.names().index("pivot_root")


def test_a_masked_or_read_only_path_the_kernel_lacks_is_left_alone() -> None:
    spec = default_spec()
    spec.linux.readonly_paths = ["/proc/sysrq-trigger"]
    spec.linux.masked_paths = ["/proc/timer_stats"]
    sys = RecordingSyscalls(fail_on=("resolve", "/proc/timer_stats"))
    sys.fail_errno = 2  # ENOENT: not there
    apply_plan(plan_root(spec, "/r"), sys, "/r")
    assert "pivot_root" in sys.names()
    assert not any(call[0] == "mount" and call[2] == "/r/proc/timer_stats"
                   for call in sys.calls)


def test_nodev_makes_the_root_and_every_mount_but_dev_nodev() -> None:
    # Where the kernel cannot hold the container to its devices (no devices controller, no
    # device program): no node outside /dev opens, even on a tmpfs that asks for dev.
    spec = default_spec(tmpfs=["/run:dev"])
    sys, _ = run_plan(spec, nodev=True)
    root_bind = ("mount", "/r", "/r", None, MS_BIND | MS_REC, None)
    nodev_root = next(call for call in sys.calls if call[0] == "set_recursive")
    assert nodev_root[1:] == ("/r", MS_NODEV)
    assert sys.calls.index(root_bind) < sys.calls.index(nodev_root)
    flags = {call[2]: int(call[4]) for call in mounts(sys.calls) if call[1] != "/r"}
    assert flags["/r/run"] & MS_NODEV
    assert not flags["/r/dev"] & MS_NODEV and not flags["/r/dev/pts"] & MS_NODEV
    plain, _ = run_plan(spec)
    assert not [call for call in plain.calls if call[:2] == ("set_recursive", "/r")]
    assert not {call[2]: int(call[4]) for call in mounts(plain.calls)}["/r/run"] & MS_NODEV


def test_an_overlay_root_replaces_the_bind_and_sits_on_its_own_lower_directory() -> None:
    sys = RecordingSyscalls()
    apply_plan(plan_root(default_spec(read_only=True), "/r", overlay=("/l/upper", "/l/work")),
               sys, "/r")
    calls = mounts(sys.calls)
    assert calls[1] == ("mount", "overlay", "/r", "overlay", 0,
                        "lowerdir=/r,upperdir=/l/upper,workdir=/l/work")
    assert not any(call[1] == "/r" and call[2] == "/r" for call in calls)  # no bind of it
    # The rest goes on as over a bound rootfs: --read-only remounts the overlay read-only.
    remounts = [call for call in calls if call[1:3] == (None, "/r")]
    assert remounts and remounts[-1][4] & (MS_BIND | MS_REMOUNT | MS_RDONLY) == (
        MS_BIND | MS_REMOUNT | MS_RDONLY)


def test_an_overlay_that_cannot_be_mounted_is_explained() -> None:
    message = explain(SyscallError(22, "mount overlay", "/l/upper"), "/r")
    assert "cannot mount the overlay root over /r" in message
    assert "/l/upper" in message and "not overlayfs itself" in message
