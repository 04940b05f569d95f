"""The container's root filesystem, as a plan of steps and one loop that applies them.

``plan_root`` turns a spec's root, mounts and devices into an ordered list of steps (as
bubblewrap turns its options into setup operations); ``apply_plan`` runs them against a
``Syscalls`` object. Tests check the plan and the recorded calls without root; the real run
uses ``LinuxSyscalls``.

The order matters:

1. make ``/`` private (or, when a mount asks for propagation, a slave), recursively, before
   mounting anything, or our mounts propagate to the host's mount namespace;
2. bind-mount the rootfs onto itself, because pivot_root needs the new root to be a mount
   point (or, with an overlay, mount an overlayfs on it whose read-only lower layer is the
   rootfs: the container's writes go to the supervisor's upper directory);
3. the spec's mounts, in the spec's order, each destination resolved inside the rootfs (a
   symlink in the rootfs never leads a mount out of it; ``/proc``, ``/sys`` and ``/dev`` may
   not be symlinks at all), its mount point created first when missing;
4. the device nodes and /dev's links, the namespaced sysctls (through the container's own
   /proc), and the root made read-only if the spec says so;
5. pivot_root into it and detach the old root, so nothing of the host stays reachable
   (or, with ``chroot``, a plain chroot), then the root's propagation.
"""

from __future__ import annotations

import errno as errno_codes
import os
import stat

from pyctr.linux.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    RECURSIVE_FLAGS,
    SyscallError,
)
from pyctr.spec.model import DEV_LINKS, DEVICES
from pyctr.spec.model import Mount as SpecMount

from . import cgroupfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from pyctr.linux.syscalls import Syscalls
    from pyctr.spec.model import Device, Spec

    Step: TypeAlias = ("Mount | OverlayRoot | MountInRoot | CgroupMounts | MakeNodes"
                       " | Sysctl | ReadOnlyPath | MaskedPath | NodevRoot | ReadOnlyRoot"
                       " | PivotRoot | Chroot | Propagation")

# mount(8)'s option names: (flag to set, or to clear when the second item is True).
FLAG_OPTIONS: dict[str, tuple[int, bool]] = {
    "ro": (MS_RDONLY, False), "rw": (MS_RDONLY, True),
    "nosuid": (MS_NOSUID, False), "suid": (MS_NOSUID, True),
    "nodev": (MS_NODEV, False), "dev": (MS_NODEV, True),
    "noexec": (MS_NOEXEC, False), "exec": (MS_NOEXEC, True),
    "sync": (MS_SYNCHRONOUS, False), "async": (MS_SYNCHRONOUS, True),
    "dirsync": (MS_DIRSYNC, False), "mand": (MS_MANDLOCK, False),
    "nomand": (MS_MANDLOCK, True),
    "noatime": (MS_NOATIME, False), "atime": (MS_NOATIME, True),
    "nodiratime": (MS_NODIRATIME, False), "diratime": (MS_NODIRATIME, True),
    "relatime": (MS_RELATIME, False), "norelatime": (MS_RELATIME, True),
    "strictatime": (MS_STRICTATIME, False), "nostrictatime": (MS_STRICTATIME, True),
    "lazytime": (MS_LAZYTIME, False), "nolazytime": (MS_LAZYTIME, True),
    "nosymfollow": (MS_NOSYMFOLLOW, False), "symfollow": (MS_NOSYMFOLLOW, True),
    "bind": (MS_BIND, False), "rbind": (MS_BIND | MS_REC, False),
    "defaults": (0, False),
}
PROPAGATION_OPTIONS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
# Where runc refuses a symlink: a kernel filesystem mounted through one could end up anywhere.
NO_SYMLINK_DESTINATIONS = ("/proc", "/sys", "/dev")
_KEPT_ON_REMOUNT = (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME
                    | MS_RELATIME)


def _named(shown: str, call: Callable[..., None], *args: object) -> None:
    """``call``, its failure naming ``shown`` (the path in the container) rather than the
    /proc/self/fd name the call was given."""
    try:
        call(*args)
    except SyscallError as exc:
        raise SyscallError(exc.errno or 0, exc.operation.replace(" on", ""), shown) from None


