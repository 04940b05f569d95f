"""The container's cgroup and its devices (supervisor/cgroup.py, supervisor/devices_bpf.py).

As root, for real: a forked child is put in a ContainerCgroup, makes nodes with mknod in a
tmpfs of its own and tries to open and mount them; on cgroup v1 through the devices controller,
on cgroup v2 through the BPF program (in the hybrid tree at /sys/fs/cgroup/unified, where the
kernel enforces it just the same). The rest runs anywhere: the rules a spec gives, the layout
read from recorded mountinfo text, the order of the writes through a recording double of the
cgroup filesystem on a temp directory, and the BPF program, decoded and run by a small
interpreter against the v1 controller's rule.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, process_state, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from pyctr.linux.procfs import host_mounts
from pyctr.linux.syscalls import (
    CLONE_NEWNS,
    MS_NODEV,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    LinuxSyscalls,
    unshare,
)
from pyctr.spec.model import Device, Linux, Namespace, Process, Spec, SpecError
from pyctr.supervisor import devices_bpf
from pyctr.supervisor.cgroup import (
    CLAIMS,
    PARENT,
    CgroupFiles,
    ContainerCgroup,
    Layout,
    detect_layout,
    host_layout,
    remove_stale,
    sweep_stale,
)
from pyctr.supervisor.devices import DEFAULT_RULES, DeviceRule, device_rules
from pyctr.supervisor.errors import PyctrError

# Recorded on the development machine (hybrid), and on a pure v2 host.
HYBRID_MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""
COMOUNTED_MOUNTINFO = """\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/devices,freezer rw,nosuid shared:15 - cgroup cgroup \
rw,devices,freezer
"""
NO_DEVICES_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
"""
HIDDEN_V2_MOUNTINFO = V2_MOUNTINFO + (
    "40 30 0:40 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n")


def spec(devices: list[Device] | None = None, resources: object = None) -> Spec:
    linux = Linux([Namespace("pid"), Namespace("mount")], devices=devices,
                  resources=resources)  # type: ignore[arg-type]
    return Spec(Process(["sh"], []), "/rootfs", linux=linux)


def lines(rules: list[DeviceRule]) -> list[tuple[str, bool]]:
    return [(rule.line(), rule.allow) for rule in rules]


# -- The rules a spec gives ----------------------------------------------------------------


def test_the_default_rules_are_dockers_without_block_nodes() -> None:
    assert lines(device_rules(spec())) == [
        ("a", False), ("c *:* m", True),
        ("c 1:3 rwm", True), ("c 1:5 rwm", True), ("c 1:7 rwm", True), ("c 1:8 rwm", True),
        ("c 1:9 rwm", True), ("c 5:0 rwm", True), ("c 5:1 rwm", True), ("c 5:2 rwm", True),
        ("c 136:* rwm", True)]


def test_linux_devices_are_allowed_after_the_defaults() -> None:
    devices = [Device("/dev/kmsg", "c", 1, 11), Device("/dev/loop9", "b", 7, 9),
               Device("/dev/raw", "u", 162, 0), Device("/dev/fifo", "p", 0, 0)]
    rules = device_rules(spec(devices))
    assert rules[:len(DEFAULT_RULES)] == list(DEFAULT_RULES)
    assert lines(rules[len(DEFAULT_RULES):]) == [
        ("c 1:11 rwm", True), ("b 7:9 rwm", True), ("c 162:0 rwm", True)]


def test_resources_devices_come_first_in_their_order_then_the_defaults() -> None:
    # As runc orders them: the defaults after the config's rules (runc's own template denies
    # everything there), then linux.devices.
    resources = {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "mwr"},
        {"allow": False, "type": "b", "major": 8, "access": "w"},
        {"allow": True, "type": "c", "major": None, "minor": 3, "access": ""},
    ], "memory": {"limit": 1}}
    rules = device_rules(spec([Device("/dev/kmsg", "c", 1, 11)], resources))
    assert lines(rules) == [
        ("a", False),
        ("a", False), ("c 10:200 rwm", True), ("b 8:* w", False), ("c *:3 rwm", True),
        *lines(list(DEFAULT_RULES[1:])),
        ("c 1:11 rwm", True)]


def test_a_resources_rule_naming_a_linux_device_decides_its_access() -> None:
    # docker's --device HOST:CTR:r: the node, and a rule with its access.
    resources = {"devices": [{"allow": True, "type": "c", "major": 1, "minor": 11,
                              "access": "r"}]}
    rules = device_rules(spec([Device("/dev/kmsg", "c", 1, 11)], resources))
    assert lines(rules).count(("c 1:11 r", True)) == 1
    assert ("c 1:11 rwm", True) not in lines(rules)


