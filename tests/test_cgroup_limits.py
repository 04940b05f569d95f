"""A container's limits and its cgroup, without a kernel (supervisor/resources.py,
supervisor/cgroup.py).

``linux.resources`` as v1 and v2 file writes, the controllers each joins or enables, where
``linux.cgroupsPath`` puts the cgroup, the layout read from mountinfo text; and
ContainerCgroup's create, add, kill_all, usage and remove, and sweep_stale, against FakeKernel:
temp directories stand in for the hierarchies, and it behaves as cgroupfs does where the code
relies on it. This host's cgroup2 tree holds only hugetlb, so the v2 limits are tested here
only; tests/test_limits.py applies the v1 ones for real.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pyctr.supervisor import cgroup as cgroup_module
from pyctr.supervisor.cgroup import (
    PARENT,
    CgroupFiles,
    ContainerCgroup,
    Layout,
    cgroup_path,
    detect_layout,
    sweep_stale,
)
from pyctr.supervisor.devices import DEFAULT_RULES, DeviceRule
from pyctr.supervisor.errors import PyctrError
from pyctr.supervisor.resources import (
    Usage,
    Write,
    shares_to_weight,
    v1_controllers,
    v1_writes,
    v2_controllers,
    v2_writes,
)

if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

MIB = 1 << 20
# PID_MAX_LIMIT on 64-bit: pid_max can be no higher, so no process has this pid or above.
NO_SUCH_PID = 1 << 22

# A runc-style linux.resources with every member pyctr applies.
FULL: Value = {
    "memory": {"limit": 256 * MIB, "swap": 512 * MIB, "reservation": 128 * MIB,
               "swappiness": 60, "disableOOMKiller": True},
    "cpu": {"shares": 512, "quota": 50_000, "period": 100_000, "cpus": "1", "mems": "0"},
    "pids": {"limit": 64},
}
RULES = list(DEFAULT_RULES[:2])  # deny all, then mknod of any character device


# -- A fake cgroup filesystem --------------------------------------------------------------

# The interface files a new cgroup comes with (cgroup.procs, in every one, aside). On v2 a
# controller's files show only when the parent enables it in cgroup.subtree_control.
V2_FILES = ("cgroup.controllers", "cgroup.subtree_control", "cgroup.kill", "cgroup.freeze",
            "cpu.stat", "cpu.max", "cpu.weight", "cpuset.cpus", "cpuset.mems", "memory.max",
            "memory.swap.max", "memory.low", "memory.peak", "memory.events", "pids.max")
V1_FILES = {
    "devices": ("devices.allow", "devices.deny"),
    "memory": ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
               "memory.soft_limit_in_bytes", "memory.swappiness", "memory.oom_control",
               "memory.max_usage_in_bytes"),
    "cpu,cpuacct": ("cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpuacct.usage"),
    "pids": ("pids.max",),
    "freezer": ("freezer.state",),
    "cpuset": ("cpuset.cpus", "cpuset.mems"),  # empty in a new cgroup, as the kernel has them
}
Call = tuple[object, ...]


class FakeKernel(CgroupFiles):
    """Temp directories as cgroup hierarchies. ``interface`` maps each hierarchy's root to
    the files every cgroup made in it gets; a file that is not there cannot be written
    (ENOENT), a cgroup whose cgroup.procs lists a pid cannot be removed (EBUSY). Every call
    is recorded in ``calls`` in order (reads too: ``changes()`` leaves them out). ``fail``
    maps (operation, path suffix) to the errno that call raises, every time; ``answers``
    maps a path suffix to what its next reads give before the file's own text."""

    def __init__(self, interface: dict[str, tuple[str, ...]], *, v2: bool = False) -> None:
        self.interface, self.v2 = interface, v2
        self.calls: list[Call] = []
        self.fail: dict[tuple[str, str], int] = {}
        self.answers: dict[str, list[str]] = {}
        self.claims: dict[str, str] = {}
        """Each name's claim file and the path it records."""
        self.held: set[str] = set()
        """The names a live supervisor holds."""
        self._claim_names: dict[int, str] = {}

    def changes(self) -> list[Call]:
        return [call for call in self.calls if call[0] != "read"]

    def _call(self, operation: str, path: str, *rest: str) -> None:
        self.calls.append((operation, path, *rest))
        for (name, suffix), err in self.fail.items():
            if name == operation and path.endswith(suffix):
                raise OSError(err, os.strerror(err))

    def mkdir(self, path: str) -> None:
        self._call("mkdir", path)
        os.mkdir(path)
        root = max((root for root in self.interface if path.startswith(root + "/")), key=len)
        files = self.interface[root]
        if self.v2:
            control = Path(os.path.dirname(path), "cgroup.subtree_control").read_text()
            enabled = {word[1:] for word in control.split() if word.startswith("+")}
            files = tuple(name for name in files if name.startswith("cgroup.")
                          or name == "cpu.stat" or name.partition(".")[0] in enabled)
        for name in ("cgroup.procs", *files):
            Path(path, name).write_text("")

    def write(self, path: str, text: str) -> None:
        self._call("write", path, text)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        Path(path).write_text(text)

    def read(self, path: str) -> str:
        self._call("read", path)
        for suffix, answers in self.answers.items():
            if path.endswith(suffix) and answers:
                return answers.pop(0)
        return Path(path).read_text()

    def rmdir(self, path: str) -> None:
        self._call("rmdir", path)
        procs = Path(path, "cgroup.procs")
        if procs.is_file() and procs.read_text().split():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        for entry in os.scandir(path) if os.path.isdir(path) else []:
            if entry.is_file():
                os.unlink(entry.path)
        os.rmdir(path)  # ENOTEMPTY with a child cgroup, ENOENT when gone: as the kernel

    def attach_devices(self, path: str, rules: list[DeviceRule]) -> None:
        self.calls.append(("attach", path, *(rule.line() for rule in rules)))

    # Claims are kept here, not in /run/pyctr: the descriptor is /dev/null's.
    def claim(self, name: str, *, create: bool = True, path: str = "") -> int | None:
        self.calls.append(("claim", name))
        if name in self.held or (not create and name not in self.claims):
            return None
        if create:
            self.claims[name] = path
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._claim_names[fd] = name
        return fd

    def claimed_path(self, fd: int) -> str:
        return self.claims[self._claim_names[fd]]

    def release(self, name: str, fd: int) -> None:
        self.calls.append(("release", name))
        del self.claims[name]
        os.close(fd)

    def claimed(self) -> list[str]:
        return list(self.claims)