class _Inside:
    """A path inside the root as ``Syscalls.resolve`` names it, for one ``with`` block: the
    name is released when the block ends, however it ends."""

    __slots__ = ("sys", "target")

    def __init__(self, sys: Syscalls, root: str, path: str, create: str | None = None,
                 refuse_symlink: bool = False) -> None:
        self.sys = sys
        self.target = sys.resolve(root, path, create, refuse_symlink)

    def __enter__(self) -> str:
        return self.target

    def __exit__(self, *_: object) -> None:
        self.sys.release(self.target)


class _InRoot:
    """A step on a destination inside the root, whose errors name that destination."""

    __slots__ = ("destination",)

    def __init__(self, destination: str) -> None:
        self.destination = destination

    def _mount(self, sys: Syscalls, source: str | None, target: str, fstype: str | None,
               flags: int, data: str | None) -> None:
        _named(self.destination, sys.mount, source, target, fstype, flags, data)


def parse_options(options: list[str]) -> tuple[int, int, str | None]:
    """(flags, propagation flags, data) for mount(2) from a spec mount's option list:
    known flag names become flags, the rest (``mode=755``, ``size=64m``) data."""
    flags = propagation = 0
    data = []
    for option in options:
        if option in FLAG_OPTIONS:
            flag, clear = FLAG_OPTIONS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION_OPTIONS:
            propagation |= PROPAGATION_OPTIONS[option]
        elif option.startswith(("x-", "X-")):
            continue  # userspace-only options, for mount helpers
        else:
            data.append(option)
    return flags, propagation, ",".join(data) or None


