"""The container's own cgroup, and the devices it may use.

A container may open, and mount, only the devices it is given: the runtime spec's defaults
(``/dev/null`` and friends, terminals), its ``linux.devices`` and what its
``linux.resources.devices`` allows. A node its root makes with mknod for the host's disk, in
any directory, is refused. ``device_rules`` turns a spec into the rules, as docker and runc
give them: deny everything, allow making (``m``) any character node, so CAP_MKNOD still works
though the node cannot be opened, then allow the devices above. Unlike docker, no block node
can be made at all (see ``DEFAULT_RULES``).

The kernel enforces them through the container's cgroup, ``ContainerCgroup``, which lives at
``<hierarchy>/pyctr/<name>``: on cgroup v1 in the devices hierarchy, whose controller takes the
rules written to ``devices.deny``/``devices.allow``; on cgroup v2, which has no devices
controller, in the unified tree, with a BPF device program attached (``devices_bpf``). When
there is neither, or the program cannot be loaded, ``devices_enforced`` is false and
``unenforced_reason`` says why: the caller warns and mounts everything but ``/dev`` nodev.

Why ``pyctr/<name>`` below the hierarchy's root, not below the supervisor's own cgroup: on v2 a
cgroup that enables controllers for its children (memory, cpu and pids limits, which come
next) must hold no process itself, and the supervisor's cgroup holds the supervisor; the root
of the hierarchy and ``pyctr`` hold none. It is also one known place where a leftover can be
found by name (``remove_stale``), whoever ran the supervisor. ``pyctr`` is made when missing
and kept, as docker keeps ``/docker``.

Errors are PyctrError with one line and these names: ``host.cgroup_failed`` (the kernel
refused to make, write or remove a cgroup), ``host.cgroup_exists`` (a container of that name
already has one), ``config.invalid`` (a name that cannot be a cgroup's directory). A bad
``linux.resources.devices`` entry is a SpecError naming the field.

Imported by the CLI before it forks the container's init: only ``os`` and modules the CLI has
loaded already; the BPF part is imported on v2 hosts only.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import time

from pyctr.init.cgroupfs import host_mounts, read_proc_file
from pyctr.spec.model import DEVICES, SpecError

from .errors import PyctrError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value
    from pyctr.spec.model import Spec

PARENT = os.environ.get("PYCTR_CGROUP_PARENT", "pyctr")
"""The cgroup every container's own is made in (the tests use one of their own)."""
CLAIMS = "/run/pyctr/cgroups"
"""Where a supervisor holds an flock on a file named after its container, for as long as it
lives: a cgroup whose claim nobody holds was left by a supervisor that was killed."""
_UNIFIED_MOUNT_POINT = "/sys/fs/cgroup"
ACCESS = "rwm"
# How long remove() waits for the last tasks to leave (EBUSY) before it gives up.
REMOVE_TIMEOUT = 2.0


class DeviceRule:
    """One rule, as cgroup v1 writes it: ``type`` "c", "b" or "a" (every device; ``major``
    and ``minor`` are then -1), ``major``/``minor`` -1 for any (``*``), ``access`` a subset
    of "rwm" (read, write, mknod), ``allow`` whether it allows or denies."""

    __slots__ = ("access", "allow", "major", "minor", "type")

    def __init__(self, type: str, major: int = -1, minor: int = -1, access: str = ACCESS,
                 allow: bool = True) -> None:
        self.type, self.major, self.minor = type, major, minor
        self.access, self.allow = access, allow

    def line(self) -> str:
        """What devices.allow or devices.deny takes: ``c 1:3 rwm``, ``c 136:* rwm``, ``a``."""
        if self.type == "a":
            return "a"
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceRule):
            return NotImplemented
        return (self.type, self.major, self.minor, self.access, self.allow) == (
            other.type, other.major, other.minor, other.access, other.allow)

    def __hash__(self) -> int:
        return hash((self.type, self.major, self.minor, self.access, self.allow))

    def __repr__(self) -> str:
        return f"DeviceRule({self.line()!r}, allow={self.allow})"


# After "deny all": make any character node (docker's rule, so CAP_MKNOD keeps working), use
# the spec's defaults. Unlike docker, no block node may be made: a mount of a disk the host has
# mounted already reuses its superblock without opening the device, so the cgroup's check never
# runs, and a container given CAP_SYS_ADMIN could mount the host's root through such a node.
DEFAULT_RULES = (
    DeviceRule("a", allow=False),
    DeviceRule("c", access="m"),
    *(DeviceRule("c", major, minor) for _, major, minor in DEVICES),
    DeviceRule("c", 5, 1),  # /dev/console
    DeviceRule("c", 5, 2),  # /dev/ptmx
    DeviceRule("c", 136),  # /dev/pts/*
)