def v2_host(tmp_path: Path, controllers: str = "cpuset cpu io memory pids",
            files: tuple[str, ...] = V2_FILES) -> tuple[Layout, FakeKernel, str]:
    """A cgroup2 tree whose root has ``controllers``: its layout, its fake, and the path
    of the container "box"'s cgroup in it."""
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return (Layout("v2", str(root)), FakeKernel({str(root): files}, v2=True),
            f"{root}/{PARENT}/box")


def v1_host(tmp_path: Path, *, without: tuple[str, ...] = (),
            files: dict[str, tuple[str, ...]] = V1_FILES) -> tuple[Layout, FakeKernel,
                                                                   dict[str, str]]:
    """A v1 host with a hierarchy per controller (cpu and cpuacct co-mounted), but those of
    ``without``: its layout, its fake, and each hierarchy's root by its directory name."""
    roots: dict[str, str] = {}
    hierarchies: dict[str, str] = {}
    for mount in files:
        controllers = [name for name in mount.split(",") if name not in without]
        if not controllers:
            continue
        root = tmp_path / mount
        root.mkdir()
        (root / "cgroup.procs").write_text("")
        roots[mount] = str(root)
        hierarchies.update(dict.fromkeys(controllers, str(root)))
    if "cpuset" in roots:  # the root cpuset has the host's CPUs and memory nodes
        Path(roots["cpuset"], "cpuset.cpus").write_text("0-3\n")
        Path(roots["cpuset"], "cpuset.mems").write_text("0-1\n")
    layout = Layout("v1", hierarchies.get("devices", ""), hierarchies)
    return layout, FakeKernel({root: files[mount] for mount, root in roots.items()}), roots


def one_line_error(call: Callable[[], object], error: str) -> str:
    with pytest.raises(PyctrError) as caught:
        call()
    assert caught.value.error == error
    assert "\n" not in caught.value.message
    return caught.value.message


def usage_of(usage: Usage) -> tuple[float | None, int | None, int | None]:
    return usage.cpu_time_s, usage.memory_peak_bytes, usage.oom_kills


# -- linux.resources as writes -------------------------------------------------------------


def test_v1_writes_of_every_member_in_the_order_the_kernel_takes() -> None:
    assert v1_writes(FULL) == [
        Write("memory", "memory.limit_in_bytes", str(256 * MIB)),
        Write("memory", "memory.memsw.limit_in_bytes", str(512 * MIB), optional=True),
        Write("memory", "memory.soft_limit_in_bytes", str(128 * MIB)),
        Write("memory", "memory.swappiness", "60"),
        Write("memory", "memory.oom_control", "1"),
        Write("cpu", "cpu.shares", "512"),
        Write("cpu", "cpu.cfs_period_us", "100000"),
        Write("cpu", "cpu.cfs_quota_us", "50000"),
        Write("cpuset", "cpuset.cpus", "1"),
        Write("cpuset", "cpuset.mems", "0"),
        Write("pids", "pids.max", "64"),
    ]


def test_v2_writes_of_every_member() -> None:
    # No swappiness and no OOM switch on v2; swap is the swap alone; shares are scaled.
    assert v2_writes(FULL) == [
        Write("memory", "memory.max", str(256 * MIB)),
        Write("memory", "memory.swap.max", str(256 * MIB), optional=True),
        Write("memory", "memory.low", str(128 * MIB)),
        Write("cpu", "cpu.weight", "20"),
        Write("cpu", "cpu.max", "50000 100000"),
        Write("cpuset", "cpuset.cpus", "1"),
        Write("cpuset", "cpuset.mems", "0"),
        Write("pids", "pids.max", "64"),
    ]


def test_the_order_does_not_follow_the_specs() -> None:
    # The kernel refuses memsw below the limit and a quota checked against the old period:
    # whatever order the config lists them in, the limit and the period go first.
    resources: Value = {"memory": {"swap": 2 * MIB, "limit": MIB},
                        "cpu": {"quota": 20_000, "period": 40_000}}
    assert [write.file for write in v1_writes(resources)] == [
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cpu.cfs_period_us",
        "cpu.cfs_quota_us"]
    assert [write.file for write in v2_writes(resources)] == [
        "memory.max", "memory.swap.max", "cpu.max"]


@pytest.mark.parametrize(("resources", "writes"), [
    (None, []),
    ({}, []),
    ({"memory": {"limit": -1}}, [("memory.limit_in_bytes", "-1")]),
    ({"memory": {"limit": -1, "swap": -1}},
     [("memory.limit_in_bytes", "-1"), ("memory.memsw.limit_in_bytes", "-1")]),
    ({"memory": {"reservation": -1}}, [("memory.soft_limit_in_bytes", "-1")]),
    ({"memory": {"swappiness": 0, "disableOOMKiller": False}}, [("memory.swappiness", "0")]),
    ({"cpu": {"quota": -1}}, [("cpu.cfs_quota_us", "-1")]),
    ({"cpu": {"cpus": " 0-1 ", "mems": "  "}}, [("cpuset.cpus", "0-1")]),
    # No limit is the default of a new cgroup: nothing to write, nor a controller to need.
    ({"pids": {"limit": 0}}, []),
    ({"pids": {"limit": -1}}, []),
    ({"pids": {"limit": 1}}, [("pids.max", "1")]),
    ({"pids": {"limit": True}, "memory": [], "cpu": "2"}, []),  # not numbers, not sections
])
def test_v1_edge_values(resources: Value, writes: list[tuple[str, str]]) -> None:
    assert [(write.file, write.value) for write in v1_writes(resources)] == writes


