"""Reading a runtime-spec document (a decoded config.json) into the model: each member taken
with its type checked, anything left over refused with the field's name. Loaded only where a
document is read (a bundle, ``ContainerConfig.from_spec``, an init started afresh): the CLI's
own containers are built as objects (``spec.docker``) and need none of it."""

from __future__ import annotations

from pyctr.linux.syscalls import CAPABILITIES, RLIMITS

from .model import (
    CAPABILITY_SETS,
    DEVICE_TYPES,
    NAMESPACE_TYPES,
    PROPAGATIONS,
    Capabilities,
    Device,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Spec,
    SpecError,
    User,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

_UINT64_MAX = (1 << 64) - 1
_ID_MAX = (1 << 32) - 2  # (uid_t)-1 means "unchanged" to the kernel


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


def absolute(path: str, name: str) -> str:
    if not path.startswith("/"):
        raise SpecError(f"{name} must be an absolute path, got {path!r}")
    if "\0" in path:
        raise SpecError(f"{name} contains a NUL byte")
    return path


def read_spec(value: Value) -> Spec:
    """Read and check a decoded config.json (``Spec.from_value``). Raises SpecError naming
    the field."""
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
    spec = Spec(process, root_path, root_readonly=readonly, hostname=hostname,
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
    cwd = absolute(fields.text("cwd") or "", "process.cwd")
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
                      capabilities=_capabilities(fields.object("capabilities")),
                      no_new_privileges=fields.flag("noNewPrivileges"))
    fields.done()
    return process


def _capabilities(fields: _Fields | None) -> Capabilities | None:
    if fields is None:
        return None
    sets = {}
    for kind in CAPABILITY_SETS:
        names = fields.texts(kind)
        unknown = [name for name in names if name not in CAPABILITIES]
        if unknown:
            raise SpecError(f"{fields.name(kind)}: unknown capability {unknown[0]!r}; names "
                            f"look like CAP_KILL")
        sets[kind] = names
    fields.done()
    return Capabilities(**sets)


def _ids(value: Value, name: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{name} must be a list of whole numbers")
    return [whole(item, f"{name}[{index}]", 0, _ID_MAX) or 0
            for index, item in enumerate(value)]


def _mount(fields: _Fields) -> Mount:
    destination = absolute(fields.text("destination") or "", f"{fields.where}.destination")
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
            absolute(path, item.name("path"))
        item.done()
        namespaces.append(Namespace(kind, path))
    devices = []
    for item in fields.objects("devices"):
        path = absolute(item.text("path") or "", item.name("path"))
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
    seccomp = fields.take("seccomp")
    if seccomp is not None:
        from .seccomp import check_linux_seccomp

        check_linux_seccomp(seccomp)
    linux = Linux(namespaces, devices=devices,
                  sysctl=sysctl,  # type: ignore[arg-type] # checked above
                  rootfs_propagation=propagation,
                  masked_paths=fields.texts("maskedPaths"),
                  readonly_paths=fields.texts("readonlyPaths"),
                  seccomp=seccomp, resources=fields.take("resources"),
                  cgroups_path=fields.text("cgroupsPath"))
    fields.done()
    return linux
