"""The container's own cgroup: its devices, its limits, what it used, and its end.

Every container gets a cgroup of its own, made before its init starts and removed after the
last of its processes is gone, whatever happened. ``ContainerCgroup`` makes it, writes the
device rules (``devices``) and the limits (``resources``), moves the init in (its children
are born there), kills whatever is left in it, reads what it used, and removes it.

Where: ``<hierarchy>/pyctr/<name>`` (``PYCTR_CGROUP_PARENT`` names another parent), or where
the spec's ``linux.cgroupsPath`` says (``cgroup_path``). On cgroup v1, and on hybrid hosts
whose controllers are on v1 hierarchies, one directory per hierarchy joined
(``resources.v1_controllers``); on cgroup v2 one directory in the unified tree, with the
controllers it needs enabled in every cgroup above it, and a BPF device program attached
(``devices_bpf``: v2 has no devices controller). When neither exists, or the program cannot
be loaded, ``devices_enforced`` is false and ``unenforced_reason`` says why: the caller warns
and mounts everything but ``/dev`` nodev.

Why below the hierarchy's root, not below the supervisor's own cgroup: on v2 a cgroup that
enables controllers for its children must hold no process itself, and the supervisor's
cgroup holds the supervisor; the root of the hierarchy and ``pyctr`` hold none. It is also one
known place where a leftover can be found by name (``sweep_stale``), whoever ran the
supervisor. ``pyctr`` is made when missing and kept, as docker keeps ``/docker``. A host that
runs systemd gets systemd's names: ``pyctr.slice/pyctr-<name>.scope``, and a
``linux.cgroupsPath`` of systemd's form ``SLICE:PREFIX:NAME`` is placed as systemd would place
that unit. pyctr makes these directories itself, as runc's cgroupfs driver does; it does not
ask systemd over D-Bus for a transient unit.

Errors are PyctrError with one line and these names: ``host.cgroup_failed`` (the kernel
refused to make, write or remove a cgroup, or lacks a controller a limit needs),
``host.cgroup_exists`` (a container of that name already has one), ``config.invalid`` (a name
or ``linux.cgroupsPath`` that cannot be a cgroup's directory).

Imported by the CLI before it forks the container's init: only ``os`` and modules the CLI has
loaded already; the BPF part is imported on v2 hosts only.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import time

from pyctr.linux import signal
from pyctr.linux.procfs import host_mounts, read_proc_file

from . import resources as limits
from .errors import PyctrError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

    from .devices import DeviceRule
    from .resources import Usage, Write

SYSTEMD_RUNNING = os.path.isdir("/run/systemd/system")
"""Whether systemd is this host's init (how sd_booted(3) tells)."""
PARENT = os.environ.get("PYCTR_CGROUP_PARENT") or ("pyctr.slice" if SYSTEMD_RUNNING
                                                   else "pyctr")
"""The cgroup every container's own is made in (the tests use one of their own)."""
CLAIMS = "/run/pyctr/cgroups"
"""Where a supervisor holds an flock on a file named after its container, for as long as it
lives: a cgroup whose claim nobody holds was left by a supervisor that was killed. The file
holds the cgroup's path below the hierarchies' roots."""
_UNIFIED_MOUNT_POINT = "/sys/fs/cgroup"
KNOWN_CONTROLLERS = ("devices", "memory", "cpu", "cpuacct", "cpuset", "pids", "freezer")
# How long remove() waits for the last tasks to leave (EBUSY) before it gives up.
REMOVE_TIMEOUT = 2.0
# How long kill_all() waits for v1's freezer to freeze everything.
FREEZE_TIMEOUT = 1.0