@pytest.mark.parametrize(("resources", "writes"), [
    (None, []),
    ({"memory": {"limit": -1}}, [("memory.max", "max")]),
    ({"memory": {"limit": 1024 * MIB, "swap": -1}},
     [("memory.max", str(1024 * MIB)), ("memory.swap.max", "max")]),
    ({"memory": {"limit": 1024 * MIB, "swap": 3072 * MIB}},
     [("memory.max", str(1024 * MIB)), ("memory.swap.max", str(2048 * MIB))]),
    ({"memory": {"limit": MIB, "swap": MIB}}, [("memory.max", str(MIB)),
                                              ("memory.swap.max", "0")]),
    ({"memory": {"limit": -1, "swap": MIB}}, [("memory.max", "max"), ("memory.swap.max", "max")]),
    ({"memory": {"swap": MIB}}, [("memory.swap.max", "max")]),
    ({"memory": {"swappiness": 10, "disableOOMKiller": True}}, []),
    ({"cpu": {"quota": 50_000}}, [("cpu.max", "50000 100000")]),
    ({"cpu": {"period": 50_000}}, [("cpu.max", "max 50000")]),
    ({"cpu": {"quota": -1, "period": 250_000}}, [("cpu.max", "max 250000")]),
    ({"cpu": {"shares": 1024}}, [("cpu.weight", "39")]),
    # -1 reserves nothing (v2's 0), where "max" would protect everything from reclaim.
    ({"memory": {"reservation": -1}}, [("memory.low", "0")]),
    # No limit is the default of a new cgroup: nothing to write, nor a controller to need.
    ({"pids": {"limit": 0}}, []),
    ({"pids": {"limit": -1}}, []),
])
def test_v2_edge_values(resources: Value, writes: list[tuple[str, str]]) -> None:
    assert [(write.file, write.value) for write in v2_writes(resources)] == writes


@pytest.mark.parametrize(("shares", "weight"), [
    (2, 1), (1024, 39), (262144, 10000), (0, 1), (1 << 20, 10000)])
def test_shares_to_weight_as_runc(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


# -- The controllers ------------------------------------------------------------------------

V1_ALWAYS = ["devices", "memory", "cpuacct", "pids", "freezer"]


@pytest.mark.parametrize(("resources", "v1", "wanted", "required"), [
    (None, V1_ALWAYS, ["memory", "pids"], []),
    ({"memory": {"limit": MIB}}, V1_ALWAYS, ["memory", "pids"], ["memory"]),
    ({"memory": {"reservation": -1}}, V1_ALWAYS, ["memory", "pids"], ["memory"]),
    ({"memory": {"swappiness": 10}}, V1_ALWAYS, ["memory", "pids"], []),
    ({"cpu": {"shares": 512}}, [*V1_ALWAYS, "cpu"], ["memory", "pids", "cpu"], ["cpu"]),
    ({"cpu": {"period": 100_000}}, [*V1_ALWAYS, "cpu"], ["memory", "pids", "cpu"], ["cpu"]),
    ({"cpu": {"cpus": "0-1"}}, [*V1_ALWAYS, "cpuset"], ["memory", "pids", "cpuset"],
     ["cpuset"]),
    ({"cpu": {"mems": "0"}}, [*V1_ALWAYS, "cpuset"], ["memory", "pids", "cpuset"],
     ["cpuset"]),
    ({"pids": {"limit": 64}}, V1_ALWAYS, ["memory", "pids"], ["pids"]),
    ({"pids": {"limit": -1}}, V1_ALWAYS, ["memory", "pids"], []),
    (FULL, [*V1_ALWAYS, "cpu", "cpuset"], ["memory", "pids", "cpu", "cpuset"],
     ["memory", "cpu", "cpuset", "pids"]),
], ids=["none", "memory", "reservation", "swappiness", "shares", "period", "cpus", "mems",
        "pids", "pids-unlimited", "full"])
def test_controllers(resources: Value, v1: list[str], wanted: list[str],
                     required: list[str]) -> None:
    assert v1_controllers(resources) == v1
    assert v2_controllers(resources) == (wanted, required)


# -- Where the cgroup is --------------------------------------------------------------------


@pytest.mark.parametrize(("given", "path"), [
    (None, f"{PARENT}/box"),
    ("/custom/box", "custom/box"),
    ("/custom/box/", "custom/box"),
    ("mine/box", f"{PARENT}/mine/box"),
    ("/a:b", "a:b"),  # one colon: a plain relative path
    ("system.slice:pyctr:abc", "system.slice/pyctr-abc.scope"),
    ("machine-web.slice:pyctr:abc", "machine.slice/machine-web.slice/pyctr-abc.scope"),
    ("a-b-c.slice:p:x", "a.slice/a-b.slice/a-b-c.slice/p-x.scope"),
    (":pyctr:abc", "system.slice/pyctr-abc.scope"),
    ("-.slice:pyctr:abc", "pyctr-abc.scope"),
    ("system.slice::abc", "system.slice/abc.scope"),
    ("system.slice:pyctr:abc.scope", "system.slice/abc.scope"),
    ("user.slice:pyctr:sub.slice", "user.slice/sub.slice"),
])
def test_cgroup_path(given: str | None, path: str) -> None:
    assert cgroup_path("box", given) == path


def test_a_slice_parent_gives_systemds_scope_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup_module, "PARENT", "pyctr.slice")
    assert cgroup_path("box") == "pyctr.slice/pyctr-box.scope"
    assert cgroup_path("box", "sub") == "pyctr.slice/sub"


@pytest.mark.parametrize(("given", "advice"), [
    ("/", "no '.', '..' or empty parts"),
    ("", "no '.', '..' or empty parts"),
    ("/a/../b", "no '.', '..' or empty parts"),
    ("a/./b", "no '.', '..' or empty parts"),
    ("a//b", "no '.', '..' or empty parts"),
    ("/a\nb", "no '.', '..' or empty parts"),
    ("/" + "x" * 256, "no '.', '..' or empty parts"),
    ("x:y:", "systemd's form SLICE:PREFIX:NAME needs a NAME"),
    ("web:pyctr:abc", "the slice 'web' must be a unit name ending in .slice"),
    ("a/b.slice:pyctr:abc", "the slice 'a/b.slice' must be a unit name ending in .slice"),
    ("a--b.slice:pyctr:abc", "the slice 'a--b.slice' has an empty part between dashes"),
    ("system.slice:a/b:c", "neither PREFIX nor NAME may hold a '/'"),
    ("system.slice:pyctr:x/y", "neither PREFIX nor NAME may hold a '/'"),
])
def test_a_cgroups_path_that_is_no_cgroup_is_refused(given: str, advice: str) -> None:
    message = one_line_error(lambda: cgroup_path("box", given), "config.invalid")
    assert message.startswith(f"linux.cgroupsPath {given!r} cannot be a container's cgroup: ")
    assert advice in message