class Mount:
    """A mount on a host path (the host's root, the rootfs itself)."""

    __slots__ = ("data", "flags", "fstype", "source", "target")

    def __init__(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self.source, self.target, self.fstype, self.flags, self.data = (
            source, target, fstype, flags, data
        )

    def apply(self, sys: Syscalls, root: str) -> None:
        sys.mount(self.source, self.target, self.fstype, self.flags, self.data)

    def __repr__(self) -> str:
        return f"Mount({self.source!r}, {self.target!r}, {self.fstype!r}, {self.flags:#x})"


class OverlayRoot:
    """An overlayfs on the rootfs's own path, with the rootfs as its only, read-only, lower
    layer. Mounted in the container's mount namespace (made private before): the host never
    sees it, and it goes when the container does. The lower layer is looked up before the
    new mount covers the path, so the overlay can sit on its own lower directory."""

    __slots__ = ("upper", "work")

    def __init__(self, upper: str, work: str) -> None:
        self.upper, self.work = upper, work

    def apply(self, sys: Syscalls, root: str) -> None:
        # The supervisor refuses paths overlayfs's option syntax cannot carry (, : \\).
        data = f"lowerdir={root},upperdir={self.upper},workdir={self.work}"
        try:
            sys.mount("overlay", root, "overlay", 0, data)
        except SyscallError as exc:
            raise SyscallError(exc.errno or 0, "mount overlay", self.upper) from None

    def __repr__(self) -> str:
        return f"OverlayRoot({self.upper!r}, {self.work!r})"


class MountInRoot(_InRoot):
    """One of the spec's mounts: a filesystem (or, for ``bind``, a host path) on a
    destination resolved inside the root, created when missing."""

    __slots__ = ("fstype", "source", "spec_options")

    def __init__(self, mount: SpecMount) -> None:
        super().__init__(mount.destination)
        self.fstype = "bind" if mount.is_bind else mount.type
        self.source = mount.source
        self.spec_options = mount.options

    def apply(self, sys: Syscalls, root: str) -> None:
        flags, propagation, data = parse_options(self.spec_options)
        bind = self.fstype == "bind"
        create = "dir"
        if bind:
            assert self.source is not None
            flags |= MS_BIND
            if not os.path.isdir(self.source):
                create = "file"
        refuse = self.destination.rstrip("/") in NO_SYMLINK_DESTINATIONS or \
            self.fstype in ("proc", "sysfs")
        with _Inside(sys, root, self.destination, create, refuse) as target:
            if bind:
                self._mount(sys, self.source, target, None, flags & (MS_BIND | MS_REC), None)
            else:
                self._mount(sys, self.source or self.fstype, target, self.fstype, flags, data)
        extra = flags & ~(MS_BIND | MS_REC)
        if not (propagation or (bind and extra)):
            return
        # The descriptor named the directory under the new mount; the mount itself is what a
        # fresh lookup finds now.
        with _Inside(sys, root, self.destination) as target:
            if bind and extra:
                # A bind takes its flags only on a remount, which applies to the top mount
                # and sets them all: the source's nosuid, nodev and noexec stay. Read-only
                # reaches the submounts of a recursive bind through mount_setattr.
                extra |= sys.mount_flags(target) & _KEPT_ON_REMOUNT
                self._mount(sys, None, target, None, MS_BIND | MS_REMOUNT | extra, None)
                if flags & MS_REC and flags & RECURSIVE_FLAGS:
                    _named(self.destination, sys.set_recursive, target,
                           flags & RECURSIVE_FLAGS)
            if propagation:
                self._mount(sys, None, target, None, propagation, None)


class CgroupMounts(_InRoot):
    """``type: cgroup``: the container's own cgroups (see cgroupfs): one recursive bind of the
    host's hierarchies with the container's own cgroup bound over those where it is not at
    the root, or, where the host's layout does not allow that, a tmpfs of ours with a bind
    per hierarchy. Only the destination is resolved (what is below it is ours), and the
    options (read-only, nosuid, ...) then reach every mount at once."""

    __slots__ = ("flags", "plan", "tree")

    def __init__(self, mount: SpecMount, joining: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(mount.destination)
        self.flags, _, _ = parse_options(mount.options)
        # Read now, before the init makes a cgroup namespace of its own (plan_root comes
        # first): inside one, the host's hierarchies no longer show where they are mounted.
        # ``joining``: the container's own cgroups, which the supervisor is moving us into.
        self.tree, self.plan = cgroupfs.read_host_cgroups(joining)
        if self.tree is not None:
            self.plan = self.tree[1]

    def apply(self, sys: Syscalls, root: str) -> None:
        tree, plan = self.tree, self.plan
        with _Inside(sys, root, self.destination, "dir") as target:
            if tree is not None:  # the host's hierarchies, all in one recursive bind
                self._mount(sys, tree[0], target, None, MS_BIND | MS_REC, None)
            for item in plan if tree is None else ():
                if item.kind == "tmpfs":
                    self._mount(sys, "cgroup", target, "tmpfs", self.flags & _KEPT_ON_REMOUNT,
                                "mode=755")
                elif not item.target:  # cgroup v2 alone: its one bind is the destination
                    self._mount(sys, item.source, target, None, MS_BIND | MS_REC, None)
        # The destination again: the descriptor above names what is under the new mount.
        with _Inside(sys, root, self.destination) as top:
            for item in plan:
                if item.kind == "bind" and item.target:
                    if tree is None:  # in our own tmpfs; with the tree, it is a mount point
                        sys.mkdir(f"{top}/{item.target}", 0o755)
                    self._mount(sys, item.source, f"{top}/{item.target}", None,
                                MS_BIND | MS_REC, None)
                elif item.kind == "symlink":
                    sys.symlink(item.source, f"{top}/{item.target}")
            if self.flags & RECURSIVE_FLAGS:
                _named(self.destination, sys.set_recursive, top, self.flags & RECURSIVE_FLAGS)


_NODE_KINDS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO,
               "f": stat.S_IFREG}


class Node:
    """A device node, FIFO or placeholder file, ``name`` in its directory."""

    __slots__ = ("gid", "kind", "major", "minor", "mode", "name", "uid")

    def __init__(self, name: str, kind: str, major: int = 0, minor: int = 0,
                 mode: int = 0o666, uid: int = 0, gid: int = 0) -> None:
        self.name, self.kind, self.major, self.minor = name, kind, major, minor
        self.mode, self.uid, self.gid = mode, uid, gid

    def make(self, sys: Syscalls, directory: str) -> None:
        path = f"{directory}/{self.name}"
        try:
            sys.mknod(path, _NODE_KINDS[self.kind] | self.mode, self.major, self.minor)
        except SyscallError as exc:
            if exc.errno != errno_codes.EEXIST:
                raise
            return  # the rootfs has it already (a /dev that pyctr did not mount), as runc
        if self.uid or self.gid:
            sys.chown(path, self.uid, self.gid)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.kind!r}, {self.major}, {self.minor})"