class Layout:
    """How this host's cgroups are mounted: ``kind`` "v1" (``root`` is the devices
    hierarchy's mount point, ``hierarchies`` maps each v1 controller to its hierarchy's),
    "v2" (``root`` is the cgroup2 mount point, which holds every controller) or "none"."""

    __slots__ = ("hierarchies", "kind", "root")

    def __init__(self, kind: str, root: str = "",
                 hierarchies: dict[str, str] | None = None) -> None:
        self.kind, self.root = kind, root
        if hierarchies is None:
            hierarchies = {"devices": root} if kind == "v1" else {}
        self.hierarchies = hierarchies

    def mount_point(self, controller: str) -> str | None:
        """Where ``controller``'s files are: its v1 hierarchy, or the v2 root."""
        if self.kind == "v2":
            return self.root
        return self.hierarchies.get(controller)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return (self.kind, self.root, self.hierarchies) == (
            other.kind, other.root, other.hierarchies)

    def __repr__(self) -> str:
        extra = "" if self.hierarchies == Layout(self.kind, self.root).hierarchies else \
            f", {self.hierarchies!r}"
        return f"Layout({self.kind!r}, {self.root!r}{extra})"


def detect_layout(mountinfo: str) -> Layout:
    """The layout that the text of /proc/self/mountinfo describes. A devices hierarchy makes
    it v1 (hybrid hosts have both, and there the controllers are on v1); each controller's
    first mount is used, as runc does. Of mounts stacked on /sys/fs/cgroup the last one
    shows."""
    hierarchies: dict[str, str] = {}
    for _, point, fstype, options in host_mounts(mountinfo):
        if fstype == "cgroup":
            for controller in KNOWN_CONTROLLERS:
                if controller in options:
                    hierarchies.setdefault(controller, point)
    if "devices" in hierarchies:
        return Layout("v1", hierarchies["devices"], hierarchies)
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


def cgroup_path(name: str, cgroups_path: str | None = None) -> str:
    """The container's cgroup below each hierarchy's root, without the leading slash.

    ``cgroups_path`` is the spec's ``linux.cgroupsPath``: an absolute path is taken from the
    hierarchy's root, a relative one from pyctr's parent, and systemd's ``SLICE:PREFIX:NAME``
    names a scope in a slice (``machine-web.slice:pyctr:abc`` is
    ``machine.slice/machine-web.slice/pyctr-abc.scope``; an empty slice is ``system.slice``).
    Without it: ``PARENT/name`` (``PARENT/pyctr-name.scope`` when PARENT is a slice). Raises
    PyctrError (``config.invalid``)."""
    if cgroups_path is None:
        _check_name(name)
        leaf = f"pyctr-{name}.scope" if PARENT.endswith(".slice") else name
        return f"{PARENT}/{leaf}"
    text = cgroups_path
    if text.count(":") == 2 and not text.startswith("/"):
        slice_name, prefix, unit = text.split(":")
        if not unit or "/" in prefix + unit:
            raise _bad_path(cgroups_path, "systemd's form SLICE:PREFIX:NAME needs a NAME, "
                                          "and neither PREFIX nor NAME may hold a '/'")
        if not unit.endswith((".scope", ".slice")):
            unit = f"{prefix}-{unit}.scope" if prefix else f"{unit}.scope"
        text = f"{_expand_slice(slice_name or 'system.slice', cgroups_path)}/{unit}".lstrip("/")
    elif text.startswith("/"):
        text = text.strip("/")
    else:
        text = f"{PARENT}/{text.strip('/')}"
    parts = text.split("/")
    if not text or any(part in ("", ".", "..") or "\n" in part or "\0" in part
                       or len(os.fsencode(part)) > 255 for part in parts):
        raise _bad_path(cgroups_path, "use a path such as /pyctr/NAME (no '.', '..' or "
                                      "empty parts, not the root itself)")
    return text


