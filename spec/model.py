"""The OCI runtime spec (config.json, version 1.x) as pyctr's one description of a container.

The typed objects, ``Spec.check`` for the rules between fields, and ``Spec.to_value`` to write
the document. ``Spec.from_value`` (``spec.document``) reads a decoded document (from ``json``,
or from the protocol's codec, which carries the same shapes) and refuses what pyctr cannot
honour: a wrong type, a bad value, or a field pyctr does not implement, each with one line
naming the field (``process.user.uid must be a whole number``). Nothing is silently ignored,
except the fields that later work applies (``PENDING_FIELDS``): those are kept and reported,
so the supervisor can warn that they are not applied yet.

Plain classes, not dataclasses: the CLI builds a spec before it forks the init, and every
module imported before that fork delays the workload's start.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared",
                "unbindable", "runbindable")
DEVICE_TYPES = ("c", "u", "b", "p")
PENDING_FIELDS = ("linux.resources",)
"""Accepted though pyctr applies only part of them: ``Spec.pending_fields`` names each member
present that it does not apply, and each gets a warning."""
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
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


class Capabilities:
    """``process.capabilities``: each set a list of names (``CAP_KILL``)."""

    __slots__ = CAPABILITY_SETS

    def __init__(self, bounding: list[str], effective: list[str], inheritable: list[str],
                 permitted: list[str], ambient: list[str]) -> None:
        self.bounding, self.effective, self.inheritable = bounding, effective, inheritable
        self.permitted, self.ambient = permitted, ambient

    def unraisable(self) -> list[str]:
        """The ambient ones the kernel will not raise: each must be permitted and inheritable
        too (runc's default config lists ambient ones it cannot raise, and goes on)."""
        return [name for name in self.ambient
                if name not in self.permitted or name not in self.inheritable]

    def to_value(self) -> dict[str, Value]:
        return {kind: list(getattr(self, kind)) for kind in CAPABILITY_SETS
                if getattr(self, kind)}


class Process:
    __slots__ = ("args", "capabilities", "console_size", "cwd", "env", "no_new_privileges",
                 "oom_score_adj", "rlimits", "terminal", "user")

    def __init__(self, args: list[str], env: list[str], cwd: str = "/", *,
                 terminal: bool = False, console_size: tuple[int, int] | None = None,
                 user: User | None = None, rlimits: list[Rlimit] | None = None,
                 oom_score_adj: int | None = None, capabilities: Capabilities | None = None,
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
            value["capabilities"] = self.capabilities.to_value()
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
        """The dotted names of the fields present that pyctr accepts but does not apply
        (of PENDING_FIELDS): the members of ``linux.resources`` other than its memory, cpu and
        pids limits and its devices (``linux.resources.blockIO``,
        ``linux.resources.memory.kernel``; see ``spec.limits.unapplied_resources``)."""
        from .limits import unapplied_resources  # here: spec.limits imports this module

        return unapplied_resources(self.linux.resources)

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
        from .document import read_spec  # only bundles and a fresh init read documents

        return read_spec(value)


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