# -- cgroup v2 ------------------------------------------------------------------------------


def test_v2_create_enables_makes_attaches_and_limits(tmp_path: Path) -> None:
    layout, fake, leaf = v2_host(tmp_path)
    root = layout.root
    cgroup = ContainerCgroup.create("box", RULES, resources=FULL, layout=layout, files=fake)
    enable = "+memory +pids +cpu +cpuset"
    assert fake.changes() == [
        ("claim", "box"),
        ("write", f"{root}/cgroup.subtree_control", enable),
        ("mkdir", f"{root}/{PARENT}"),
        ("write", f"{root}/{PARENT}/cgroup.subtree_control", enable),
        ("mkdir", leaf),
        ("attach", leaf, "a", "c *:* m"),
        ("write", f"{leaf}/memory.max", str(256 * MIB)),
        ("write", f"{leaf}/memory.swap.max", str(256 * MIB)),
        ("write", f"{leaf}/memory.low", str(128 * MIB)),
        ("write", f"{leaf}/cpu.weight", "20"),
        ("write", f"{leaf}/cpu.max", "50000 100000"),
        ("write", f"{leaf}/cpuset.cpus", "1"),
        ("write", f"{leaf}/cpuset.mems", "0"),
        ("write", f"{leaf}/pids.max", "64"),
    ]
    assert cgroup.paths == [leaf] and cgroup.skipped == [] and cgroup.devices_enforced
    assert set(cgroup.directories.values()) == {leaf}
    del fake.calls[:]
    cgroup.add(1234)
    assert fake.changes() == [("write", f"{leaf}/cgroup.procs", "1234")]
    Path(leaf, "cgroup.procs").write_text("")  # the container has exited
    cgroup.remove()
    cgroup.remove()
    assert fake.changes()[1:] == [("rmdir", leaf), ("release", "box"), ("rmdir", leaf)]
    assert not os.path.exists(leaf) and os.path.isdir(f"{root}/{PARENT}")
    assert fake.claims == {}


@pytest.mark.parametrize(("controllers", "resources", "enable"), [
    ("cpuset cpu io memory pids", None, "+memory +pids"),
    ("cpuset cpu io memory pids", {"memory": {"limit": MIB}}, "+memory +pids"),
    ("cpuset cpu io memory pids", {"pids": {"limit": 5}}, "+memory +pids"),
    ("cpuset cpu io memory pids", {"cpu": {"shares": 512}}, "+memory +pids +cpu"),
    ("cpuset cpu io memory pids", {"cpu": {"cpus": "0"}}, "+memory +pids +cpuset"),
    ("cpu io memory", None, "+memory"),  # wanted, but not there: left out
    ("cpu io pids", {"cpu": {"quota": 10_000}}, "+pids +cpu"),
])
def test_v2_enables_what_the_limits_need(tmp_path: Path, controllers: str, resources: Value,
                                         enable: str) -> None:
    layout, fake, _ = v2_host(tmp_path, controllers)
    cgroup = ContainerCgroup.create("box", [], resources=resources, layout=layout, files=fake)
    assert [call for call in fake.changes() if str(call[1]).endswith("subtree_control")] == [
        ("write", f"{layout.root}/cgroup.subtree_control", enable),
        ("write", f"{layout.root}/{PARENT}/cgroup.subtree_control", enable)]
    # The fake shows a controller's files only where enabled: each limit found its file.
    written = {os.path.basename(str(call[1])) for call in fake.changes() if call[0] == "write"}
    assert {write.file for write in v2_writes(resources)} <= written
    cgroup.remove()


def test_v2_without_cgroup_controllers_enables_nothing(tmp_path: Path) -> None:
    layout, fake, leaf = v2_host(tmp_path)
    os.unlink(f"{layout.root}/cgroup.controllers")
    cgroup = ContainerCgroup.create("box", [], layout=layout, files=fake)
    assert fake.changes() == [("claim", "box"), ("mkdir", f"{layout.root}/{PARENT}"),
                              ("mkdir", leaf), ("attach", leaf)]
    cgroup.remove()


def test_v2_a_systemd_path_enables_at_every_level(tmp_path: Path) -> None:
    layout, fake, _ = v2_host(tmp_path)
    root = layout.root
    cgroup = ContainerCgroup.create("box", [], resources={"pids": {"limit": 9}},
                                    cgroups_path="machine-web.slice:pyctr:abc", layout=layout,
                                    files=fake)
    leaf = f"{root}/machine.slice/machine-web.slice/pyctr-abc.scope"
    assert fake.changes() == [
        ("claim", "box"),
        ("write", f"{root}/cgroup.subtree_control", "+memory +pids"),
        ("mkdir", f"{root}/machine.slice"),
        ("write", f"{root}/machine.slice/cgroup.subtree_control", "+memory +pids"),
        ("mkdir", f"{root}/machine.slice/machine-web.slice"),
        ("write", f"{root}/machine.slice/machine-web.slice/cgroup.subtree_control",
         "+memory +pids"),
        ("mkdir", leaf),
        ("attach", leaf),
        ("write", f"{leaf}/pids.max", "9"),
    ]
    assert fake.claims == {"box": "machine.slice/machine-web.slice/pyctr-abc.scope"}
    cgroup.remove()
    assert not os.path.exists(leaf) and os.path.isdir(f"{root}/machine.slice/machine-web.slice")


@pytest.mark.parametrize(("resources", "missing"), [
    ({"memory": {"limit": MIB}}, "memory"),
    ({"cpu": {"shares": 512}}, "cpu"),
    ({"cpu": {"cpus": "0"}}, "cpuset"),
    ({"pids": {"limit": 5}}, "pids"),
    (FULL, "memory, cpu, cpuset, pids"),
])
def test_v2_a_limit_without_its_controller_is_refused(tmp_path: Path, resources: Value,
                                                      missing: str) -> None:
    # As on this host: the cgroup2 tree at /sys/fs/cgroup/unified has hugetlb only.
    layout, fake, _ = v2_host(tmp_path, "hugetlb")
    message = one_line_error(lambda: ContainerCgroup.create(
        "box", [], resources=resources, layout=layout, files=fake), "host.cgroup_failed")
    assert message == (f"cannot apply the container's {missing} limits: the cgroup v2 tree at "
                       f"{layout.root} has no {missing} controller (it has: hugetlb)")
    assert fake.changes() == [("claim", "box"), ("release", "box")]
    assert not os.path.exists(f"{layout.root}/{PARENT}")