def _expand_slice(name: str, given: str) -> str:
    """systemd's nesting of slices by their dashes: ``a-b.slice`` lives in ``a.slice``."""
    if not name.endswith(".slice") or "/" in name:
        raise _bad_path(given, f"the slice {name!r} must be a unit name ending in .slice")
    if name == "-.slice":
        return ""
    stem = name[:-len(".slice")]
    words = stem.split("-")
    if not all(words):
        raise _bad_path(given, f"the slice {name!r} has an empty part between dashes")
    return "/".join("-".join(words[:index + 1]) + ".slice" for index in range(len(words)))


def _bad_path(given: str, advice: str) -> PyctrError:
    return PyctrError(f"linux.cgroupsPath {given!r} cannot be a container's cgroup: {advice}",
                      error="config.invalid")


class CgroupFiles:
    """What ContainerCgroup does to the cgroup filesystem, in one place, so a test can stand
    a recording double in its stead (tests/test_devices_cgroup.py, tests/test_limits.py).
    Each raises OSError."""

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
        return read_proc_file(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def attach_devices(self, path: str, rules: list[DeviceRule]) -> None:
        """cgroup v2: attach the device program. Raises devices_bpf.DeviceProgramError."""
        from . import devices_bpf

        devices_bpf.apply(path, rules)

    def claim(self, name: str, *, create: bool = True, path: str = "") -> int | None:
        """Lock the claim on container ``name`` (see CLAIMS) and return its descriptor, or
        None when a live supervisor holds it (or, without ``create``, nobody made it). A new
        claim records ``path``, the cgroup's, for ``claimed_path``."""
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
        if create:
            os.ftruncate(fd, 0)
            os.pwrite(fd, os.fsencode(path), 0)
        return fd

    def claimed_path(self, fd: int) -> str:
        """The cgroup path a claim recorded ("" for none)."""
        return os.fsdecode(os.pread(fd, 4096, 0))

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
    """One container's cgroup. ``create`` makes it, ``add`` puts a process in it,
    ``kill_all`` kills what is in it, ``usage`` reads what it used, ``remove`` takes it away
    (idempotent). ``paths`` are the directories made, one per hierarchy joined (one on v2,
    none with layout "none"); ``directories`` maps each controller to its directory."""

    __slots__ = ("claim", "devices_enforced", "directories", "files", "layout", "name",
                 "path", "paths", "skipped", "unenforced_reason")

    def __init__(self, name: str, layout: Layout, paths: list[str], *,
                 files: CgroupFiles | None = None, devices_enforced: bool = True,
                 unenforced_reason: str = "", claim: int | None = None,
                 directories: dict[str, str] | None = None, path: str = "") -> None:
        self.name, self.layout, self.paths = name, layout, paths
        self.path = path
        """The cgroup below each hierarchy's root (``cgroup_path``)."""
        self.directories = dict(directories or {})
        self.claim = claim
        """The locked claim's descriptor, held until ``remove``."""
        self.files = files or CgroupFiles()
        self.devices_enforced = devices_enforced
        self.unenforced_reason = unenforced_reason
        """Why the kernel does not hold the container to its devices, for the warning."""
        self.skipped: list[str] = []
        """Limits this kernel cannot apply and were left out (swap without swap accounting),
        as ``file=value``, for a warning."""

    @classmethod
    def create(cls, name: str, rules: list[DeviceRule], *, resources: Value = None,
               cgroups_path: str | None = None, layout: Layout | None = None,
               files: CgroupFiles | None = None) -> ContainerCgroup:
        """Make the cgroup for container ``name`` (see ``cgroup_path``), give it the device
        ``rules`` and the limits of ``resources`` (the spec's ``linux.resources``, checked).
        ``layout`` defaults to this host's. Raises PyctrError, having removed what it made."""
        _check_name(name)  # the claim's file name, whatever the cgroup's path
        relative = cgroup_path(name, cgroups_path)
        layout = layout or host_layout()
        files = files or CgroupFiles()
        if layout.kind == "none":
            required = limits.required_controllers(resources)
            if required:
                raise PyctrError(f"cannot apply the container's {', '.join(required)} limits: "
                                 f"this host has no cgroup hierarchy mounted",
                                 error="host.cgroup_failed")
            return cls(name, layout, [], files=files, devices_enforced=False,
                       unenforced_reason="no cgroup devices controller and no cgroup2 "
                                         "mounted on /sys/fs/cgroup")
        claim = files.claim(name, path=relative)
        if claim is None:
            raise PyctrError(f"a container named {name} is running (its cgroup is "
                             f"{os.path.join(layout.root, relative)}); choose another --name",
                             error="host.cgroup_exists")
        cgroup = cls(name, layout, [], files=files, claim=claim, path=relative)
        try:
            if layout.kind == "v1":
                cgroup._make_v1(resources)
                cgroup._write_rules(rules)
            else:
                cgroup._make_v2(resources)
                from .devices_bpf import DeviceProgramError

                try:
                    files.attach_devices(cgroup.paths[0], rules)
                except DeviceProgramError as exc:
                    cgroup.devices_enforced, cgroup.unenforced_reason = False, str(exc)
            cgroup._write_limits(resources)
        except BaseException:
            try:
                cgroup.remove()
            except PyctrError:
                pass  # the error that brought us here is the one to report
            raise
        return cgroup

    def _make_v1(self, resources: Value) -> None:
        required = limits.required_controllers(resources)
        for controller in limits.v1_controllers(resources):
            point = self.layout.hierarchies.get(controller)
            if point is None:
                if controller in required:
                    raise PyctrError(f"cannot apply the container's {controller} limits: this "
                                     f"host has no {controller} cgroup hierarchy mounted",
                                     error="host.cgroup_failed")
                continue  # what it would have measured is reported as unknown
            directory = os.path.join(point, self.path)
            if directory not in self.paths:  # co-mounted controllers share one directory
                self._make_directory(point, cpuset=point == self.layout.hierarchies.get(
                    "cpuset"))
            self.directories[controller] = directory

    def _make_v2(self, resources: Value) -> None:
        root = self.layout.root
        wanted, required = limits.v2_controllers(resources)
        try:
            available = self.files.read(os.path.join(root, "cgroup.controllers")).split()
        except OSError:
            available = []  # a tree without controllers: only a limit needs one
        missing = [controller for controller in required if controller not in available]
        if missing:
            raise PyctrError(f"cannot apply the container's {', '.join(missing)} limits: the "
                             f"cgroup v2 tree at {root} has no {', '.join(missing)} controller "
                             f"(it has: {' '.join(available) or 'none'})",
                             error="host.cgroup_failed")
        enabled = " ".join(f"+{controller}" for controller in wanted
                           if controller in available)
        self._make_directory(root, enable=enabled)
        directory = os.path.join(root, self.path)
        self.directories = {controller: directory for controller in
                            ("devices", "cpu", "cpuacct", "cpuset", "memory", "pids",
                             "freezer")}

    def _make_directory(self, point: str, *, cpuset: bool = False, enable: str = "") -> None:
        """Make ``point/self.path`` and whatever is missing above it (kept afterwards, as
        ``PARENT`` is), and add it to ``paths`` as soon as it exists, so that a failure
        after that removes it. ``enable``: v2 controllers each cgroup above it enables for
        its children. ``cpuset``: a new v1 cpuset cgroup has no CPUs and no memory nodes,
        and takes no process until given its parent's."""
        parts = self.path.split("/")
        parent = point
        for depth in range(len(parts)):
            if enable:
                control = os.path.join(parent, "cgroup.subtree_control")
                try:
                    self.files.write(control, enable)
                except OSError as exc:
                    raise _failed(f"enable {enable} in", control, exc,
                                  "a cgroup v2 cgroup that holds processes cannot enable "
                                  "controllers for its children; choose a cgroupsPath in a "
                                  "cgroup that holds none" if exc.errno == errno_codes.EBUSY
                                  else "") from None
            directory = os.path.join(parent, parts[depth])
            leaf = depth == len(parts) - 1
            try:
                self.files.mkdir(directory)
            except FileExistsError:
                if leaf:
                    self._reuse_stale(directory)
            except OSError as exc:
                raise _failed("create cgroup", directory, exc, "is the cgroup filesystem "
                              "writable, and are you root?") from None
            if leaf:
                self.paths.append(directory)
            if cpuset:
                for name in ("cpuset.cpus", "cpuset.mems"):
                    self._inherit(parent, directory, name)
            parent = directory

    def _reuse_stale(self, directory: str) -> None:
        # We hold the name's claim, so whoever made this one is gone: it is stale, unless
        # processes are in it (a cgroupsPath naming someone else's cgroup).
        try:
            self.files.rmdir(directory)
            self.files.mkdir(directory)
        except OSError as exc:
            raise PyctrError(f"cgroup {directory} already exists and cannot be reused "
                             f"({exc.strerror}); choose another --name or cgroupsPath",
                             error="host.cgroup_exists") from None

    def _inherit(self, parent: str, directory: str, name: str) -> None:
        try:
            if self.files.read(os.path.join(directory, name)).strip():
                return
            value = self.files.read(os.path.join(parent, name)).strip()
            self.files.write(os.path.join(directory, name), value)
        except OSError as exc:
            raise _failed(f"give {name} to", directory, exc) from None

    def _write_rules(self, rules: list[DeviceRule]) -> None:
        """v1: the device rules, one write each, to the devices hierarchy."""
        path = self.directories["devices"]
        for rule in rules:
            target = os.path.join(path, "devices.allow" if rule.allow else "devices.deny")
            try:
                self.files.write(target, rule.line())
            except OSError as exc:
                advice = ("the parent cgroup does not allow it, and cgroup v1 gives no cgroup "
                          "a device its parent lacks" if exc.errno == errno_codes.EPERM else "")
                raise _failed(f"write {rule.line()!r} to", target, exc, advice) from None

    def _write_limits(self, resources: Value) -> None:
        writes: list[Write] = (limits.v1_writes(resources) if self.layout.kind == "v1"
                               else limits.v2_writes(resources))
        for write in writes:
            directory = self.directories.get(write.controller)
            if directory is None:  # a v1 hierarchy this host lacks, for a setting no limit needs
                self.skipped.append(f"{write.file}={write.value}")
                continue
            target = os.path.join(directory, write.file)
            if write.optional and not self.files.exists(target):
                self.skipped.append(f"{write.file}={write.value}")
                continue
            try:
                self.files.write(target, write.value)
            except OSError as exc:
                raise _failed(f"write {write.value!r} to", target, exc) from None

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup; its children are born in
        it. Raises PyctrError."""
        for path in self.paths:
            procs = os.path.join(path, "cgroup.procs")
            try:
                self.files.write(procs, str(pid))
            except OSError as exc:
                raise _failed(f"move process {pid} into cgroup", path, exc) from None

    def processes(self) -> list[int]:
        """The pids in the cgroup now (none when it is gone or there is none)."""
        if not self.paths:
            return []
        try:
            text = self.files.read(os.path.join(self.paths[0], "cgroup.procs"))
        except OSError:
            return []
        return [int(word) for word in text.split() if word.isdigit()]

    def kill_all(self) -> int:
        """SIGKILL every process in the cgroup, and return how many there were: v2's
        ``cgroup.kill`` where the kernel has it, else freeze the cgroup (so that nothing in
        it forks meanwhile), kill each process, thaw. The container's PID namespace ends with
        its init; this catches what is in the cgroup but not in that namespace."""
        found = self.processes()
        if not found:
            return 0
        kill_file = os.path.join(self.paths[0], "cgroup.kill")
        if self.layout.kind == "v2" and self.files.exists(kill_file):
            try:
                self.files.write(kill_file, "1")
                return len(found)
            except OSError:
                pass  # fall back to one by one
        frozen = self._freeze(True)
        try:
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self._freeze(False)
        return len(found)

    def freeze(self) -> bool:
        """Stop every process in the cgroup (``pause``); whether it could."""
        return self._freeze(True)

    def thaw(self) -> bool:
        """Let them run again (``resume``); whether it could."""
        if self.layout.kind != "v2" and "freezer" not in self.directories:
            return False
        self._freeze(False)
        return True

    def disown(self) -> None:
        """Let go of the claim without removing the cgroup: it outlives this process (the
        OCI runtime's ``create``), and what removes it is ``delete``, which knows it from the
        container's state, not a sweep."""
        if self.claim is not None:
            claim, self.claim = self.claim, None
            self.files.release(self.name, claim)

    def _freeze(self, frozen: bool) -> bool:
        """Freeze (or thaw) the cgroup; whether it is frozen now."""
        if self.layout.kind == "v2":
            path, value, state = (os.path.join(self.paths[0], "cgroup.freeze"),
                                  "1" if frozen else "0", "")
        elif "freezer" in self.directories:
            path, value, state = (os.path.join(self.directories["freezer"], "freezer.state"),
                                  "FROZEN" if frozen else "THAWED", "FROZEN")
        else:
            return False
        try:
            self.files.write(path, value)
        except OSError:
            return False
        if frozen and state:  # v1 freezes in the background: wait until it says so
            deadline = time.monotonic() + FREEZE_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    if self.files.read(path).strip() == state:
                        break
                except OSError:
                    break
                time.sleep(0.001)
        return frozen

    def usage(self) -> Usage:
        """What the container used, read now (call it once its processes are gone)."""
        def read(controller: str, file: str) -> str | None:
            directory = self.directories.get(controller)
            if directory is None:
                return None
            try:
                return self.files.read(os.path.join(directory, file))
            except OSError:
                return None

        if self.layout.kind == "v2":
            return limits.v2_usage(read)
        return limits.v1_usage(read)

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> None:
        """Remove the directories. The processes must be gone (exited; zombies do not count);
        those still leaving get ``timeout`` seconds. Removing twice, or a cgroup someone
        else removed, is fine. Raises PyctrError naming a directory still in use."""
        for path in self.paths:
            _remove(self.files, path, timeout)
        if self.claim is not None:
            claim, self.claim = self.claim, None
            self.files.release(self.name, claim)


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


def _hierarchy_points(layout: Layout) -> list[str]:
    if layout.kind == "v2":
        return [layout.root]
    return list(dict.fromkeys(layout.hierarchies.values()))


def remove_stale(name: str, *, layout: Layout | None = None,
                 files: CgroupFiles | None = None) -> bool:
    """Remove ``PARENT/name`` left behind by a container that is gone, in every hierarchy
    (the directories must hold no process: a running container's cgroup is refused with
    EBUSY, at once). Returns whether there was one. Raises PyctrError."""
    relative = cgroup_path(name)
    layout = layout or host_layout()
    files = files or CgroupFiles()
    found = False
    for point in _hierarchy_points(layout):
        path = os.path.join(point, relative)
        try:
            files.rmdir(path)
            found = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _failed("remove cgroup", path, exc, "a container of that name is still "
                          "running" if exc.errno == errno_codes.EBUSY else "") from None
    return found


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
            relative = files.claimed_path(claim) or cgroup_path(name)
            for point in _hierarchy_points(layout) if layout.kind != "none" else []:
                try:
                    files.rmdir(os.path.join(point, relative))
                except FileNotFoundError:
                    pass
        except (OSError, PyctrError):
            os.close(claim)  # processes in it (or a claim we cannot read): not ours to take
            continue
        files.release(name, claim)
        removed.append(name)
    return removed