@pytest.mark.parametrize(("resources", "fragment"), [
    ([], "linux.resources must be an object"),
    ({"devices": {}}, "linux.resources.devices must be a list"),
    ({"devices": ["c 1:3 rwm"]}, "linux.resources.devices[0] must be an object"),
    ({"devices": [{"type": "c"}]}, "linux.resources.devices[0].allow must be true or false"),
    ({"devices": [{"allow": "yes"}]}, "linux.resources.devices[0].allow must be true or false"),
    ({"devices": [{"allow": True, "access": "rwm"}, {"allow": True, "type": "u"}]},
     "linux.resources.devices[1].type must be a, c or b, got 'u'"),
    ({"devices": [{"allow": True, "type": "c", "major": -1}]},
     "linux.resources.devices[0].major must be a whole number"),
    ({"devices": [{"allow": True, "type": "c", "major": 1, "minor": "3"}]},
     "linux.resources.devices[0].minor must be a whole number"),
    ({"devices": [{"allow": True, "type": "c", "minor": True}]},
     "linux.resources.devices[0].minor must be a whole number"),
    ({"devices": [{"allow": True, "type": "c", "major": 1 << 32}]},
     "linux.resources.devices[0].major must be a whole number from 0 to 4294967295"),
    ({"devices": [{"allow": True, "type": "c", "access": "rx"}]},
     "linux.resources.devices[0].access must be letters of rwm"),
    ({"devices": [{"allow": True, "type": "c", "access": 7}]},
     "linux.resources.devices[0].access must be letters of rwm"),
    ({"devices": [{"allow": False, "access": "w"}]},
     "linux.resources.devices[0]: a rule for every device"),
    ({"devices": [{"allow": False, "major": 8}]},
     "linux.resources.devices[0]: a rule for every device"),
    ({"devices": [{"allow": True, "type": "c", "path": "/dev/x"}]},
     "linux.resources.devices[0].path: pyctr does not implement this field"),
])
def test_bad_resources_devices_are_one_line_naming_the_field(resources: object,
                                                              fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        device_rules(spec(resources=resources))
    message = str(caught.value)
    assert "\n" not in message
    assert fragment in message


# -- The layout ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mountinfo", "layout"), [
    (HYBRID_MOUNTINFO, Layout("v1", "/sys/fs/cgroup/devices", {
        "cpu": "/sys/fs/cgroup/cpu", "memory": "/sys/fs/cgroup/memory",
        "devices": "/sys/fs/cgroup/devices"})),
    (V2_MOUNTINFO, Layout("v2", "/sys/fs/cgroup")),
    (COMOUNTED_MOUNTINFO, Layout("v1", "/sys/fs/cgroup/devices,freezer", {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "devices": "/sys/fs/cgroup/devices,freezer",
        "freezer": "/sys/fs/cgroup/devices,freezer"})),
    (NO_DEVICES_MOUNTINFO, Layout("none")),
    (HIDDEN_V2_MOUNTINFO, Layout("none")),
    ("", Layout("none")),
], ids=["hybrid", "v2", "comounted", "no-devices", "v2-hidden", "empty"])
def test_layout_from_mountinfo(mountinfo: str, layout: Layout) -> None:
    assert detect_layout(mountinfo) == layout


def test_the_host_layout_is_a_mounted_hierarchy() -> None:
    layout = host_layout()
    if layout.kind != "none":
        assert os.path.isfile(os.path.join(layout.root, "cgroup.procs"))
    if layout.kind == "v1":
        assert os.path.isfile(os.path.join(layout.root, "devices.allow"))


def test_importing_it_loads_nothing_heavy() -> None:
    # The CLI imports cgroup before it forks the init, and devices_bpf on v2 hosts.
    probe = ("import sys; import pyctr.supervisor.cli; before = set(sys.modules); "
             "import pyctr.supervisor.cgroup, pyctr.supervisor.devices_bpf; "
             "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True,
                            text=True, check=True).stdout.split()
    assert set(loaded) <= {"pyctr.supervisor.cgroup", "pyctr.supervisor.devices_bpf"}


# -- Create, add, remove against a recording double ---------------------------------------