def test_v2_an_empty_tree_says_it_has_none(tmp_path: Path) -> None:
    layout, fake, _ = v2_host(tmp_path, "")
    message = one_line_error(lambda: ContainerCgroup.create(
        "box", [], resources={"pids": {"limit": 5}}, layout=layout, files=fake),
        "host.cgroup_failed")
    assert message.endswith("has no pids controller (it has: none)")


def test_v2_a_busy_parent_cannot_enable_controllers(tmp_path: Path) -> None:
    layout, fake, leaf = v2_host(tmp_path)
    control = f"{layout.root}/{PARENT}/cgroup.subtree_control"
    fake.fail["write", control] = errno.EBUSY
    message = one_line_error(lambda: ContainerCgroup.create(
        "box", [], layout=layout, files=fake), "host.cgroup_failed")
    assert message == (f"cannot enable +memory +pids in {control}: Device or resource busy; a "
                       f"cgroup v2 cgroup that holds processes cannot enable controllers for "
                       f"its children; choose a cgroupsPath in a cgroup that holds none")
    assert not os.path.exists(leaf) and fake.changes()[-1] == ("release", "box")


def test_v2_swap_without_swap_accounting_is_skipped(tmp_path: Path) -> None:
    layout, fake, leaf = v2_host(tmp_path, files=tuple(
        name for name in V2_FILES if name != "memory.swap.max"))
    cgroup = ContainerCgroup.create("box", [], resources={"memory": {
        "limit": 64 * MIB, "swap": 96 * MIB}}, layout=layout, files=fake)
    assert cgroup.skipped == [f"memory.swap.max={32 * MIB}"]
    assert [call for call in fake.changes() if call[0] == "write"][-1] == (
        "write", f"{leaf}/memory.max", str(64 * MIB))
    cgroup.remove()


def test_v2_a_refused_limit_removes_the_cgroup(tmp_path: Path) -> None:
    layout, fake, leaf = v2_host(tmp_path)
    fake.fail["write", "/cpu.max"] = errno.EINVAL
    message = one_line_error(lambda: ContainerCgroup.create(
        "box", [], resources=FULL, layout=layout, files=fake), "host.cgroup_failed")
    assert message == f"cannot write '50000 100000' to {leaf}/cpu.max: Invalid argument"
    assert fake.changes()[-2:] == [("rmdir", leaf), ("release", "box")]
    assert not os.path.exists(leaf) and os.path.isdir(f"{layout.root}/{PARENT}")


def test_v2_no_pids_limit_on_a_tree_without_pids(tmp_path: Path) -> None:
    # docker's --pids-limit -1 asks for no limit: nothing to apply where there is no pids.
    layout, fake, _ = v2_host(tmp_path, "cpu memory")
    cgroup = ContainerCgroup.create("box", [], resources={"pids": {"limit": -1}},
                                    layout=layout, files=fake)
    cgroup.remove()


# -- cgroup v1 ------------------------------------------------------------------------------


def test_v1_create_joins_each_hierarchy_once_and_writes_to_each(tmp_path: Path) -> None:
    layout, fake, roots = v1_host(tmp_path)
    cgroup = ContainerCgroup.create("box", RULES, resources=FULL, layout=layout, files=fake)
    leaf = {mount: f"{root}/{PARENT}/box" for mount, root in roots.items()}
    cpuset = roots["cpuset"]
    assert fake.changes() == [
        ("claim", "box"),
        *(("mkdir", path) for mount in ("devices", "memory", "cpu,cpuacct", "pids", "freezer")
          for path in (f"{roots[mount]}/{PARENT}", leaf[mount])),
        # cpu shares the cpuacct directory; cpuset's are given the parent's CPUs and nodes.
        ("mkdir", f"{cpuset}/{PARENT}"),
        ("write", f"{cpuset}/{PARENT}/cpuset.cpus", "0-3"),
        ("write", f"{cpuset}/{PARENT}/cpuset.mems", "0-1"),
        ("mkdir", leaf["cpuset"]),
        ("write", f"{leaf['cpuset']}/cpuset.cpus", "0-3"),
        ("write", f"{leaf['cpuset']}/cpuset.mems", "0-1"),
        ("write", f"{leaf['devices']}/devices.deny", "a"),
        ("write", f"{leaf['devices']}/devices.allow", "c *:* m"),
        ("write", f"{leaf['memory']}/memory.limit_in_bytes", str(256 * MIB)),
        ("write", f"{leaf['memory']}/memory.memsw.limit_in_bytes", str(512 * MIB)),
        ("write", f"{leaf['memory']}/memory.soft_limit_in_bytes", str(128 * MIB)),
        ("write", f"{leaf['memory']}/memory.swappiness", "60"),
        ("write", f"{leaf['memory']}/memory.oom_control", "1"),
        ("write", f"{leaf['cpu,cpuacct']}/cpu.shares", "512"),
        ("write", f"{leaf['cpu,cpuacct']}/cpu.cfs_period_us", "100000"),
        ("write", f"{leaf['cpu,cpuacct']}/cpu.cfs_quota_us", "50000"),
        ("write", f"{leaf['cpuset']}/cpuset.cpus", "1"),
        ("write", f"{leaf['cpuset']}/cpuset.mems", "0"),
        ("write", f"{leaf['pids']}/pids.max", "64"),
    ]
    order = ["devices", "memory", "cpu,cpuacct", "pids", "freezer", "cpuset"]
    assert cgroup.paths == [leaf[mount] for mount in order]
    assert cgroup.directories == {
        "devices": leaf["devices"], "memory": leaf["memory"], "cpuacct": leaf["cpu,cpuacct"],
        "cpu": leaf["cpu,cpuacct"], "pids": leaf["pids"], "freezer": leaf["freezer"],
        "cpuset": leaf["cpuset"]}
    del fake.calls[:]
    cgroup.add(1234)
    assert fake.changes() == [("write", f"{leaf[mount]}/cgroup.procs", "1234")
                              for mount in order]
    for mount in order:
        Path(leaf[mount], "cgroup.procs").write_text("")  # the container has exited
    del fake.calls[:]
    cgroup.remove()
    assert fake.changes() == [*(("rmdir", leaf[mount]) for mount in order),
                              ("release", "box")]
    for root in roots.values():  # the parents are kept
        assert not os.path.exists(f"{root}/{PARENT}/box") and os.path.isdir(f"{root}/{PARENT}")


