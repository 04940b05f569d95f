"""The OCI runtime spec (config.json, version 1.x) as pyctr's one description of a container.

``Spec.from_value`` reads a decoded document (from ``json``, or from the protocol's codec,
which carries the same shapes) into typed objects and refuses what pyctr cannot honour: a
wrong type, a bad value, or a field pyctr does not implement, each with one line naming the
field (``process.user.uid must be a whole number``). Nothing is silently ignored, except the
fields that later work applies (``PENDING_FIELDS``): those are kept and reported, so the
supervisor can warn that they are not applied yet. ``Spec.to_value`` writes the document back.

Plain classes, not dataclasses: the CLI builds a spec before it forks the init, and every
module imported before that fork delays the workload's start.
"""

from __future__ import annotations

from pyctr.linux.syscalls import RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared",
                "unbindable", "runbindable")
DEVICE_TYPES = ("c", "u", "b", "p")
PENDING_FIELDS = ("process.capabilities", "process.noNewPrivileges", "linux.maskedPaths",
                  "linux.readonlyPaths", "linux.seccomp", "linux.resources",
                  "linux.cgroupsPath")
"""Accepted before the work that applies them lands; each gets a warning when present."""
# The runtime spec's default devices, which every container gets whatever linux.devices says:
# (name in /dev, major, minor) of the character devices; /dev/ptmx is a link into the
# container's own devpts, and /dev/console is the terminal's, when there is one.
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
_UINT64_MAX = (1 << 64) - 1
_ID_MAX = (1 << 32) - 2  # (uid_t)-1 means "unchanged" to the kernel


# Kernel settings a container may change (they belong to one of its namespaces), as runc
# allows them: by prefix, with the namespace they need.
SYSCTL_NAMESPACES = (
    ("kernel.msgmax", "ipc"), ("kernel.msgmnb", "ipc"), ("kernel.msgmni", "ipc"),
    ("kernel.sem", "ipc"), ("kernel.shmall", "ipc"), ("kernel.shmmax", "ipc"),
    ("kernel.shmmni", "ipc"), ("kernel.shm_rmid_forced", "ipc"), ("fs.mqueue.", "ipc"),
    ("net.", "network"), ("kernel.hostname", "uts"), ("kernel.domainname", "uts"),
)


class SpecError(Exception):
    """The document is not a container pyctr can run; ``str()`` is the one line to show."""