def device_rules(spec: Spec) -> list[DeviceRule]:
    """The rules for ``spec``, in runc's order: deny everything, then
    ``linux.resources.devices`` in order, then the default allowed devices (which a
    resources rule cannot take away, as with runc), then each ``linux.devices`` entry (rwm;
    fifos need none) that no resources rule names exactly: such a rule decides its access
    (docker's ``--device HOST:CTR:r``). Raises SpecError naming the field."""
    given = _resource_rules(spec.linux.resources)
    rules = [DEFAULT_RULES[0], *given, *DEFAULT_RULES[1:]]
    named = {(rule.type, rule.major, rule.minor) for rule in given}
    for device in spec.linux.devices:
        if device.type != "p":
            kind = "b" if device.type == "b" else "c"  # "u" is an unbuffered char device
            if (kind, device.major, device.minor) not in named:
                rules.append(DeviceRule(kind, device.major, device.minor))
    return rules


def _resource_rules(resources: Value) -> list[DeviceRule]:
    if resources is None:
        return []
    if not isinstance(resources, dict):
        raise SpecError("linux.resources must be an object")
    entries = resources.get("devices")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise SpecError("linux.resources.devices must be a list")
    return [_resource_rule(entry, f"linux.resources.devices[{index}]")
            for index, entry in enumerate(entries)]


def _resource_rule(entry: Value, name: str) -> DeviceRule:
    """One OCI entry. As runc reads them: no ``type`` is "a", no (or null) ``major`` or
    ``minor`` is any, no (or empty) ``access`` is "rwm"; ``allow`` is required."""
    if not isinstance(entry, dict):
        raise SpecError(f"{name} must be an object")
    for key in entry:
        if key not in ("allow", "type", "major", "minor", "access"):
            raise SpecError(f"{name}.{key}: pyctr does not implement this field; remove it "
                            f"from the config")
    allow = entry.get("allow")
    if not isinstance(allow, bool):
        raise SpecError(f"{name}.allow must be true or false")
    kind = entry.get("type", "a")
    if kind is None:
        kind = "a"
    if kind not in ("a", "c", "b"):
        raise SpecError(f"{name}.type must be a, c or b, got {kind!r}")
    numbers = []
    for key in ("major", "minor"):
        value = entry.get(key)
        if value is None:
            value = -1
        elif not isinstance(value, int) or isinstance(value, bool) or not (
                0 <= value <= 0xFFFFFFFF):
            raise SpecError(f"{name}.{key} must be a whole number from 0 to 4294967295, or "
                            f"left out for any, got {value!r}")
        numbers.append(value)
    access = entry.get("access")
    if access is None or access == "":
        access = ACCESS
    if not isinstance(access, str) or not set(access) <= set(ACCESS):
        raise SpecError(f"{name}.access must be letters of rwm (read, write, mknod), got "
                        f"{access!r}")
    access = "".join(letter for letter in ACCESS if letter in access)
    if kind == "a" and (numbers != [-1, -1] or access != ACCESS):
        # v1 takes "a" as every device and every access, whatever follows it.
        raise SpecError(f"{name}: a rule for every device (type a, or no type) cannot "
                        f"name a major, a minor or an access other than rwm; give a type")
    return DeviceRule(kind, numbers[0], numbers[1], access, allow)


class Layout:
    """How this host's cgroups are mounted: ``kind`` "v1" (a devices hierarchy; ``root`` is
    its mount point), "v2" (``/sys/fs/cgroup`` is cgroup2; ``root`` is that) or "none"."""

    __slots__ = ("kind", "root")

    def __init__(self, kind: str, root: str = "") -> None:
        self.kind, self.root = kind, root

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return (self.kind, self.root) == (other.kind, other.root)

    def __repr__(self) -> str:
        return f"Layout({self.kind!r}, {self.root!r})"


def detect_layout(mountinfo: str) -> Layout:
    """The layout that the text of /proc/self/mountinfo describes. A devices hierarchy wins
    (hybrid hosts have both, and its controller is the one that enforces); the first such
    mount is used, as runc does. Of mounts stacked on /sys/fs/cgroup the last one shows."""
    for _, point, fstype, options in host_mounts(mountinfo):
        if fstype == "cgroup" and "devices" in options:
            return Layout("v1", point)
    top = ""
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 6 and fields[4] == _UNIFIED_MOUNT_POINT and "-" in fields[6:]:
            tail = fields.index("-", 6) + 1
            top = fields[tail] if tail < len(fields) else ""
    return Layout("v2", _UNIFIED_MOUNT_POINT) if top == "cgroup2" else Layout("none")


