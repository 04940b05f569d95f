"""docker's security options as a spec: the default capability set, ``--cap-add``,
``--cap-drop``, ``--privileged``, ``--security-opt`` (``no-new-privileges``, ``seccomp``) and
``--device``, and the paths a container may not read or change.

The defaults are docker's, with one difference: no_new_privs is on unless a user lifts it
(docker leaves it off), because a setuid binary in an untrusted rootfs is one more way up.
"""

from __future__ import annotations

import os
import stat

from pyctr.linux.syscalls import CAPABILITIES

from .model import Capabilities, Device, Spec, SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
ALL_CAPABILITIES = tuple(CAPABILITIES)
# What /proc and /sys show of the host that a container has no business reading (masked) or
# changing (read-only), as runc's and docker's defaults have them.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICE_ACCESS = frozenset("rwm")


class SecurityOptions:
    """The security part of docker's options, kept as given until ``apply``."""

    __slots__ = ("cap_add", "cap_drop", "devices", "no_new_privileges", "privileged",
                 "seccomp")

    def __init__(self, *, cap_add: list[str] | tuple[str, ...] = (),
                 cap_drop: list[str] | tuple[str, ...] = (), privileged: bool = False,
                 security_opt: list[str] | tuple[str, ...] = (),
                 devices: list[str] | tuple[str, ...] = ()) -> None:
        self.cap_add = [capability_name(name, "--cap-add") for name in cap_add]
        self.cap_drop = [capability_name(name, "--cap-drop") for name in cap_drop]
        self.privileged = privileged
        self.devices = list(devices)
        self.no_new_privileges = True
        self.seccomp: str | None = None
        """``unconfined``, a profile file, or None for the default profile."""
        for text in security_opt:
            self._security_opt(text)

    def _security_opt(self, text: str) -> None:
        # docker spells these KEY=VALUE, and also KEY:VALUE (its older syntax).
        key, separator, value = text.partition("=")
        if not separator:
            key, separator, value = text.partition(":")
        if key == "no-new-privileges":
            if not separator or value == "true":
                self.no_new_privileges = True
            elif value == "false":
                self.no_new_privileges = False
            else:
                raise SpecError(f"--security-opt no-new-privileges takes true or false, got "
                                f"{value!r}")
        elif key == "seccomp" and value:
            self.seccomp = value
        elif key in ("apparmor", "label") and value in ("unconfined", "disable"):
            pass  # pyctr loads no LSM profile, so these already hold
        else:
            raise SpecError(f"--security-opt {text!r} is not supported (use "
                            f"no-new-privileges[=true|false] or seccomp=unconfined|PROFILE.json)")

    def capabilities(self, held: list[str]) -> list[str]:
        """The container's capabilities, as docker computes them from the default set:
        ``ALL`` in --cap-add starts from every capability, in --cap-drop from none; then the
        named ones are added and dropped. ``held``: those pyctr itself holds, which is what
        ALL means."""
        everything = list(held)
        missing = [name for name in self.cap_add if name != "ALL" and name not in held]
        if missing:
            raise SpecError(f"--cap-add {missing[0].removeprefix('CAP_')}: pyctr itself does "
                            f"not hold {missing[0]} on this host, so it cannot give it")
        if self.privileged or "ALL" in self.cap_add:
            chosen = everything
        elif "ALL" in self.cap_drop:
            chosen = []
        else:
            chosen = list(DEFAULT_CAPABILITIES)
        for name in self.cap_add:
            if name != "ALL" and name not in chosen:
                chosen.append(name)
        dropped = set(self.cap_drop) - {"ALL"}
        if self.privileged:
            dropped = set()
        return [name for name in chosen if name not in dropped]

    def apply(self, spec: Spec, *, held: list[str]) -> None:
        """Write these options into ``spec`` (built from docker's other options); ``held``:
        the capabilities pyctr holds."""
        names = self.capabilities(held)
        spec.process.capabilities = Capabilities(list(names), list(names), list(names),
                                                 list(names), [])
        spec.process.no_new_privileges = self.no_new_privileges
        for text in self.devices:  # as docker writes them: the node, and the access to it
            device, access = parse_device(text)
            spec.linux.devices.append(device)
            spec.linux.resources = _merged_resources(spec.linux.resources, [
                {"allow": True, "type": device.type, "major": device.major,
                 "minor": device.minor, "access": access}])
        if self.privileged:
            spec.linux.resources = _merged_resources(
                spec.linux.resources, [{"allow": True, "access": "rwm"}])
            for mount in spec.mounts:  # docker's --privileged: /sys and its cgroups writable
                if mount.destination in ("/sys", "/sys/fs/cgroup") and "ro" in mount.options:
                    mount.options = [option if option != "ro" else "rw"
                                     for option in mount.options]
            return
        spec.linux.masked_paths = list(MASKED_PATHS)
        spec.linux.readonly_paths = list(READONLY_PATHS)
        if self.seccomp == "unconfined":
            return
        from .seccomp import default_linux_seccomp, profile_to_linux_seccomp, read_profile

        if self.seccomp is None:
            spec.linux.seccomp = default_linux_seccomp(names)
        else:
            spec.linux.seccomp = profile_to_linux_seccomp(read_profile(self.seccomp), names)


def capability_name(text: str, flag: str) -> str:
    """``SYS_ADMIN``, ``cap_sys_admin`` or ``CAP_SYS_ADMIN`` as the spec spells it (``ALL``
    stays ``ALL``)."""
    name = text.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in ALL_CAPABILITIES:
        raise SpecError(f"{flag}: unknown capability {text!r} (e.g. NET_ADMIN, SYS_PTRACE, "
                        f"or ALL)")
    return name


def parse_device(text: str) -> tuple[Device, str]:
    """docker's ``--device HOST[:CONTAINER[:PERMISSIONS]]``: the host's node, made anew at
    CONTAINER (default: the same path), and the PERMISSIONS (default ``rwm``) it is allowed."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise SpecError(f"--device needs HOST[:CONTAINER[:PERMISSIONS]], got {text!r}")
    host = parts[0]
    container = parts[1] if len(parts) > 1 and parts[1] else host
    access = parts[2] if len(parts) > 2 else "rwm"
    if len(parts) == 2 and set(parts[1]) <= DEVICE_ACCESS and not parts[1].startswith("/"):
        container, access = host, parts[1]  # docker reads HOST:rw as permissions
    if not access or not set(access) <= DEVICE_ACCESS:
        raise SpecError(f"--device {text!r}: permissions must be letters of rwm")
    if not os.path.isabs(host) or not os.path.isabs(container):
        raise SpecError(f"--device {text!r}: paths must be absolute")
    try:
        status = os.stat(host)
    except OSError as exc:
        raise SpecError(f"--device {text!r}: {host}: {exc.strerror}") from None
    if stat.S_ISCHR(status.st_mode):
        kind = "c"
    elif stat.S_ISBLK(status.st_mode):
        kind = "b"
    else:
        raise SpecError(f"--device {text!r}: {host} is not a device node")
    device = Device(os.path.normpath(container), kind, os.major(status.st_rdev),
                    os.minor(status.st_rdev), file_mode=stat.S_IMODE(status.st_mode),
                    uid=status.st_uid, gid=status.st_gid)
    return device, access


def _merged_resources(resources: Value, rules: list[Value]) -> Value:
    merged: dict[str, Value] = dict(resources) if isinstance(resources, dict) else {}
    existing = merged.get("devices")
    merged["devices"] = [*(existing if isinstance(existing, list) else []), *rules]
    return merged