def test_v1_cpuset_is_copied_only_when_empty(tmp_path: Path) -> None:
    layout, fake, roots = v1_host(tmp_path)
    parent = Path(roots["cpuset"], PARENT)
    parent.mkdir()  # made before, and given CPU 2 and node 1 by the administrator
    (parent / "cpuset.cpus").write_text("2\n")
    (parent / "cpuset.mems").write_text("1\n")
    cgroup = ContainerCgroup.create("box", [], resources={"cpu": {"cpus": "2"}},
                                    layout=layout, files=fake)
    leaf = f"{parent}/box"
    assert [call for call in fake.changes() if str(call[1]).startswith(roots["cpuset"])] == [
        ("mkdir", str(parent)),
        ("mkdir", leaf),
        ("write", f"{leaf}/cpuset.cpus", "2"),
        ("write", f"{leaf}/cpuset.mems", "1"),
        ("write", f"{leaf}/cpuset.cpus", "2"),
    ]
    cgroup.remove()


def test_v1_a_limit_without_its_hierarchy_is_refused_and_nothing_is_left(
        tmp_path: Path) -> None:
    layout, fake, roots = v1_host(tmp_path, without=("cpu", "cpuacct"))
    message = one_line_error(lambda: ContainerCgroup.create(
        "box", [], resources={"cpu": {"shares": 512}}, layout=layout, files=fake),
        "host.cgroup_failed")
    assert message == ("cannot apply the container's cpu limits: this host has no cpu cgroup "
                       "hierarchy mounted")
    made = [f"{roots[mount]}/{PARENT}/box" for mount in ("devices", "memory", "pids",
                                                          "freezer")]
    assert [call for call in fake.changes() if call[0] == "rmdir"] == [
        ("rmdir", path) for path in made]
    assert fake.changes()[-1] == ("release", "box")
    for root in roots.values():
        assert not os.path.exists(f"{root}/{PARENT}/box")


def test_v1_a_hierarchy_no_limit_needs_is_skipped(tmp_path: Path) -> None:
    layout, fake, roots = v1_host(tmp_path, without=("freezer",))
    cgroup = ContainerCgroup.create("box", [], resources={"memory": {"limit": MIB}},
                                    layout=layout, files=fake)
    assert "freezer" not in cgroup.directories
    assert cgroup.paths == [f"{roots[mount]}/{PARENT}/box"
                            for mount in ("devices", "memory", "cpu,cpuacct", "pids")]
    cgroup.remove()


def test_v1_a_refused_write_removes_every_directory_made(tmp_path: Path) -> None:
    layout, fake, roots = v1_host(tmp_path)
    fake.fail["write", "/memory.limit_in_bytes"] = errno.EINVAL
    message = one_line_error(lambda: ContainerCgroup.create(
        "box", RULES, resources=FULL, layout=layout, files=fake), "host.cgroup_failed")
    memory = f"{roots['memory']}/{PARENT}/box"
    assert message == (f"cannot write '{256 * MIB}' to {memory}/memory.limit_in_bytes: "
                       f"Invalid argument")
    order = ["devices", "memory", "cpu,cpuacct", "pids", "freezer", "cpuset"]
    assert fake.changes()[-7:] == [*(("rmdir", f"{roots[mount]}/{PARENT}/box")
                                     for mount in order), ("release", "box")]
    for root in roots.values():  # the parents are kept
        assert not os.path.exists(f"{root}/{PARENT}/box") and os.path.isdir(f"{root}/{PARENT}")


def test_v1_memsw_without_swap_accounting_is_skipped(tmp_path: Path) -> None:
    files = dict(V1_FILES)
    files["memory"] = tuple(name for name in files["memory"]
                            if name != "memory.memsw.limit_in_bytes")
    layout, fake, _ = v1_host(tmp_path, files=files)
    cgroup = ContainerCgroup.create("box", [], resources={"memory": {
        "limit": 64 * MIB, "swap": 96 * MIB}}, layout=layout, files=fake)
    assert cgroup.skipped == [f"memory.memsw.limit_in_bytes={96 * MIB}"]
    cgroup.remove()


def test_v1_a_refused_cpuset_copy_leaves_nothing(tmp_path: Path) -> None:
    layout, fake, roots = v1_host(tmp_path)
    fake.fail["write", "/box/cpuset.mems"] = errno.EACCES
    one_line_error(lambda: ContainerCgroup.create(
        "box", [], resources={"cpu": {"cpus": "1"}}, layout=layout, files=fake),
        "host.cgroup_failed")
    assert not os.path.exists(f"{roots['cpuset']}/{PARENT}/box")


def test_v1_cpuset_comounted_with_cpu_is_given_cpus(tmp_path: Path) -> None:
    files = {mount: names for mount, names in V1_FILES.items()
             if mount not in ("cpu,cpuacct", "cpuset")}
    files["cpu,cpuacct,cpuset"] = (*V1_FILES["cpu,cpuacct"], *V1_FILES["cpuset"])
    layout, fake, roots = v1_host(tmp_path, files=files)
    root = roots["cpu,cpuacct,cpuset"]
    Path(root, "cpuset.cpus").write_text("0-3\n")
    Path(root, "cpuset.mems").write_text("0\n")
    cgroup = ContainerCgroup.create("box", [], resources={"cpu": {"shares": 512}},
                                    layout=layout, files=fake)
    try:
        # Else the kernel refuses every process moved in (ENOSPC).
        assert Path(root, PARENT, "box", "cpuset.cpus").read_text() == "0-3"
        assert Path(root, PARENT, "box", "cpuset.mems").read_text() == "0"
    finally:
        cgroup.remove()