class MakeNodes:
    """Device nodes and symlinks in one directory inside the root, resolved once."""

    __slots__ = ("directory", "links", "nodes")

    def __init__(self, directory: str, nodes: list[Node],
                 links: tuple[tuple[str, str], ...] = ()) -> None:
        self.directory, self.nodes, self.links = directory, nodes, links

    def apply(self, sys: Syscalls, root: str) -> None:
        with _Inside(sys, root, self.directory, "dir") as directory:
            for node in self.nodes:
                node.make(sys, directory)
            for name, target in self.links:
                sys.symlink(target, f"{directory}/{name}")

    def __repr__(self) -> str:
        return f"MakeNodes({self.directory!r}, {self.nodes!r}, {self.links!r})"


class ReadOnlyPath(_InRoot):
    """``linux.readonlyPaths``: the path bound onto itself, read-only (a missing one is left
    alone: what the kernel does not have needs no protection)."""

    __slots__ = ()

    def apply(self, sys: Syscalls, root: str) -> None:
        found = _existing(sys, root, self.destination)
        if found is None:
            return
        with found as target:
            self._mount(sys, target, target, None, MS_BIND | MS_REC, None)
        with _Inside(sys, root, self.destination) as target:  # the bind itself now
            kept = sys.mount_flags(target) & _KEPT_ON_REMOUNT
            self._mount(sys, None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept, None)


class MaskedPath(_InRoot):
    """``linux.maskedPaths``: an empty read-only tmpfs over a directory, the host's /dev/null
    over anything else (a missing path is left alone)."""

    __slots__ = ()

    def apply(self, sys: Syscalls, root: str) -> None:
        found = _existing(sys, root, self.destination)
        if found is None:
            return
        with found as target:
            if sys.is_directory(target):
                self._mount(sys, "tmpfs", target, "tmpfs", MS_RDONLY, None)
            else:
                self._mount(sys, "/dev/null", target, None, MS_BIND, None)


def _existing(sys: Syscalls, root: str, path: str) -> _Inside | None:
    try:
        return _Inside(sys, root, path)
    except SyscallError as exc:
        if exc.errno == errno_codes.ENOENT:
            return None
        raise


