"""Reading what /proc says about mounts and cgroups: pure parsing of the text of
/proc/self/mountinfo and /proc/self/cgroup, and reading such a file in one pass. Shared by the
init (what its cgroup mount shows) and the supervisor (where the hierarchies are), and cheap
to import: the CLI loads it before its fork, and the cgroup primer on a thread of its own."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeAlias

    # (root inside the hierarchy, mount point, fstype, super options)
    HostMount: TypeAlias = "tuple[str, str, str, frozenset[str]]"


def unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as \ooo, so every backslash in
    # mountinfo starts an escape; anything else is left as found rather than guessed at.
    if "\\" not in field:
        return field
    head, *rest = field.split("\\")
    parts = [head]
    for piece in rest:
        code = piece[:3]
        if len(code) == 3 and not code.strip("01234567"):
            parts.append(chr(int(code, 8)) + piece[3:])
        else:
            parts.append("\\" + piece)
    return "".join(parts)


def host_mounts(mountinfo: str) -> list[HostMount]:
    """The cgroup and cgroup2 mounts in ``mountinfo``."""
    mounts: list[HostMount] = []
    for line in mountinfo.splitlines():
        if " - cgroup" not in line:  # most lines: no need to split them
            continue
        # split(" ") rather than split(): an empty source field must keep its place.
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        tail = fields.index("-", 6) + 1
        if len(fields) < tail + 3 or fields[tail] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(fields[tail + 2].split(","))
        mounts.append((unescape(fields[3]), unescape(fields[4]), fields[tail], options))
    return mounts


def find_hierarchy(mounts: list[HostMount], controllers: str) -> HostMount | None:
    # Hierarchy 0 is the v2 one; a v1 hierarchy's super options name all its controllers (or
    # its name=...). The first match wins, as it does for runc.
    wanted = frozenset(controllers.split(","))
    for mount in mounts:
        if controllers and mount[2] == "cgroup" and wanted <= mount[3]:
            return mount
        if not controllers and mount[2] == "cgroup2":
            return mount
    return None


def hierarchy_directory(mount: HostMount, path: str) -> str | None:
    """The host directory for ``path`` in the hierarchy, or None if this mount cannot show it
    (a mount of a subtree elsewhere, or a path outside our cgroup namespace: "/../x")."""
    root, point = mount[0].rstrip("/"), mount[1].rstrip("/")
    if "/../" in path + "/" or not (path + "/").startswith(root + "/"):
        return None
    return point + path[len(root):].rstrip("/") or "/"


def read_proc_file(path: str) -> str:
    """The whole of a /proc (or /sys, cgroup) file, read in one pass: os.open and os.read,
    where open() would also fstat, seek and ask whether the file is a terminal. fsdecode
    keeps bytes that are not UTF-8, so mount(2) gets a path back intact."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return os.fsdecode(b"".join(chunks))


def own_cgroup_directory(proc_self_cgroup: str, mountinfo: str) -> str | None:
    """The host directory of one cgroup this process is in (of the first hierarchy listed in
    ``proc_self_cgroup`` that is mounted where this process can see it), or None."""
    mounts = host_mounts(mountinfo)
    for line in proc_self_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3 or fields[1].startswith("name="):
            continue
        mount = find_hierarchy(mounts, fields[1])
        source = None if mount is None else hierarchy_directory(mount, fields[2])
        if source is not None:
            return source
    return None