class RecordingFiles(CgroupFiles):
    """A temp directory stands in for a hierarchy: directories are made and removed there for
    real, writes are recorded (and appended to the file, made if missing); ``fail`` makes the
    call whose (operation, path suffix, text) matches raise that errno, ``times`` times."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[tuple[str, str], tuple[int, int]] = {}
        self.attach_error: Exception | None = None

    def _maybe_fail(self, operation: str, path: str, text: str = "") -> None:
        for (name, suffix), (err, times) in list(self.fail.items()):
            if name == operation and (path.endswith(suffix) or text == suffix) and times:
                self.fail[name, suffix] = (err, times - 1)
                raise OSError(err, os.strerror(err))

    def mkdir(self, path: str) -> None:
        self.calls.append(("mkdir", path))
        self._maybe_fail("mkdir", path)
        super().mkdir(path)

    def claim(self, name: str, *, create: bool = True, path: str = "") -> int | None:
        return os.open(os.devnull, os.O_RDONLY)  # the double claims nothing on the host

    def claimed_path(self, fd: int) -> str:
        return ""

    def release(self, name: str, fd: int) -> None:
        os.close(fd)

    def write(self, path: str, text: str) -> None:
        self.calls.append(("write", path, text))
        self._maybe_fail("write", path, text)
        with open(path, "a") as file:
            file.write(text + "\n")

    def rmdir(self, path: str) -> None:
        self.calls.append(("rmdir", path))
        self._maybe_fail("rmdir", path)
        for entry in os.listdir(path) if os.path.isdir(path) else []:
            os.unlink(os.path.join(path, entry))
        super().rmdir(path)

    def attach_devices(self, path: str, rules: list[DeviceRule]) -> None:
        self.calls.append(("attach", path, *(rule.line() for rule in rules)))
        if self.attach_error is not None:
            raise self.attach_error


@pytest.fixture
def fake() -> RecordingFiles:
    return RecordingFiles()


def test_v1_denies_all_then_allows_each_rule_in_order(tmp_path: Path,
                                                      fake: RecordingFiles) -> None:
    rules = [*DEFAULT_RULES[:2], DeviceRule("c", 1, 3),
             DeviceRule("b", 8, -1, "w", allow=False)]
    cgroup = ContainerCgroup.create("box", rules, layout=Layout("v1", str(tmp_path)),
                                    files=fake)
    path = f"{tmp_path}/{PARENT}/box"
    assert cgroup.paths == [path] and cgroup.devices_enforced
    assert fake.calls == [
        ("mkdir", f"{tmp_path}/{PARENT}"), ("mkdir", path),
        ("write", f"{path}/devices.deny", "a"),
        ("write", f"{path}/devices.allow", "c *:* m"),
        ("write", f"{path}/devices.allow", "c 1:3 rwm"),
        ("write", f"{path}/devices.deny", "b 8:* w"),
    ]
    cgroup.add(1234)
    assert fake.calls[-1] == ("write", f"{path}/cgroup.procs", "1234")
    cgroup.remove()
    cgroup.remove()
    assert not os.path.exists(path) and os.path.isdir(f"{tmp_path}/{PARENT}")


def test_an_existing_parent_is_used(tmp_path: Path, fake: RecordingFiles) -> None:
    (tmp_path / PARENT).mkdir()
    cgroup = ContainerCgroup.create("box", [], layout=Layout("v1", str(tmp_path)), files=fake)
    assert cgroup.paths == [f"{tmp_path}/{PARENT}/box"]
    cgroup.remove()


def test_v2_attaches_the_program_and_writes_nothing(tmp_path: Path,
                                                    fake: RecordingFiles) -> None:
    rules = device_rules(spec())
    cgroup = ContainerCgroup.create("box", rules, layout=Layout("v2", str(tmp_path)),
                                    files=fake)
    path = f"{tmp_path}/{PARENT}/box"
    assert fake.calls == [("mkdir", f"{tmp_path}/{PARENT}"), ("mkdir", path),
                          ("attach", path, *(rule.line() for rule in rules))]
    assert cgroup.devices_enforced and cgroup.unenforced_reason == ""
    cgroup.remove()
    assert not os.path.exists(path)


def test_v2_without_a_program_keeps_the_cgroup_and_says_why(tmp_path: Path,
                                                            fake: RecordingFiles) -> None:
    fake.attach_error = devices_bpf.DeviceProgramError("cannot load a BPF device program: "
                                                       "the kernel has no bpf(2)")
    cgroup = ContainerCgroup.create("box", [], layout=Layout("v2", str(tmp_path)), files=fake)
    assert not cgroup.devices_enforced
    assert cgroup.unenforced_reason == ("cannot load a BPF device program: the kernel has no "
                                        "bpf(2)")
    assert os.path.isdir(cgroup.paths[0])
    cgroup.remove()
    assert not os.path.exists(cgroup.paths[0])


def test_no_cgroups_gives_an_unenforced_cgroup_that_does_nothing(
        fake: RecordingFiles) -> None:
    cgroup = ContainerCgroup.create("box", list(DEFAULT_RULES), layout=Layout("none"),
                                    files=fake)
    assert cgroup.paths == [] and not cgroup.devices_enforced
    assert "no cgroup devices controller" in cgroup.unenforced_reason
    cgroup.add(1)
    cgroup.remove()
    assert fake.calls == []
    assert remove_stale("box", layout=Layout("none"), files=fake) is False


def test_a_refused_rule_removes_the_cgroup_and_is_one_line(tmp_path: Path,
                                                           fake: RecordingFiles) -> None:
    fake.fail["write", "c 1:3 rwm"] = (errno.EPERM, 1)
    with pytest.raises(PyctrError) as caught:
        ContainerCgroup.create("box", [DEFAULT_RULES[0], DeviceRule("c", 1, 3)],
                               layout=Layout("v1", str(tmp_path)), files=fake)
    error = caught.value
    assert error.error == "host.cgroup_failed" and "\n" not in error.message
    assert error.message.startswith(f"cannot write 'c 1:3 rwm' to {tmp_path}/{PARENT}/box/"
                                    f"devices.allow: Operation not permitted; the parent")
    assert fake.calls[-1] == ("rmdir", f"{tmp_path}/{PARENT}/box")
    assert os.listdir(tmp_path / PARENT) == []


def test_a_failed_mkdir_is_one_line(tmp_path: Path, fake: RecordingFiles) -> None:
    fake.fail["mkdir", f"/{PARENT}"] = (errno.EROFS, 1)
    with pytest.raises(PyctrError) as caught:
        ContainerCgroup.create("box", [], layout=Layout("v1", str(tmp_path)), files=fake)
    assert caught.value.error == "host.cgroup_failed"
    assert caught.value.message.startswith(f"cannot create cgroup {tmp_path}/{PARENT}: "
                                           f"Read-only file system; ")


class ClaimedElsewhere(RecordingFiles):
    """A live supervisor holds every name's claim."""

    def claim(self, name: str, *, create: bool = True, path: str = "") -> int | None:
        self.calls.append(("claim", name))
        return None