class Sysctl:
    """A namespaced kernel setting, written through the container's own /proc."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: str) -> None:
        self.key, self.value = key, value

    def apply(self, sys: Syscalls, root: str) -> None:
        with _Inside(sys, root, "/proc/sys/" + self.key.replace(".", "/"), None, True) as target:
            sys.write_file(target, self.value)


class NodevRoot:
    """No device node in the root, or in any mount already below it, opens: the fallback
    where the kernel cannot hold the container to its devices (``Config.nodev``)."""

    __slots__ = ()

    def apply(self, sys: Syscalls, root: str) -> None:
        sys.set_recursive(root, MS_NODEV)


class ReadOnlyRoot:
    __slots__ = ()

    def apply(self, sys: Syscalls, root: str) -> None:
        kept = sys.mount_flags(root) & _KEPT_ON_REMOUNT
        sys.mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept, None)


class PivotRoot:
    """pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
    removes the old root without needing a directory for it (the way crun does it)."""

    __slots__ = ()

    def apply(self, sys: Syscalls, root: str) -> None:
        sys.chdir(root)
        sys.pivot_root(".", ".")
        # The old root is a private or slave copy (the first step): its detach reaches no
        # other mount table, and the container's own mounts keep the propagation they were
        # given.
        sys.umount2(".", MNT_DETACH)
        sys.chdir("/")

    def __repr__(self) -> str:
        return "PivotRoot()"


class Chroot:
    __slots__ = ()

    def apply(self, sys: Syscalls, root: str) -> None:
        sys.chdir(root)
        sys.chroot(".")
        sys.chdir("/")

    def __repr__(self) -> str:
        return "Chroot()"


class Propagation:
    """linux.rootfsPropagation, on the new root once it is the root."""

    __slots__ = ("flags",)

    def __init__(self, flags: int) -> None:
        self.flags = flags

    def apply(self, sys: Syscalls, root: str) -> None:
        sys.mount(None, "/", None, self.flags, None)


def plan_root(spec: Spec, rootfs: str, *, chroot: bool = False, nodev: bool = False,
              cgroups: list[str] | tuple[str, ...] = (),
              overlay: tuple[str, str] | None = None) -> list[Step]:
    """The steps that turn the absolute host path ``rootfs`` into the container's root.
    ``nodev``: every mount but ``/dev`` and those below it is made nodev, the root too;
    ``cgroups``: the container's own cgroups (host directories), for a cgroup mount;
    ``overlay``: (upper, work) host directories of an overlayfs root over ``rootfs``."""
    if not os.path.isabs(rootfs):
        raise ValueError(f"rootfs must be an absolute path, not {rootfs!r}")
    root = rootfs.rstrip("/") or "/"
    # Private, as docker's volumes are by default; a slave when a mount asks to receive the
    # host's mounts (slave) or to share its own (shared): none of the container's mounts
    # reach the host either way. Private mounts are also the cheaper ones to make and to
    # detach (a slave's copies join its master's list).
    propagating = any(option in PROPAGATION_OPTIONS and "private" not in option
                      for mount in spec.mounts for option in mount.options)
    plan: list[Step] = [
        Mount(None, "/", None, MS_REC | (MS_SLAVE if propagating else MS_PRIVATE), None),
        Mount(root, root, None, MS_BIND | MS_REC, None) if overlay is None
        else OverlayRoot(*overlay),
    ]
    if nodev:
        plan.append(NodevRoot())
    destinations = set()
    for mount in spec.mounts:
        destination = mount.destination.rstrip("/") or "/"
        destinations.add(destination)
        if nodev and destination != "/dev" and not destination.startswith("/dev/"):
            mount = SpecMount(mount.destination, mount.type, mount.source,
                              [*mount.options, "nodev"])
        plan.append(CgroupMounts(mount, cgroups) if mount.type == "cgroup" and not mount.is_bind
                    else MountInRoot(mount))
    plan += _devices(spec.linux.devices, "/dev" in destinations, spec.process.terminal)
    plan += [Sysctl(key, value) for key, value in sorted(spec.linux.sysctl.items())]
    plan += [ReadOnlyPath(path) for path in spec.linux.readonly_paths]
    plan += [MaskedPath(path) for path in spec.linux.masked_paths]
    if spec.root_readonly:
        plan.append(ReadOnlyRoot())
    plan.append(Chroot() if chroot else PivotRoot())
    if spec.linux.rootfs_propagation:
        plan.append(Propagation(PROPAGATION_OPTIONS[spec.linux.rootfs_propagation]))
    return plan


def _devices(devices: list[Device], dev_mounted: bool, terminal: bool) -> list[Step]:
    """The default nodes and links (into a /dev the spec mounts: a rootfs's own /dev is left
    as it is), then the spec's own devices."""
    steps: list[Step] = []
    if dev_mounted:
        given = {device.path for device in devices}
        nodes = [Node(name, "c", major, minor) for name, major, minor in DEVICES
                 if f"/dev/{name}" not in given]
        if terminal:  # the terminal's slave is bound here once it exists
            nodes.append(Node("console", "f", mode=0o600))
        steps.append(MakeNodes("/dev", nodes, DEV_LINKS))
    for device in devices:
        directory, _, name = device.path.rpartition("/")
        mode = 0o666 if device.file_mode is None else device.file_mode
        steps.append(MakeNodes(directory or "/", [Node(
            name, device.type, device.major, device.minor, mode, device.uid or 0,
            device.gid or 0)]))
    return steps


def apply_plan(plan: list[Step], sys: Syscalls, rootfs: str,
               on_mount: Callable[[str, str], None] | None = None) -> list[str]:
    """Run every step in order; return the mount points made, as seen inside the container.
    ``on_mount(mount point, fstype)`` is called after each filesystem is mounted."""
    root = rootfs.rstrip("/") or "/"
    mounted: list[str] = []
    for step in plan:
        step.apply(sys, root)
        if isinstance(step, MountInRoot | CgroupMounts):
            fstype = "cgroup" if isinstance(step, CgroupMounts) else step.fstype or "none"
            mounted.append(step.destination)
            if on_mount is not None:
                on_mount(step.destination, fstype)
    return mounted
