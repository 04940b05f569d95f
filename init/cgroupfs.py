"""What a ``"type": "cgroup"`` mount shows the container: its own cgroups, as runc does them
without a cgroup namespace.

On cgroup v1 or hybrid hosts the destination becomes a tmpfs holding one bind mount per
hierarchy the process is in (the hierarchy's host mount plus the process's path in it, so the
container sees its own cgroup as the root), named after the host mount point, plus symlinks so
each co-mounted controller is reachable by its own name. On a pure v2 host the process's
cgroup2 directory is bound onto the destination itself. Planning is a pure function of the
text of /proc/self/cgroup and /proc/self/mountinfo, so every layout can be tested without one.
"""

from __future__ import annotations

from pyctr.linux.procfs import (
    find_hierarchy,
    hierarchy_directory,
    host_mounts,
    read_proc_file,
    unescape,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.linux.procfs import HostMount

# runc picks v2 mode when this is a cgroup2 mount (it checks with statfs).
_UNIFIED_MOUNT_POINT = "/sys/fs/cgroup"


class CgroupMount:
    """One step: ``kind`` is "tmpfs", "bind" (``source`` is a host path) or "symlink"
    (``source`` is the relative link text); ``target`` is relative to the mount destination,
    "" meaning the destination itself."""

    __slots__ = ("kind", "source", "target")

    def __init__(self, kind: str, source: str, target: str) -> None:
        self.kind, self.source, self.target = kind, source, target

    def __repr__(self) -> str:
        return f"CgroupMount({self.kind!r}, {self.source!r}, {self.target!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CgroupMount):
            return NotImplemented
        return (self.kind, self.source, self.target) == (other.kind, other.source, other.target)


def _mount_points(mountinfo: str) -> list[str]:
    return [unescape(line.split(" ", 5)[4]) for line in mountinfo.splitlines()
            if line.count(" ") >= 5]


def plan_cgroup_mounts(proc_self_cgroup: str, mountinfo: str) -> list[CgroupMount]:
    """What to mount, in order: tmpfs first, then binds in /proc/self/cgroup order, then
    symlinks. Hierarchies that are not mounted on the host (or not visible there) are
    skipped."""
    return _plan(proc_self_cgroup, host_mounts(mountinfo))


def _plan(proc_self_cgroup: str, mounts: list[HostMount]) -> list[CgroupMount]:
    hierarchies: list[tuple[str, str]] = []
    for line in proc_self_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].startswith("/"):
            continue
        number, controllers, path = fields
        if (number == "0") != (controllers == ""):
            continue  # v1 hierarchies always name a controller or name=, v2's never does
        hierarchies.append((controllers, path))

    unified = [m for m in mounts if m[2] == "cgroup2" and m[1] == _UNIFIED_MOUNT_POINT]
    if unified:
        paths = [path for controllers, path in hierarchies if not controllers]
        source = hierarchy_directory(unified[0], paths[0]) if paths else None
        return [] if source is None else [CgroupMount("bind", source, "")]

    plan = [CgroupMount("tmpfs", "", "")]
    links: list[tuple[str, str]] = []
    for controllers, path in hierarchies:
        mount = find_hierarchy(mounts, controllers)
        source = None if mount is None else hierarchy_directory(mount, path)
        name = "" if mount is None else mount[1].rpartition("/")[2]
        # Two hierarchies mounted under the same basename elsewhere: the first one keeps it.
        if source is None or not name or any(step.target == name for step in plan):
            continue
        plan.append(CgroupMount("bind", source, name))
        links += [(c, name) for c in controllers.split(",") if c and "=" not in c and c != name]
    taken = {step.target for step in plan}
    for link, name in links:
        if link not in taken:
            taken.add(link)
            plan.append(CgroupMount("symlink", name, link))
    return plan


def plan_cgroup_tree(proc_self_cgroup: str,
                     mountinfo: str) -> tuple[str, list[CgroupMount]] | None:
    """The same view in fewer mounts, where the host allows: when every hierarchy is mounted
    in one directory that is a mount of its own (the host's /sys/fs/cgroup tmpfs) and nothing
    else is mounted below it, one recursive bind of that directory shows every hierarchy's
    root, and only the hierarchies where the process is not at the root need a bind of its
    own cgroup on top. Returns (that directory, those binds), or None."""
    return _tree(host_mounts(mountinfo), _plan(proc_self_cgroup, host_mounts(mountinfo)),
                 mountinfo)


def _tree(mounts: list[HostMount], plan: list[CgroupMount],
          mountinfo: str) -> tuple[str, list[CgroupMount]] | None:
    binds = [step for step in plan if step.kind == "bind"]
    if not binds or plan[0].kind != "tmpfs":
        return None
    hosted = [mount[1] for mount in mounts]
    parents = set()
    for step in binds:
        point = next((p for p in hosted if p.rpartition("/")[2] == step.target), "")
        parents.add(point.rpartition("/")[0])
    if len(parents) != 1 or "" in parents:
        return None
    parent = parents.pop()
    named = {f"{parent}/{step.target}" for step in binds}
    points = _mount_points(mountinfo)
    if parent not in points or any(point.startswith(parent + "/") and point not in named
                                   for point in points):
        return None
    return parent, [step for step in binds if step.source != f"{parent}/{step.target}"]


def _read_host_files() -> tuple[str, str]:
    return read_proc_file("/proc/self/cgroup"), read_proc_file("/proc/self/mountinfo")


def with_joined(proc_self_cgroup: str, mounts: list[HostMount],
                joining: list[str] | tuple[str, ...]) -> str:
    """``proc_self_cgroup`` as it reads once this process is in the cgroups ``joining``
    (host directories): each line of a hierarchy mounted at a parent of one of them names
    that cgroup instead."""
    lines = []
    for line in proc_self_cgroup.splitlines():
        number, controllers, _ = line.split(":", 2)
        mount = None if controllers.startswith("name=") else find_hierarchy(mounts, controllers)
        if mount is not None:
            point = mount[1].rstrip("/") + "/"
            for directory in joining:
                if directory.startswith(point):
                    root = mount[0].rstrip("/")
                    line = f"{number}:{controllers}:{root}/{directory[len(point):]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def read_host_cgroup_mounts() -> list[CgroupMount]:
    """``plan_cgroup_mounts`` for this process, now."""
    return plan_cgroup_mounts(*_read_host_files())


def read_host_cgroups(joining: list[str] | tuple[str, ...] = (),
                      ) -> tuple[tuple[str, list[CgroupMount]] | None, list[CgroupMount]]:
    """``plan_cgroup_tree`` and ``plan_cgroup_mounts`` for this process, now, from one read
    of the files. ``joining``: host directories of cgroups this process is being moved into
    (the container's own), to show as its cgroups in their hierarchies already."""
    proc_self_cgroup, mountinfo = _read_host_files()
    mounts = host_mounts(mountinfo)
    if joining:
        proc_self_cgroup = with_joined(proc_self_cgroup, mounts, joining)
    plan = _plan(proc_self_cgroup, mounts)
    return _tree(mounts, plan, mountinfo), plan