def test_a_name_a_live_supervisor_holds_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / PARENT / "box").mkdir(parents=True)
    files = ClaimedElsewhere()
    with pytest.raises(PyctrError) as caught:
        ContainerCgroup.create("box", [], layout=Layout("v1", str(tmp_path)), files=files)
    assert caught.value.error == "host.cgroup_exists"
    assert "\n" not in caught.value.message and "is running" in caught.value.message
    assert files.calls == [("claim", "box")]
    assert (tmp_path / PARENT / "box").is_dir()
    assert remove_stale("box", layout=Layout("v1", str(tmp_path)), files=files) is True
    assert remove_stale("box", layout=Layout("v1", str(tmp_path)), files=files) is False


def test_a_stale_cgroup_of_the_name_is_replaced(tmp_path: Path, fake: RecordingFiles) -> None:
    # The claim is free, so whoever made the directory is gone.
    (tmp_path / PARENT / "box").mkdir(parents=True)
    cgroup = ContainerCgroup.create("box", [], layout=Layout("v1", str(tmp_path)), files=fake)
    path = f"{tmp_path}/{PARENT}/box"
    assert fake.calls[-3:] == [("mkdir", path), ("rmdir", path), ("mkdir", path)]
    cgroup.remove()
    assert not os.path.exists(path)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "x" * 256])
def test_a_name_that_is_no_directory_name_is_refused(tmp_path: Path, fake: RecordingFiles,
                                                     name: str) -> None:
    with pytest.raises(PyctrError) as caught:
        ContainerCgroup.create(name, [], layout=Layout("v1", str(tmp_path)), files=fake)
    assert caught.value.error == "config.invalid" and fake.calls == []


def test_remove_waits_while_the_last_tasks_leave(tmp_path: Path,
                                                 fake: RecordingFiles) -> None:
    cgroup = ContainerCgroup.create("box", [], layout=Layout("v1", str(tmp_path)), files=fake)
    fake.fail["rmdir", "/box"] = (errno.EBUSY, 3)
    cgroup.remove()
    assert [call[0] for call in fake.calls[-4:]] == ["rmdir"] * 4
    assert not os.path.exists(cgroup.paths[0])


def test_remove_gives_up_naming_who_is_left(tmp_path: Path, fake: RecordingFiles) -> None:
    cgroup = ContainerCgroup.create("box", [], layout=Layout("v1", str(tmp_path)), files=fake)
    cgroup.add(4321)
    fake.fail["rmdir", "/box"] = (errno.EBUSY, 1000)
    started = time.monotonic()
    with pytest.raises(PyctrError) as caught:
        cgroup.remove(timeout=0.05)
    assert time.monotonic() - started < 1
    assert caught.value.error == "host.cgroup_failed"
    assert caught.value.message == (f"cannot remove cgroup {tmp_path}/{PARENT}/box: Device or "
                                    f"resource busy; processes still in it: 4321")
    fake.fail.clear()
    cgroup.remove()
    assert not os.path.exists(cgroup.paths[0])


# -- The BPF program -----------------------------------------------------------------------


def decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    """(opcode, dst, src, off, imm) of each instruction (little-endian hosts)."""
    out = []
    for offset in range(0, len(code), 8):
        opcode, regs, off, imm = struct.unpack_from("=BBhi", code, offset)
        out.append((opcode, regs & 0xF, regs >> 4, off, imm))
    return out


PROLOGUE = [(0x61, 2, 1, 0, 0), (0xBC, 3, 2, 0, 0), (0x54, 2, 0, 0, 0xFFFF),
            (0x74, 3, 0, 0, 16), (0x61, 4, 1, 4, 0), (0x61, 5, 1, 8, 0)]


@pytest.mark.skipif(sys.byteorder != "little", reason="decodes little-endian registers")
def test_the_program_for_a_few_rules() -> None:
    rules = [DeviceRule("a", allow=False), DeviceRule("c", 1, 3), DeviceRule("c", 136, -1, "rw")]
    assert devices_bpf.exceptions(rules) == (False, [("c", 1, 3, 7), ("c", 136, -1, 6)])
    assert decode(devices_bpf.program_for(rules)) == [
        *PROLOGUE,
        # c 1:3 rwm: type, major, minor, else on to the next block; every access: allow
        (0x56, 2, 0, 4, 2), (0x56, 4, 0, 3, 1), (0x56, 5, 0, 2, 3),
        (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),
        # c 136:* rw: type, major, then no bit outside rw (m is 1)
        (0x56, 2, 0, 6, 2), (0x56, 4, 0, 5, 136), (0xBC, 6, 3, 0, 0), (0x54, 6, 0, 0, 1),
        (0x56, 6, 0, 2, 0), (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),
        # otherwise deny
        (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0),
    ]