def host_layout() -> Layout:
    """``detect_layout`` of this process's mount table, now."""
    return detect_layout(read_proc_file("/proc/self/mountinfo"))


class CgroupFiles:
    """What ContainerCgroup does to the cgroup filesystem, in one place, so a test can stand
    a recording double in its stead (tests/test_devices_cgroup.py). Each raises OSError."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def write(self, path: str, text: str) -> None:
        # One write(2) per line: the kernel takes one rule or one pid per write.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def read(self, path: str) -> str:
        with open(path) as file:
            return file.read()

    def attach_devices(self, path: str, rules: list[DeviceRule]) -> None:
        """cgroup v2: attach the device program. Raises devices_bpf.DeviceProgramError."""
        from . import devices_bpf

        devices_bpf.apply(path, rules)

    def claim(self, name: str, *, create: bool = True) -> int | None:
        """Lock the claim on container ``name`` (see CLAIMS) and return its descriptor, or
        None when a live supervisor holds it (or, without ``create``, nobody made it)."""
        directory = os.path.join(CLAIMS, PARENT)
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            if create:
                os.makedirs(directory, 0o700, exist_ok=True)
                flags |= os.O_CREAT
            fd = os.open(os.path.join(directory, name), flags, 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def release(self, name: str, fd: int) -> None:
        """Give up the claim (the cgroup is gone): remove its file, then unlock."""
        try:
            os.unlink(os.path.join(CLAIMS, PARENT, name))
        except FileNotFoundError:
            pass
        os.close(fd)

    def claimed(self) -> list[str]:
        """The names that have a claim file, held or not."""
        try:
            return os.listdir(os.path.join(CLAIMS, PARENT))
        except FileNotFoundError:
            return []


def _check_name(name: str) -> None:
    if (not name or name in (".", "..") or "/" in name or "\0" in name or "\n" in name
            or len(os.fsencode(name)) > 255):
        raise PyctrError(f"container name {name!r} cannot be a cgroup directory name; use "
                         f"letters, digits, '_', '.' and '-'", error="config.invalid")


def _failed(what: str, path: str, exc: OSError, advice: str = "") -> PyctrError:
    reason = exc.strerror or os.strerror(exc.errno or 0)
    return PyctrError(f"cannot {what} {path}: {reason}{'; ' + advice if advice else ''}",
                      error="host.cgroup_failed")


class ContainerCgroup:
    """One container's cgroup. ``create`` makes it, ``add`` puts a process in it, ``remove``
    takes it away (idempotent). ``paths`` are the directories made, one per hierarchy (only
    devices on v1 for now; memory, cpu and pids join it there), none with layout "none"."""

    __slots__ = ("claim", "devices_enforced", "files", "layout", "name", "paths",
                 "unenforced_reason")

    def __init__(self, name: str, layout: Layout, paths: list[str], *,
                 files: CgroupFiles | None = None, devices_enforced: bool = True,
                 unenforced_reason: str = "", claim: int | None = None) -> None:
        self.name, self.layout, self.paths = name, layout, paths
        self.claim = claim
        """The locked claim's descriptor, held until ``remove``."""
        self.files = files or CgroupFiles()
        self.devices_enforced = devices_enforced
        self.unenforced_reason = unenforced_reason
        """Why the kernel does not hold the container to its devices, for the warning."""

    @classmethod
    def create(cls, name: str, rules: list[DeviceRule], *, layout: Layout | None = None,
               files: CgroupFiles | None = None) -> ContainerCgroup:
        """Make ``pyctr/name`` and give it ``rules``. ``layout`` defaults to this host's.
        Raises PyctrError, having removed what it made."""
        _check_name(name)
        layout = layout or host_layout()
        files = files or CgroupFiles()
        if layout.kind == "none":
            return cls(name, layout, [], files=files, devices_enforced=False,
                       unenforced_reason="no cgroup devices controller and no cgroup2 "
                                         "mounted on /sys/fs/cgroup")
        claim = files.claim(name)
        if claim is None:
            raise PyctrError(f"a container named {name} is running (its cgroup is "
                             f"{os.path.join(layout.root, PARENT, name)}); choose another "
                             f"--name", error="host.cgroup_exists")
        try:
            path = _make(files, layout.root, name)
        except BaseException:
            files.release(name, claim)
            raise
        cgroup = cls(name, layout, [path], files=files, claim=claim)
        try:
            if layout.kind == "v1":
                _write_rules(files, path, rules)
            else:
                from .devices_bpf import DeviceProgramError

                try:
                    files.attach_devices(path, rules)
                except DeviceProgramError as exc:
                    cgroup.devices_enforced, cgroup.unenforced_reason = False, str(exc)
        except BaseException:
            try:
                cgroup.remove()
            except PyctrError:
                pass  # the error that brought us here is the one to report
            raise
        return cgroup

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup; its children are born in
        it. Raises PyctrError."""
        for path in self.paths:
            procs = os.path.join(path, "cgroup.procs")
            try:
                self.files.write(procs, str(pid))
            except OSError as exc:
                raise _failed(f"move process {pid} into cgroup", path, exc) from None

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> None:
        """Remove the directories. The processes must be gone (exited; zombies do not count);
        those still leaving get ``timeout`` seconds. Removing twice, or a cgroup someone
        else removed, is fine. Raises PyctrError naming a directory still in use."""
        for path in self.paths:
            _remove(self.files, path, timeout)
        if self.claim is not None:
            claim, self.claim = self.claim, None
            self.files.release(self.name, claim)


def _make(files: CgroupFiles, root: str, name: str) -> str:
    parent = os.path.join(root, PARENT)
    try:
        files.mkdir(parent)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _failed("create cgroup", parent, exc, "is the cgroup filesystem writable, and "
                      "are you root?") from None
    path = os.path.join(parent, name)
    try:
        files.mkdir(path)
    except FileExistsError:
        # We hold the name's claim, so whoever made this one is gone: it is stale.
        try:
            files.rmdir(path)
            files.mkdir(path)
        except OSError as exc:
            raise PyctrError(f"cgroup {path} already exists and cannot be reused "
                             f"({exc.strerror}); choose another --name",
                             error="host.cgroup_exists") from None
    except OSError as exc:
        raise _failed("create cgroup", path, exc) from None
    return path


def _write_rules(files: CgroupFiles, path: str, rules: list[DeviceRule]) -> None:
    for rule in rules:
        target = os.path.join(path, "devices.allow" if rule.allow else "devices.deny")
        try:
            files.write(target, rule.line())
        except OSError as exc:
            advice = ("the parent cgroup does not allow it, and cgroup v1 gives no cgroup a "
                      "device its parent lacks" if exc.errno == errno_codes.EPERM else "")
            raise _failed(f"write {rule.line()!r} to", target, exc, advice) from None


def _remove(files: CgroupFiles, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            files.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno_codes.EBUSY or time.monotonic() >= deadline:
                advice = ""
                if exc.errno == errno_codes.EBUSY:
                    try:
                        procs = files.read(os.path.join(path, "cgroup.procs")).split()
                    except OSError:
                        procs = []
                    advice = f"processes still in it: {' '.join(procs) or 'none listed'}"
                raise _failed("remove cgroup", path, exc, advice) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def remove_stale(name: str, *, layout: Layout | None = None,
                 files: CgroupFiles | None = None) -> bool:
    """Remove ``pyctr/name`` left behind by a container that is gone (the directory must hold
    no process: a running container's cgroup is refused with EBUSY, at once). Returns
    whether there was one. Raises PyctrError."""
    _check_name(name)
    layout = layout or host_layout()
    files = files or CgroupFiles()
    if layout.kind == "none":
        return False
    path = os.path.join(layout.root, PARENT, name)
    try:
        files.rmdir(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _failed("remove cgroup", path, exc, "a container of that name is still "
                      "running" if exc.errno == errno_codes.EBUSY else "") from None
    return True


def sweep_stale(*, layout: Layout | None = None, files: CgroupFiles | None = None) -> list[str]:
    """Remove the cgroups of containers whose supervisor was killed (their claim is held by
    nobody, and the init died with its supervisor) and their claims; return their names.
    A cgroup that still holds a process is left alone. Never raises for a single one."""
    layout = layout or host_layout()
    files = files or CgroupFiles()
    removed = []
    for name in files.claimed():
        claim = files.claim(name, create=False)
        if claim is None:
            continue  # its supervisor is alive
        try:
            for path in ([os.path.join(layout.root, PARENT, name)]
                         if layout.kind != "none" else []):
                files.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            os.close(claim)  # processes in it: not ours to take
            continue
        files.release(name, claim)
        removed.append(name)
    return removed