@pytest.mark.parametrize(("without", "resources"), [
    ("pids", {"pids": {"limit": -1}}),
    ("memory", {"memory": {"swappiness": 10}}),
    ("memory", {"memory": {"disableOOMKiller": True}}),
])
def test_v1_a_limit_no_controller_requires_on_a_host_without_it(
        tmp_path: Path, without: str, resources: Value) -> None:
    # Skipped (the warning lists it), not a traceback: no limit needs the controller.
    layout, fake, _ = v1_host(tmp_path, without=(without,))
    cgroup = ContainerCgroup.create("box", [], resources=resources, layout=layout, files=fake)
    assert cgroup.skipped == [f"{write.file}={write.value}"
                              for write in v1_writes(resources)]
    cgroup.remove()


# -- Usage ----------------------------------------------------------------------------------


def cgroup_in(layout: Layout, fake: FakeKernel, directories: dict[str, str]) -> ContainerCgroup:
    """A ContainerCgroup of directories made by hand (no claim, nothing to release)."""
    for directory in directories.values():
        os.makedirs(directory, exist_ok=True)
        Path(directory, "cgroup.procs").touch()
    return ContainerCgroup("box", layout, list(dict.fromkeys(directories.values())),
                           files=fake, directories=directories)


V1_USAGE = {"cpuacct.usage": "1500000000\n", "memory.max_usage_in_bytes": "52428800\n",
            "memory.oom_control": "oom_kill_disable 1\nunder_oom 0\noom_kill 2\n"}
V2_USAGE = {"cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            "memory.peak": "1048576\n",
            "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 3\noom_group_kill 0\n"}


@pytest.mark.parametrize("missing", [None, *V1_USAGE])
def test_v1_usage(tmp_path: Path, missing: str | None) -> None:
    cpuacct, memory = str(tmp_path / "cpuacct"), str(tmp_path / "memory")
    cgroup = cgroup_in(Layout("v1", cpuacct), FakeKernel({}),
                       {"cpuacct": cpuacct, "memory": memory})
    for name, text in V1_USAGE.items():
        if name != missing:
            Path(memory if name.startswith("memory") else cpuacct, name).write_text(text)
    expected = {"cpuacct.usage": 1.5, "memory.max_usage_in_bytes": 52428800,
                "memory.oom_control": 2}
    assert usage_of(cgroup.usage()) == tuple(
        None if name == missing else value for name, value in expected.items())


def test_v1_usage_without_the_hierarchies_is_unknown(tmp_path: Path) -> None:
    cgroup = cgroup_in(Layout("v1", str(tmp_path)), FakeKernel({}),
                       {"devices": str(tmp_path / "devices")})
    assert usage_of(cgroup.usage()) == (None, None, None)


@pytest.mark.parametrize("missing", [None, *V2_USAGE])
def test_v2_usage(tmp_path: Path, missing: str | None) -> None:
    leaf = str(tmp_path / "box")
    cgroup = cgroup_in(Layout("v2", str(tmp_path)), FakeKernel({}, v2=True),
                       dict.fromkeys(("cpu", "memory"), leaf))
    for name, text in V2_USAGE.items():
        if name != missing:
            Path(leaf, name).write_text(text)
    expected = {"cpu.stat": 2.5, "memory.peak": 1048576, "memory.events": 3}
    assert usage_of(cgroup.usage()) == tuple(
        None if name == missing else value for name, value in expected.items())


def test_a_kernel_without_oom_kill_counts_tells_none(tmp_path: Path) -> None:
    memory = str(tmp_path / "memory")
    cgroup = cgroup_in(Layout("v1", memory), FakeKernel({}), {"memory": memory})
    # Before 4.13 memory.oom_control has no oom_kill line; oom_kill_disable is another key.
    Path(memory, "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert cgroup.usage().oom_kills is None


# -- kill_all -------------------------------------------------------------------------------


@pytest.fixture
def record_kills(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeKernel], None]:
    """Make os.kill record into a fake's calls, and signal only pids no process can have
    (kill_all then meets ESRCH, as for a process that exited meanwhile)."""
    real_kill = os.kill

    def install(fake: FakeKernel) -> None:
        def kill(pid: int, sig: int) -> None:
            fake.calls.append(("kill", pid, sig))
            assert pid >= NO_SUCH_PID, "a test must never signal a real process"
            real_kill(pid, sig)

        monkeypatch.setattr(os, "kill", kill)

    return install


PIDS = f"{NO_SUCH_PID}\n{NO_SUCH_PID + 1}\n"


def test_v2_kill_writes_cgroup_kill(tmp_path: Path,
                                    record_kills: Callable[[FakeKernel], None]) -> None:
    fake = FakeKernel({}, v2=True)
    record_kills(fake)
    leaf = str(tmp_path / "box")
    cgroup = cgroup_in(Layout("v2", str(tmp_path)), fake, {"devices": leaf})
    Path(leaf, "cgroup.kill").touch()
    Path(leaf, "cgroup.procs").write_text(PIDS)
    assert cgroup.kill_all() == 2
    assert fake.changes() == [("write", f"{leaf}/cgroup.kill", "1")]


@pytest.mark.parametrize("kill_file", [False, True], ids=["before-5.14", "refused"])
def test_v2_kill_without_cgroup_kill_freezes_kills_thaws(
        tmp_path: Path, record_kills: Callable[[FakeKernel], None], kill_file: bool) -> None:
    fake = FakeKernel({}, v2=True)
    record_kills(fake)
    leaf = str(tmp_path / "box")
    cgroup = cgroup_in(Layout("v2", str(tmp_path)), fake, {"devices": leaf})
    Path(leaf, "cgroup.freeze").write_text("0")
    Path(leaf, "cgroup.procs").write_text(PIDS)
    if kill_file:
        Path(leaf, "cgroup.kill").touch()
        fake.fail["write", "/cgroup.kill"] = errno.EINVAL
    assert cgroup.kill_all() == 2
    assert fake.changes() == [
        *([("write", f"{leaf}/cgroup.kill", "1")] if kill_file else []),
        ("write", f"{leaf}/cgroup.freeze", "1"),
        ("kill", NO_SUCH_PID, 9), ("kill", NO_SUCH_PID + 1, 9),
        ("write", f"{leaf}/cgroup.freeze", "0")]


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_kill_of_an_empty_cgroup_writes_nothing(tmp_path: Path, kind: str) -> None:
    fake = FakeKernel({}, v2=kind == "v2")
    leaf = str(tmp_path / "box")
    cgroup = cgroup_in(Layout(kind, str(tmp_path)), fake, {"devices": leaf, "freezer": leaf})
    Path(leaf, "cgroup.kill").touch()
    assert cgroup.kill_all() == 0
    assert fake.changes() == []