@pytest.mark.skipif(sys.byteorder != "little", reason="decodes little-endian registers")
def test_the_program_when_everything_is_allowed_but_some() -> None:
    rules = [DeviceRule("a"), DeviceRule("b", 8, 0, "w", allow=False)]
    assert decode(devices_bpf.program_for(rules)) == [
        *PROLOGUE,
        (0x56, 2, 0, 7, 1), (0x56, 4, 0, 6, 8), (0x56, 5, 0, 5, 0),
        (0xBC, 6, 3, 0, 0), (0x54, 6, 0, 0, 4), (0x16, 6, 0, 2, 0),  # no w asked: next
        (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0),
        (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),
    ]


def test_a_major_past_two_to_the_31_fits_the_32_bit_compare() -> None:
    code = devices_bpf.program(False, [("c", 0xFFFFFFFF, -1, 7)])
    assert decode(code)[7][4] == -1  # the same 32 bits


def run_program(code: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """Just enough of an eBPF interpreter for the generator's opcodes."""
    regs = [0] * 11
    context = (access << 16 | kind, major, minor)
    insns = decode(code)
    pc = 0
    for _ in range(10_000):
        opcode, dst, src, off, imm = insns[pc]
        pc += 1
        u32 = imm & 0xFFFFFFFF
        if opcode == 0x61:
            regs[dst] = context[off // 4]
        elif opcode == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif opcode == 0xB7:
            regs[dst] = imm
        elif opcode == 0x54:
            regs[dst] = regs[dst] & u32
        elif opcode == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif opcode == 0x56:
            pc += off if regs[dst] & 0xFFFFFFFF != u32 else 0
        elif opcode == 0x16:
            pc += off if regs[dst] & 0xFFFFFFFF == u32 else 0
        elif opcode == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {opcode:#x}")
    raise AssertionError("the program does not end")


def v1_allows(default_allow: bool, entries: list[tuple[str, int, int, int]], kind: str,
              major: int, minor: int, access: int) -> bool:
    """The v1 controller's check, as security/device_cgroup.c words it."""
    def matches(entry: tuple[str, int, int, int]) -> bool:
        return (entry[0] == kind and entry[1] in (-1, major) and entry[2] in (-1, minor))
    if default_allow:
        return not any(matches(entry) and access & entry[3] for entry in entries)
    return any(matches(entry) and not access & ~entry[3] for entry in entries)


RULE = st.builds(DeviceRule, st.sampled_from("cb"), st.integers(-1, 3), st.integers(-1, 3),
                 st.sampled_from(["r", "w", "m", "rw", "rm", "wm", "rwm"]), st.booleans())
ALL_RULE = st.builds(DeviceRule, st.just("a"), allow=st.booleans())


@settings(max_examples=300, database=None, deadline=None)
@given(st.lists(st.one_of(RULE, RULE, RULE, ALL_RULE), max_size=8))
def test_the_program_decides_as_the_v1_controller(rules: list[DeviceRule]) -> None:
    default_allow, entries = devices_bpf.exceptions(rules)
    code = devices_bpf.program(default_allow, entries)
    for kind, kind_bit in (("c", 2), ("b", 1)):
        for major in range(4):
            for minor in range(4):
                for access in range(1, 8):
                    expected = v1_allows(default_allow, entries, kind, major, minor, access)
                    got = run_program(code, kind_bit, access, major, minor)
                    assert got == int(expected), (kind, major, minor, access)


# -- The real thing ------------------------------------------------------------------------


def cgroup2_root() -> str | None:
    with open("/proc/self/mountinfo") as file:
        mounts = host_mounts(file.read())
    return next((point for _, point, fstype, _ in mounts if fstype == "cgroup2"), None)


def real_layouts() -> list[object]:
    layouts: list[object] = []
    host = host_layout()
    if host.kind == "v1":
        layouts.append(pytest.param(host, id="v1"))
    root = cgroup2_root()
    if root is not None:
        layouts.append(pytest.param(Layout("v2", root), id="v2-hybrid" if host.kind == "v1"
                                    else "v2"))
    return layouts or [pytest.param(None, marks=pytest.mark.skip(reason="no cgroups"))]


@pytest.fixture
def track(request: pytest.FixtureRequest) -> Iterator[Callable[[Layout], str]]:
    """``track(layout)`` gives a fresh name; afterwards its cgroup must be gone, and the
    ``pyctr`` parent too if the test made it."""
    made: list[tuple[Layout, str, bool]] = []

    def name_for(layout: Layout) -> str:
        name = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        made.append((layout, name, os.path.isdir(os.path.join(layout.root, PARENT))))
        return name

    yield name_for
    leftovers = []
    for layout, name, had_parent in made:
        path = os.path.join(layout.root, PARENT, name)
        if os.path.exists(path):
            leftovers.append(path)
            try:
                os.rmdir(path)
            except OSError:
                pass
        if not had_parent:
            try:
                os.rmdir(os.path.join(layout.root, PARENT))
            except OSError:
                pass  # another container (or test run) is using it
    assert not leftovers, f"cgroups left behind: {leftovers}"


def host_disk() -> tuple[int, int, str]:
    """(major, minor, filesystem type) of the block device the host's / is on."""
    device = os.stat("/").st_dev
    fstype = ""
    with open("/proc/self/mountinfo") as file:
        for line in file:
            fields = line.split(" ")
            if fields[4] == "/" and "-" in fields:
                fstype = fields[fields.index("-") + 1]
                source = fields[fields.index("-") + 2]
                if os.major(device) == 0 and source.startswith("/dev/"):
                    try:
                        info = os.stat(source)
                    except OSError:
                        continue
                    if stat.S_ISBLK(info.st_mode):
                        device = info.st_rdev
    if os.major(device) == 0 or not os.path.exists(
            f"/sys/dev/block/{os.major(device)}:{os.minor(device)}"):
        pytest.skip("the host's / is not on a block device")
    return os.major(device), os.minor(device), fstype


# What the child does: (name, S_IFCHR or S_IFBLK, major, minor, open flags).
Node = tuple[str, int, int, int, int]


def probe(cgroup: ContainerCgroup | None, directory: Path, nodes: list[Node],
          mount: tuple[str, str] | None = None, nodev: bool = False) -> dict[str, int]:
    """Fork a child, put it in ``cgroup`` (before it goes on), and have it make each node in
    a tmpfs of its own (``nodev`` or not) and open it; then mount ``mount`` (node name,
    fstype). Returns the errno of every step ("mknod NAME", "open NAME", "mount"), 0 for
    success."""
    go_read, go_write = os.pipe()
    result_read, result_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(go_write)
            os.close(result_read)
            os.read(go_read, 1)
            try:
                results: object = _child(directory, nodes, mount, nodev)
            except BaseException as exc:
                results = {"error": repr(exc)}
            os.write(result_write, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(go_read)
    os.close(result_write)
    data = b""
    try:
        if cgroup is not None:
            cgroup.add(pid)
        os.write(go_write, b"x")
        while select.select([result_read], [], [], 30)[0]:
            chunk = os.read(result_read, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(go_write)
        os.close(result_read)
        if not data:
            os.kill(pid, signal.SIGKILL)  # our own child, stuck
        os.waitpid(pid, 0)
    answer: dict[str, int] = json.loads(data)
    assert "error" not in answer, answer
    return answer


def _child(directory: Path, nodes: list[Node], mount: tuple[str, str] | None,
           nodev: bool) -> dict[str, int]:  # pragma: no cover
    kernel = LinuxSyscalls()
    # A mount table of its own, so the tmpfs (which allows device nodes wherever the test's
    # temp directory is) and any mount vanish with the child.
    unshare(CLONE_NEWNS)
    kernel.mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    kernel.mount("tmpfs", str(directory), "tmpfs", MS_NODEV if nodev else 0, "mode=700")
    results = {}
    for name, kind, major, minor, flags in nodes:
        path = str(directory / name)
        try:
            os.mknod(path, kind | 0o600, os.makedev(major, minor))
            results[f"mknod {name}"] = 0
        except OSError as exc:
            results[f"mknod {name}"] = exc.errno or -1
            continue
        try:
            os.close(os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK))
            results[f"open {name}"] = 0
        except OSError as exc:
            results[f"open {name}"] = exc.errno or -1
    if mount is not None:
        target = directory / "mnt"
        target.mkdir()
        try:
            kernel.mount(str(directory / mount[0]), str(target), mount[1], MS_RDONLY, None)
            results["mount"] = 0
            kernel.umount2(str(target), 0)
        except OSError as exc:
            results["mount"] = exc.errno or -1
    return results


KMSG = ("kmsg", stat.S_IFCHR, 1, 11, os.O_RDONLY)
NULL = ("null", stat.S_IFCHR, 1, 3, os.O_RDWR)


def disk_node() -> Node:
    major, minor, _ = host_disk()
    return ("disk", stat.S_IFBLK, major, minor, os.O_RDONLY)


def loop_node() -> Node:
    """A disk the host has not mounted: a loop device with nothing behind it."""
    for entry in sorted(os.listdir("/sys/block")):
        if entry.startswith("loop") and not os.path.exists(f"/sys/block/{entry}/loop"):
            with open(f"/sys/block/{entry}/dev") as file:
                major, minor = file.read().strip().split(":")
            return ("loop", stat.S_IFBLK, int(major), int(minor), os.O_RDONLY)
    pytest.skip("no free loop device")


@requires_root
def test_the_probe_opens_every_node_without_a_cgroup(tmp_path: Path) -> None:
    # What the tests below refuse is refused by the cgroup, not by something else. (Not the
    # host's own disk: some hosts refuse root that, in or out of a cgroup; this VM does.)
    results = probe(None, tmp_path, [loop_node(), NULL, KMSG], mount=("loop", "ext4"))
    assert results.pop("mount") not in (0, errno.EPERM, errno.EACCES)  # nothing to mount
    assert results == {"mknod loop": 0, "open loop": 0, "mknod null": 0, "open null": 0,
                       "mknod kmsg": 0, "open kmsg": 0}


@requires_root
@pytest.mark.parametrize("layout", real_layouts())
def test_the_hosts_disks_neither_open_nor_mount(layout: Layout, tmp_path: Path,
                                                track: Callable[[Layout], str]) -> None:
    cgroup = ContainerCgroup.create(track(layout), device_rules(spec()), layout=layout)
    assert cgroup.devices_enforced, cgroup.unenforced_reason
    path = cgroup.paths[0]
    assert os.path.isdir(path)
    if layout.kind == "v1":
        with open(os.path.join(path, "devices.list")) as file:
            listed = set(file.read().splitlines())
        assert listed == {rule.line() for rule in DEFAULT_RULES[1:]}
    results = probe(cgroup, tmp_path, [disk_node(), loop_node(), NULL, KMSG],
                    mount=("loop", "ext4"))
    cgroup.remove()
    assert not os.path.exists(path)
    assert results == {
        # No block node can be made at all (a mount of a mounted disk would not open it)...
        "mknod disk": errno.EPERM, "mknod loop": errno.EPERM,
        "mount": errno.ENOENT,  # ... so there is nothing to mount
        "mknod null": 0, "open null": 0,  # CAP_MKNOD works for character nodes
        "mknod kmsg": 0, "open kmsg": errno.EPERM,  # not given to the container
    }


@requires_root
def test_nodev_stops_even_a_mount_of_a_mounted_disk(tmp_path: Path) -> None:
    # The fallback where no device program loads, and the one thing that stops this: mount(2)
    # of a disk the host has mounted already takes its superblock as it is, without opening
    # the disk, so the devices cgroup never sees it; a node on a nodev filesystem is refused
    # before that. (Read-only, which a read-write superblock refuses anyway: nothing mounts.)
    _, _, fstype = host_disk()
    results = probe(None, tmp_path, [disk_node(), NULL], mount=("disk", fstype), nodev=True)
    assert results == {"mknod disk": 0, "open disk": errno.EACCES, "mknod null": 0,
                       "open null": errno.EACCES, "mount": errno.EACCES}


@requires_root
@pytest.mark.parametrize("layout", real_layouts())
def test_a_device_in_linux_devices_opens(layout: Layout, tmp_path: Path,
                                         track: Callable[[Layout], str]) -> None:
    rules = device_rules(spec([Device("/dev/kmsg", "c", 1, 11)]))
    cgroup = ContainerCgroup.create(track(layout), rules, layout=layout)
    results = probe(cgroup, tmp_path, [KMSG, ("kmsg-rw", stat.S_IFCHR, 1, 11, os.O_RDWR),
                                       disk_node()])
    cgroup.remove()
    assert results == {"mknod kmsg": 0, "open kmsg": 0, "mknod kmsg-rw": 0,
                       "open kmsg-rw": 0, "mknod disk": errno.EPERM}


@requires_root
@pytest.mark.parametrize("layout", real_layouts())
def test_resources_devices_allow_and_deny(layout: Layout, tmp_path: Path,
                                          track: Callable[[Layout], str]) -> None:
    rules = device_rules(spec(resources={"devices": [
        {"allow": False, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"},
    ]}))
    cgroup = ContainerCgroup.create(track(layout), rules, layout=layout)
    results = probe(cgroup, tmp_path, [
        NULL,
        ("urandom", stat.S_IFCHR, 1, 9, os.O_RDONLY),  # a default: runc's order keeps it
        KMSG,  # allowed for reading
        ("kmsg-write", stat.S_IFCHR, 1, 11, os.O_WRONLY),  # but not for writing
    ])
    cgroup.remove()
    assert results == {"mknod null": 0, "open null": 0,
                       "mknod urandom": 0, "open urandom": 0,
                       "mknod kmsg": 0, "open kmsg": 0,
                       "mknod kmsg-write": 0, "open kmsg-write": errno.EPERM}


@requires_root
@pytest.mark.parametrize("layout", real_layouts())
def test_remove_works_once_the_processes_are_gone(layout: Layout,
                                                  track: Callable[[Layout], str]) -> None:
    cgroup = ContainerCgroup.create(track(layout), device_rules(spec()), layout=layout)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        cgroup.add(sleeper.pid)
        with open(os.path.join(cgroup.paths[0], "cgroup.procs")) as file:
            assert file.read().split() == [str(sleeper.pid)]
        with pytest.raises(PyctrError) as caught:
            cgroup.remove(timeout=0.05)
        assert caught.value.error == "host.cgroup_failed"
        assert caught.value.message.endswith(f"processes still in it: {sleeper.pid}")
        sleeper.kill()
        # A zombie is out of its cgroup: no need to reap it first.
        wait_until(lambda: process_state(sleeper.pid) == "Z", "the sleeper to exit")
        cgroup.remove()
        assert not os.path.exists(cgroup.paths[0])
        cgroup.remove()
    finally:
        sleeper.kill()
        sleeper.wait()


@requires_root
@pytest.mark.parametrize("layout", real_layouts())
def test_remove_stale(layout: Layout, track: Callable[[Layout], str]) -> None:
    name = track(layout)
    path = os.path.join(layout.root, PARENT, name)
    os.makedirs(path)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as file:
            file.write(str(sleeper.pid))
        with pytest.raises(PyctrError) as caught:
            remove_stale(name, layout=layout)
        assert "still running" in caught.value.message
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale(name, layout=layout) is True
    assert not os.path.exists(path)
    assert remove_stale(name, layout=layout) is False


@requires_root
@pytest.mark.skipif(host_layout().kind != "v1", reason="needs a cgroup v1 devices hierarchy")
@settings(max_examples=40, database=None, deadline=None)
@given(st.lists(st.one_of(RULE, RULE, RULE, ALL_RULE), max_size=6))
def test_the_emulation_keeps_the_list_the_v1_kernel_keeps(rules: list[DeviceRule]) -> None:
    layout = host_layout()
    parent = os.path.join(layout.root, PARENT)
    had_parent = os.path.isdir(parent)
    cgroup = ContainerCgroup.create(f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                                    [DeviceRule("a", allow=False), *rules], layout=layout)
    try:
        with open(os.path.join(cgroup.paths[0], "devices.list")) as file:
            listed = set(file.read().splitlines())
    finally:
        cgroup.remove()
        if not had_parent:
            try:
                os.rmdir(parent)
            except OSError:
                pass
    assert not os.path.exists(cgroup.paths[0])
    default_allow, entries = devices_bpf.exceptions([DeviceRule("a", allow=False), *rules])
    if default_allow:
        assert listed == {"a *:* rwm"}  # the kernel lists no exception then
    else:
        assert listed == {DeviceRule(kind, major, minor, "".join(
            letter for letter, bit in (("r", 2), ("w", 4), ("m", 1)) if bits & bit)).line()
            for kind, major, minor, bits in entries}


@requires_root
@pytest.mark.parametrize("layout", real_layouts())
def test_the_cgroup_of_a_killed_supervisor_is_swept(layout: Layout,
                                                    track: Callable[[Layout], str]) -> None:
    name = track(layout)
    path = os.path.join(layout.root, PARENT, name)
    claim = os.path.join(CLAIMS, PARENT, name)
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a supervisor that is killed while it runs
        try:
            ContainerCgroup.create(name, device_rules(spec()), layout=layout)
            os.write(ready_write, b"x")
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"x"
        assert name not in sweep_stale(layout=layout)  # its supervisor is alive
        assert os.path.isdir(path) and os.path.exists(claim)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_read)
    assert name in sweep_stale(layout=layout)
    assert not os.path.exists(path) and not os.path.exists(claim)
    assert name not in sweep_stale(layout=layout)


@requires_root
def test_a_container_sees_its_own_devices_cgroup(rootfs: Path) -> None:
    # Its /proc/self/cgroup shows its own cgroup as the root (a cgroup namespace), its
    # /sys/fs/cgroup/devices shows that cgroup's rules, and the cgroup is gone afterwards.
    if host_layout().kind != "v1":
        pytest.skip("the devices controller is a cgroup v1 one")
    name = f"devices-{uuid.uuid4().hex[:8]}"
    completed = subprocess.run(
        [CLI, "--name", name, str(rootfs), "/bin/sh", "-c",
         "grep devices /proc/self/cgroup; cat /sys/fs/cgroup/devices/devices.list"],
        capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    first, *rules = completed.stdout.splitlines()
    assert first.split(":", 2)[1:] == ["devices", "/"]
    assert set(rules) == {rule.line() for rule in DEFAULT_RULES[1:]}
    assert not os.path.exists(os.path.join(host_layout().root, PARENT, name))


@requires_root
def test_device_gives_a_host_node_with_its_permissions(rootfs: Path) -> None:
    # /dev/kmsg as /dev/k, readable only: the node is made, reads work, writes are refused by
    # the cgroup (CAP_SYSLOG: the kernel asks for it to read the log). (A node made with
    # mknod: test_escape.py.)
    completed = subprocess.run(
        [CLI, "--device", "/dev/kmsg:/dev/k:r", "--cap-add", "SYSLOG", str(rootfs), "/bin/sh", "-c",
         "dd if=/dev/k bs=8192 count=1 iflag=nonblock 2>/dev/null | wc -l; "
         "echo pyctr-test > /dev/k && echo written || echo refused; stat -c %t:%T /dev/k"],
        capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["1", "refused", "1:b"], completed.stderr