class _Fields:
    """The members of one JSON object, taken one by one with their types checked; whatever
    is left when ``done`` is called is a field pyctr does not implement."""

    def __init__(self, value: Value, where: str) -> None:
        if not isinstance(value, dict):
            raise SpecError(f"{where or 'the document'} must be an object")
        self.left = dict(value)
        self.where = where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def take(self, key: str) -> Value:
        return self.left.pop(key, None)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise SpecError(f"{self.name(key)} must be a string")
        return value

    def whole(self, key: str, low: int = 0, high: int = _UINT64_MAX) -> int | None:
        return whole(self.take(key), self.name(key), low, high)

    def flag(self, key: str, default: bool | None = None) -> bool | None:
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(f"{self.name(key)} must be true or false")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.take(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise SpecError(f"{self.name(key)} must be a list of strings")
        return [str(item) for item in value]

    def objects(self, key: str) -> list[_Fields]:
        value = self.take(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise SpecError(f"{self.name(key)} must be a list")
        return [_Fields(item, f"{self.name(key)}[{index}]") for index, item in enumerate(value)]

    def object(self, key: str) -> _Fields | None:
        value = self.take(key)
        return None if value is None else _Fields(value, self.name(key))

    def done(self) -> None:
        for key in sorted(self.left):
            if self.left[key] is not None:
                raise SpecError(f"{self.name(key)}: pyctr does not implement this field; "
                                f"remove it from the config")


def whole(value: Value, name: str, low: int = 0, high: int = _UINT64_MAX) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{name} must be a whole number")
    if not low <= value <= high:
        raise SpecError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _absolute(path: str, name: str) -> str:
    if not path.startswith("/"):
        raise SpecError(f"{name} must be an absolute path, got {path!r}")
    if "\0" in path:
        raise SpecError(f"{name} contains a NUL byte")
    return path


class User:
    __slots__ = ("additional_gids", "gid", "uid", "umask")

    def __init__(self, uid: int = 0, gid: int = 0, umask: int | None = None,
                 additional_gids: list[int] | None = None) -> None:
        self.uid, self.gid, self.umask = uid, gid, umask
        self.additional_gids = list(additional_gids or [])

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {"uid": self.uid, "gid": self.gid}
        if self.umask is not None:
            value["umask"] = self.umask
        if self.additional_gids:
            value["additionalGids"] = list(self.additional_gids)
        return value


class Rlimit:
    __slots__ = ("hard", "soft", "type")

    def __init__(self, type: str, soft: int, hard: int) -> None:
        self.type, self.soft, self.hard = type, soft, hard

    def to_value(self) -> dict[str, Value]:
        return {"type": self.type, "soft": self.soft, "hard": self.hard}


class Process:
    __slots__ = ("args", "capabilities", "console_size", "cwd", "env", "no_new_privileges",
                 "oom_score_adj", "rlimits", "terminal", "user")

    def __init__(self, args: list[str], env: list[str], cwd: str = "/", *,
                 terminal: bool = False, console_size: tuple[int, int] | None = None,
                 user: User | None = None, rlimits: list[Rlimit] | None = None,
                 oom_score_adj: int | None = None, capabilities: Value = None,
                 no_new_privileges: bool | None = None) -> None:
        self.args, self.env, self.cwd = args, env, cwd
        self.terminal = terminal
        self.console_size = console_size
        """(height, width) of the terminal, when known."""
        self.user = user or User()
        self.rlimits = list(rlimits or [])
        self.oom_score_adj = oom_score_adj
        self.capabilities = capabilities
        self.no_new_privileges = no_new_privileges

    def environment(self) -> dict[str, str]:
        """``env`` as a mapping; a later entry for the same name wins, as with execve."""
        pairs = (item.partition("=") for item in self.env)
        return {name: value for name, _, value in pairs}

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {"terminal": self.terminal}
        if self.console_size is not None:
            value["consoleSize"] = {"height": self.console_size[0],
                                    "width": self.console_size[1]}
        value.update({"user": self.user.to_value(), "args": list(self.args),
                      "env": list(self.env), "cwd": self.cwd})
        if self.capabilities is not None:
            value["capabilities"] = self.capabilities
        if self.rlimits:
            value["rlimits"] = [rlimit.to_value() for rlimit in self.rlimits]
        if self.no_new_privileges is not None:
            value["noNewPrivileges"] = self.no_new_privileges
        if self.oom_score_adj is not None:
            value["oomScoreAdj"] = self.oom_score_adj
        return value


class Mount:
    __slots__ = ("destination", "options", "source", "type")

    def __init__(self, destination: str, type: str | None, source: str | None = None,
                 options: list[str] | None = None) -> None:
        self.destination, self.type, self.source = destination, type, source
        self.options = list(options or [])

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {"destination": self.destination}
        if self.type is not None:
            value["type"] = self.type
        if self.source is not None:
            value["source"] = self.source
        if self.options:
            value["options"] = list(self.options)
        return value

    def __repr__(self) -> str:
        return f"Mount({self.destination!r}, {self.type!r}, {self.source!r}, {self.options!r})"


class Namespace:
    __slots__ = ("path", "type")

    def __init__(self, type: str, path: str | None = None) -> None:
        self.type, self.path = type, path

    def to_value(self) -> dict[str, Value]:
        return {"type": self.type} if self.path is None else {"type": self.type,
                                                              "path": self.path}


class Device:
    __slots__ = ("file_mode", "gid", "major", "minor", "path", "type", "uid")

    def __init__(self, path: str, type: str, major: int, minor: int, *,
                 file_mode: int | None = None, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.path, self.type, self.major, self.minor = path, type, major, minor
        self.file_mode, self.uid, self.gid = file_mode, uid, gid

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {"path": self.path, "type": self.type, "major": self.major,
                                   "minor": self.minor}
        for key, item in (("fileMode", self.file_mode), ("uid", self.uid), ("gid", self.gid)):
            if item is not None:
                value[key] = item
        return value


class Linux:
    __slots__ = ("cgroups_path", "devices", "masked_paths", "namespaces", "readonly_paths",
                 "resources", "rootfs_propagation", "seccomp", "sysctl")

    def __init__(self, namespaces: list[Namespace], *, devices: list[Device] | None = None,
                 sysctl: dict[str, str] | None = None, rootfs_propagation: str = "",
                 masked_paths: list[str] | None = None,
                 readonly_paths: list[str] | None = None, seccomp: Value = None,
                 resources: Value = None, cgroups_path: str | None = None) -> None:
        self.namespaces = namespaces
        self.devices = list(devices or [])
        self.sysctl = dict(sysctl or {})
        self.rootfs_propagation = rootfs_propagation
        self.masked_paths = list(masked_paths or [])
        self.readonly_paths = list(readonly_paths or [])
        self.seccomp = seccomp
        self.resources = resources
        self.cgroups_path = cgroups_path

    def namespace(self, type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == type), None)

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {}
        if self.resources is not None:
            value["resources"] = self.resources
        if self.cgroups_path is not None:
            value["cgroupsPath"] = self.cgroups_path
        value["namespaces"] = [ns.to_value() for ns in self.namespaces]
        if self.devices:
            value["devices"] = [device.to_value() for device in self.devices]
        if self.sysctl:
            value["sysctl"] = dict(self.sysctl)
        if self.rootfs_propagation:
            value["rootfsPropagation"] = self.rootfs_propagation
        if self.masked_paths:
            value["maskedPaths"] = list(self.masked_paths)
        if self.readonly_paths:
            value["readonlyPaths"] = list(self.readonly_paths)
        if self.seccomp is not None:
            value["seccomp"] = self.seccomp
        return value


class Spec:
    """One container. ``root_path`` is as written (relative to the bundle, or absolute)."""

    __slots__ = ("annotations", "domainname", "hostname", "linux", "mounts", "oci_version",
                 "process", "root_path", "root_readonly")

    def __init__(self, process: Process, root_path: str, *, root_readonly: bool = False,
                 hostname: str | None = None, domainname: str | None = None,
                 mounts: list[Mount] | None = None, linux: Linux | None = None,
                 annotations: dict[str, str] | None = None,
                 oci_version: str = "1.0.2") -> None:
        self.oci_version = oci_version
        self.process = process
        self.root_path, self.root_readonly = root_path, root_readonly
        self.hostname, self.domainname = hostname, domainname
        self.mounts = list(mounts or [])
        self.linux = linux or Linux([])
        self.annotations = dict(annotations or {})

    def check(self) -> None:
        """Check the rules between fields (``from_value`` does). Raises SpecError."""
        _check(self)

    def pending_fields(self) -> list[str]:
        """The fields present that pyctr accepts but does not apply yet (PENDING_FIELDS)."""
        present = {
            "process.capabilities": self.process.capabilities is not None,
            "process.noNewPrivileges": bool(self.process.no_new_privileges),
            "linux.maskedPaths": bool(self.linux.masked_paths),
            "linux.readonlyPaths": bool(self.linux.readonly_paths),
            "linux.seccomp": self.linux.seccomp is not None,
            "linux.resources": self.linux.resources is not None,
            "linux.cgroupsPath": self.linux.cgroups_path is not None,
        }
        return [name for name in PENDING_FIELDS if present[name]]

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {"ociVersion": self.oci_version,
                                   "process": self.process.to_value(),
                                   "root": {"path": self.root_path,
                                            "readonly": self.root_readonly}}
        if self.hostname is not None:
            value["hostname"] = self.hostname
        if self.domainname is not None:
            value["domainname"] = self.domainname
        value["mounts"] = [mount.to_value() for mount in self.mounts]
        value["linux"] = self.linux.to_value()
        if self.annotations:
            value["annotations"] = dict(self.annotations)
        return value

    @classmethod
    def from_value(cls, value: Value) -> Spec:
        """Read and check a decoded config.json. Raises SpecError naming the field."""
        top = _Fields(value, "")
        version = top.text("ociVersion")
        if version is None:
            raise SpecError("ociVersion is missing; pyctr runs version 1.x of the runtime spec")
        if not version.startswith("1."):
            raise SpecError(f"ociVersion {version!r} is not 1.x, the runtime spec pyctr runs")
        fields = top.object("process")
        if fields is None:
            raise SpecError("process is missing: say what to run")
        process = _process(fields)
        root = top.object("root")
        if root is None:
            raise SpecError("root is missing: give root.path, the container's filesystem")
        root_path = root.text("path")
        if not root_path:
            raise SpecError("root.path is missing")
        readonly = bool(root.flag("readonly", False))
        root.done()
        hostname, domainname = top.text("hostname"), top.text("domainname")
        mounts = [_mount(item) for item in top.objects("mounts")]
        linux_fields = top.object("linux")
        if linux_fields is None:
            raise SpecError("linux is missing: pyctr runs Linux containers")
        linux = _linux(linux_fields)
        annotations = top.take("annotations")
        if annotations is not None and not (isinstance(annotations, dict) and all(
                isinstance(item, str) for item in annotations.values())):
            raise SpecError("annotations must map strings to strings")
        top.done()
        spec = cls(process, root_path, root_readonly=readonly, hostname=hostname,
                   domainname=domainname, mounts=mounts, linux=linux,
                   annotations=annotations,  # type: ignore[arg-type] # checked above
                   oci_version=version)
        spec.check()
        return spec


def _process(fields: _Fields) -> Process:
    args = fields.texts("args")
    if not args or not args[0]:
        raise SpecError("process.args must name the command to run")
    env = fields.texts("env")
    for entry in env:
        if "=" not in entry or entry.startswith("="):
            raise SpecError(f"process.env entries must be NAME=VALUE, got {entry!r}")
    cwd = _absolute(fields.text("cwd") or "", "process.cwd")
    size = None
    console = fields.object("consoleSize")
    if console is not None:
        height, width = console.whole("height", 0, 65535), console.whole("width", 0, 65535)
        console.done()
        size = (height or 0, width or 0)
    user = User()
    user_fields = fields.object("user")
    if user_fields is not None:
        user = User(uid=user_fields.whole("uid", 0, _ID_MAX) or 0,
                    gid=user_fields.whole("gid", 0, _ID_MAX) or 0,
                    umask=user_fields.whole("umask", 0, 0o777),
                    additional_gids=_ids(user_fields.take("additionalGids"),
                                         "process.user.additionalGids"))
        user_fields.done()
    rlimits = []
    seen: set[str] = set()
    for item in fields.objects("rlimits"):
        kind = item.text("type") or ""
        if kind not in RLIMITS:
            raise SpecError(f"{item.name('type')}: unknown rlimit {kind!r}; one of "
                            f"{', '.join(sorted(RLIMITS))}")
        if kind in seen:
            raise SpecError(f"{item.name('type')}: {kind} is given twice")
        seen.add(kind)
        soft, hard = item.whole("soft"), item.whole("hard")
        if soft is None or hard is None:
            raise SpecError(f"{item.where} needs both soft and hard")
        if soft > hard:
            raise SpecError(f"{item.where}: soft limit {soft} is above hard limit {hard}")
        item.done()
        rlimits.append(Rlimit(kind, soft, hard))
    process = Process(args, env, cwd, terminal=bool(fields.flag("terminal", False)),
                      console_size=size, user=user, rlimits=rlimits,
                      oom_score_adj=fields.whole("oomScoreAdj", -1000, 1000),
                      capabilities=fields.take("capabilities"),
                      no_new_privileges=fields.flag("noNewPrivileges"))
    fields.done()
    return process


def _ids(value: Value, name: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{name} must be a list of whole numbers")
    return [whole(item, f"{name}[{index}]", 0, _ID_MAX) or 0
            for index, item in enumerate(value)]


def _mount(fields: _Fields) -> Mount:
    destination = _absolute(fields.text("destination") or "", f"{fields.where}.destination")
    mount = Mount(destination, fields.text("type"), fields.text("source"),
                  fields.texts("options"))
    fields.done()
    if mount.is_bind and not mount.source:
        raise SpecError(f"{fields.where}: a bind mount needs a source")
    if mount.type is None and not mount.is_bind:
        raise SpecError(f"{fields.where}: type is missing")
    return mount


def _linux(fields: _Fields) -> Linux:
    namespaces: list[Namespace] = []
    for item in fields.objects("namespaces"):
        kind = item.text("type") or ""
        if kind not in NAMESPACE_TYPES:
            raise SpecError(f"{item.name('type')}: unknown namespace type {kind!r}")
        if any(ns.type == kind for ns in namespaces):
            raise SpecError(f"{item.name('type')}: namespace {kind} is listed twice")
        path = item.text("path")
        if path is not None:
            _absolute(path, item.name("path"))
        item.done()
        namespaces.append(Namespace(kind, path))
    devices = []
    for item in fields.objects("devices"):
        path = _absolute(item.text("path") or "", item.name("path"))
        kind = item.text("type") or ""
        if kind not in DEVICE_TYPES:
            raise SpecError(f"{item.name('type')} must be one of c, u, b, p, got {kind!r}")
        major, minor = item.whole("major", 0, 0xFFFFFFFF), item.whole("minor", 0, 0xFFFFFFFF)
        if kind != "p" and (major is None or minor is None):
            raise SpecError(f"{item.where}: a {kind} device needs major and minor")
        devices.append(Device(path, kind, major or 0, minor or 0,
                              file_mode=item.whole("fileMode", 0, 0o7777),
                              uid=item.whole("uid", 0, _ID_MAX),
                              gid=item.whole("gid", 0, _ID_MAX)))
        item.done()
    sysctl = fields.take("sysctl")
    if sysctl is not None and not (isinstance(sysctl, dict) and all(
            isinstance(item, str) for item in sysctl.values())):
        raise SpecError("linux.sysctl must map names to string values")
    propagation = fields.text("rootfsPropagation", "") or ""
    if propagation not in PROPAGATIONS:
        raise SpecError(f"linux.rootfsPropagation must be one of "
                        f"{', '.join(PROPAGATIONS[1:])}, got {propagation!r}")
    linux = Linux(namespaces, devices=devices,
                  sysctl=sysctl,  # type: ignore[arg-type] # checked above
                  rootfs_propagation=propagation,
                  masked_paths=fields.texts("maskedPaths"),
                  readonly_paths=fields.texts("readonlyPaths"),
                  seccomp=fields.take("seccomp"), resources=fields.take("resources"),
                  cgroups_path=fields.text("cgroupsPath"))
    fields.done()
    return linux


def _check_sysctls(spec: Spec) -> None:
    """Refuse a sysctl that is not the container's own: writing it would change the host."""
    for key in spec.linux.sysctl:
        kind = next((kind for prefix, kind in SYSCTL_NAMESPACES
                     if key == prefix or (prefix.endswith(".") and key.startswith(prefix))),
                    None)
        if kind is None:
            raise SpecError(f"linux.sysctl: {key} is not namespaced, so setting it would "
                            f"change the host; pyctr refuses it")
        namespace = spec.linux.namespace(kind)
        if namespace is None or namespace.path is not None:
            raise SpecError(f"linux.sysctl: {key} needs a new {kind} namespace")


def _check(spec: Spec) -> None:
    """The rules between fields, and what pyctr's architecture needs."""
    linux = spec.linux
    for kind, why in (("pid", "its init is PID 1 of the container"),
                      ("mount", "it builds the container's root in its own mount table")):
        namespace = linux.namespace(kind)
        if namespace is None:
            raise SpecError(f"linux.namespaces must include {kind}: pyctr needs one because "
                            f"{why}")
    for kind, why in (("pid", "pyctr's init must be PID 1"),
                      ("mount", "the container's root is built in a mount table of its own")):
        if linux.namespace(kind).path is not None:  # type: ignore[union-attr] # checked above
            raise SpecError(f"linux.namespaces: joining an existing {kind} namespace is not "
                            f"supported ({why}); remove its path")
    for kind in ("user", "time"):
        if linux.namespace(kind) is not None:
            raise SpecError(f"linux.namespaces: pyctr does not support {kind} namespaces yet; "
                            f"remove it")
    _check_sysctls(spec)
    uts = linux.namespace("uts")
    for name in ("hostname", "domainname"):
        if getattr(spec, name) is not None and (uts is None or uts.path is not None):
            raise SpecError(f"{name} needs a new uts namespace in linux.namespaces")