def test_v1_kill_waits_until_frozen_then_kills_and_thaws(
        tmp_path: Path, record_kills: Callable[[FakeKernel], None]) -> None:
    fake = FakeKernel({})
    record_kills(fake)
    devices, freezer = str(tmp_path / "devices"), str(tmp_path / "freezer")
    cgroup = cgroup_in(Layout("v1", devices), fake, {"devices": devices, "freezer": freezer})
    Path(devices, "cgroup.procs").write_text(PIDS)
    Path(freezer, "freezer.state").write_text("THAWED\n")
    state = f"{freezer}/freezer.state"
    fake.answers["freezer.state"] = ["FREEZING\n"]  # v1 freezes in the background
    assert cgroup.kill_all() == 2
    assert fake.calls == [
        ("read", f"{devices}/cgroup.procs"),
        ("write", state, "FROZEN"),
        ("read", state), ("read", state),  # FREEZING, then FROZEN: the fake's file
        ("read", f"{devices}/cgroup.procs"),
        ("kill", NO_SUCH_PID, 9), ("kill", NO_SUCH_PID + 1, 9),
        ("write", state, "THAWED")]


def test_v1_kill_without_a_freezer_kills_each(
        tmp_path: Path, record_kills: Callable[[FakeKernel], None]) -> None:
    fake = FakeKernel({})
    record_kills(fake)
    devices = str(tmp_path / "devices")
    cgroup = cgroup_in(Layout("v1", devices), fake, {"devices": devices})
    Path(devices, "cgroup.procs").write_text(PIDS)
    assert cgroup.kill_all() == 2
    assert fake.changes() == [("kill", NO_SUCH_PID, 9), ("kill", NO_SUCH_PID + 1, 9)]


# -- sweep_stale ----------------------------------------------------------------------------


def test_sweep_removes_the_recorded_path_in_every_hierarchy(tmp_path: Path) -> None:
    points = [str(tmp_path / name) for name in ("devices", "memory", "cpu,cpuacct")]
    layout = Layout("v1", points[0], {"devices": points[0], "memory": points[1],
                                      "cpu": points[2], "cpuacct": points[2]})
    fake = FakeKernel({})
    fake.claims = {"old": "custom/x", "plain": "", "live": "custom/live",
                   "busy": "custom/busy"}
    fake.held = {"live"}
    for point in points[:2]:  # not made in cpu,cpuacct: a hierarchy it never joined
        for name in ("custom/x", f"{PARENT}/plain", "custom/live", "custom/busy"):
            Path(point, name).mkdir(parents=True)
            Path(point, name, "cgroup.procs").write_text("")
    Path(points[0], "custom/busy/cgroup.procs").write_text(f"{NO_SUCH_PID}\n")
    assert sweep_stale(layout=layout, files=fake) == ["old", "plain"]
    assert fake.changes() == [
        ("claim", "old"), *(("rmdir", f"{point}/custom/x") for point in points),
        ("release", "old"),
        ("claim", "plain"), *(("rmdir", f"{point}/{PARENT}/plain") for point in points),
        ("release", "plain"),
        ("claim", "live"),
        ("claim", "busy"), ("rmdir", f"{points[0]}/custom/busy"),
    ]
    assert set(fake.claims) == {"live", "busy"}
    assert os.path.isdir(f"{points[0]}/custom/live") and os.path.isdir(
        f"{points[0]}/custom/busy")
    assert not os.path.exists(f"{points[1]}/custom/x")


def test_sweep_on_v2(tmp_path: Path) -> None:
    fake = FakeKernel({})
    fake.claims = {"old": "machine.slice/pyctr-old.scope"}
    Path(tmp_path, "machine.slice/pyctr-old.scope").mkdir(parents=True)
    assert sweep_stale(layout=Layout("v2", str(tmp_path)), files=fake) == ["old"]
    assert fake.changes() == [("claim", "old"),
                              ("rmdir", f"{tmp_path}/machine.slice/pyctr-old.scope"),
                              ("release", "old")]
    assert os.path.isdir(f"{tmp_path}/machine.slice")


# -- The layout -----------------------------------------------------------------------------

# This host's: v1 controllers each on its own, and a cgroup2 tree at /sys/fs/cgroup/unified.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# systemd's v1 layout, with a second devices mount (in a container's tree) after the first.
COMOUNTED = """\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/net_cls,net_prio rw shared:14 - cgroup cgroup rw,net_cls,net_prio
31 25 0:27 / /sys/fs/cgroup/devices rw,nosuid shared:15 - cgroup cgroup rw,devices
32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:16 - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/pids,freezer rw,nosuid shared:17 - cgroup cgroup rw,pids,freezer
90 60 0:27 / /srv/ctr/sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
"""
PURE_V2 = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""


@pytest.mark.parametrize(("mountinfo", "layout"), [
    (PURE_V2, Layout("v2", "/sys/fs/cgroup")),
    (HYBRID, Layout("v1", "/sys/fs/cgroup/devices", {
        name: f"/sys/fs/cgroup/{name}" for name in ("cpuset", "cpu", "cpuacct", "memory",
                                                    "devices", "freezer", "pids")})),
    (COMOUNTED, Layout("v1", "/sys/fs/cgroup/devices", {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "devices": "/sys/fs/cgroup/devices", "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids,freezer", "freezer": "/sys/fs/cgroup/pids,freezer"})),
    # v1 without devices, and cgroup2 only beside it: neither can hold the devices.
    ("\n".join(line for line in HYBRID.splitlines() if "devices" not in line),
     Layout("none")),
], ids=["v2", "hybrid", "comounted", "hybrid-without-devices"])
def test_detect_layout(mountinfo: str, layout: Layout) -> None:
    assert detect_layout(mountinfo) == layout
